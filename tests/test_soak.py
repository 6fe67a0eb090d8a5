"""Bounded soak: 4 concurrent clients for about three minutes against gunicorn on loopback, doing
what the app does with real images (classification, saliency, ROI extraction, reads, feedback with
masks, deletes). Zero errors, nothing lost, and each worker's resident memory (VmRSS from
/proc/<pid>/status) grows less than 10% from the end of a 30 s warm-up to the end.

The pass criteria are errors, integrity and memory, never latency: the CI machine may be busy.
`benchmarks/soak.py` runs the same load for longer.
"""
from __future__ import annotations

import os

import pytest

from benchmarks.load import print_report, soak, soak_images, start_gunicorn

pytestmark = pytest.mark.soak

CLIENTS = 4
WARMUP_S = float(os.environ.get("BRANET_SOAK_WARMUP_S", 30))
SECONDS = float(os.environ.get("BRANET_SOAK_SECONDS", 150))


def test_concurrent_clients_for_minutes_without_errors_or_memory_growth(tmp_path, shared_data):
    data = tmp_path / "data"
    service = start_gunicorn(data, tmp_path / "gunicorn.log")
    try:
        report = soak(service, soak_images(shared_data), CLIENTS, WARMUP_S, SECONDS)
        log = service.log_tail(200_000)
    finally:
        service.stop()
    print_report(report)

    assert report["errors"] == [], report["errors"][:10]
    # Every kind of request was exercised, many times.
    assert all(row["requests"] >= 5 for row in report["operations"]), report["operations"]
    # The same workers served the whole run: a restart (crash, timeout) would also hide a leak.
    assert report["workers"] and report["workers_end"] == report["workers"]
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log, log[-3000:]
    # Nothing a user sent was lost: the history holds exactly what was created and not deleted,
    # every analysis has its images in place, and no write was left in flight.
    assert report["history_total"] == report["history_expected"]
    assert len(list((data / "images").iterdir())) == report["created"]
    assert list((data / ".inflight").iterdir()) == []
    for pid, growth in report["rss_growth_percent"].items():
        assert growth < 10, f"worker {pid}: resident memory grew {growth}% " \
                            f"({report['rss_mib_after_warmup'][pid]} -> {report['rss_mib_end'][pid]} MiB)"
