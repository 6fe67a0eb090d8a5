"""Soak: concurrent clients doing what the app does (classification, saliency, ROI extraction, reads,
feedback with masks, deletes) with real images against gunicorn on loopback, for as long as asked.

    python benchmarks/soak.py [--minutes 30] [--clients 4] [--warmup 60] [--workers 1] [--out soak.json]

Prints a table (per operation: requests, median, p95 and max latency), the errors, each worker's
resident memory (VmRSS from /proc/<pid>/status) after the warm-up, at the end and its maximum, and
writes the same as JSON. Exits non-zero on any error, lost analysis, restarted worker, or memory
growth of 10% or more after the warm-up. The bounded version runs in the tests (tests/test_soak.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.load import print_report, soak, soak_images, start_gunicorn  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--warmup", type=float, default=60, help="seconds of load before memory is first read")
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", 1)))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BRANET_SHARED_DATA",
                                                                         REPO.parent / "shared" / "data")))
    parser.add_argument("--out", type=Path, help="write the report as JSON here too")
    args = parser.parse_args()
    uploads = soak_images(args.data)
    with tempfile.TemporaryDirectory() as scratch:
        service = start_gunicorn(Path(scratch) / "data", Path(scratch) / "gunicorn.log",
                                 env={"WEB_CONCURRENCY": str(args.workers)})
        try:
            report = soak(service, uploads, args.clients, args.warmup, args.minutes * 60)
        finally:
            service.stop()
        report["ready_seconds"] = round(service.ready_s, 2)
    print_report(report)
    for error in report["errors"][:20]:
        print("error:", error)
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    failed = (report["errors"] or report["workers_end"] != report["workers"]
              or report["history_total"] != report["history_expected"]
              or any(growth >= 10 for growth in report["rss_growth_percent"].values()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
