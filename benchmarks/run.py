"""Benchmarks of the service as deployed: gunicorn on loopback, real images, shipped models.

    python benchmarks/run.py [--requests 30] [--seconds 10] [--out benchmarks/results.json]

Prints a table and writes JSON: time from process start to /v1/ready, resident memory per worker
with all models loaded, end-to-end latency (median, p95) for a classification-only analysis, one
with saliency, one with ROI extraction, an ROI correction (and one on a mammogram), throughput with 1, 2, 4 and 8
concurrent clients, and each model's inference time next to its arithmetic lower bound on this
CPU (model FLOPs / measured float32 matrix-multiply rate).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests
import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.load import free_port, rss_kib, worker_pids  # noqa: E402
from ml.cards import MODALITY_MODELS, SEGMENTER_MODELS  # noqa: E402
from ml.classifier import Classifier  # noqa: E402
from ml.datasets import load_gray  # noqa: E402
from ml.inference import tta_logits  # noqa: E402
from ml.preprocess import to_batch  # noqa: E402
from ml.segmenter.build import load_carded_segmenter  # noqa: E402
from ml.segmenter.roi import Segmenter  # noqa: E402

DATA = Path(os.environ.get("BRANET_SHARED_DATA", REPO.parent / "shared" / "data"))
IMAGES = [DATA / "busbra" / "images" / name for name in ("bus_0003-l.png", "bus_0005-r.png", "bus_0008-l.png")]
MAMMOGRAM = DATA / "mias" / "images" / "mdb001.png"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def start_service(data_dir: str) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "BRANET_DATA_DIR": data_dir, "BRANET_RATE_LIMIT": "100000 per minute"}
    env.pop("BRANET_FIREBASE_PROJECT_ID", None)
    started = time.perf_counter()
    process = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py",
                                "api:create_app()"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    while True:
        try:
            if requests.get(f"{base}/v1/ready", timeout=1).status_code == 200:
                return process, base, time.perf_counter() - started
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.perf_counter() - started > 300:
            raise RuntimeError("the service did not become ready")
        time.sleep(0.05)


def post_analysis(base: str, image: bytes, **fields) -> requests.Response:
    response = requests.post(f"{base}/v1/analyses", data={"modality": "ultrasound", **fields},
                             files={"file": ("image.png", image, "image/png")}, timeout=120)
    response.raise_for_status()
    return response


def latency(call, count: int) -> dict:
    call()  # warm-up
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 1), "p95_ms": round(percentile(times, 95), 1), "n": count}


def throughput(base: str, images: list[bytes], clients: int, seconds: float) -> dict:
    deadline = time.perf_counter() + seconds
    def worker(k: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            post_analysis(base, images[(k + done) % len(images)], saliency="none")
            done += 1
        return done
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        total = sum(pool.map(worker, range(clients)))
    return {"clients": clients, "analyses_per_second": round(total / (time.perf_counter() - started), 2)}


def matmul_gflops() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(10):
        started = time.perf_counter()
        a @ b
        rates.append(2 * 1024**3 / (time.perf_counter() - started) / 1e9)
    return float(statistics.median(rates))


def flops(model: Callable[..., torch.Tensor], *inputs) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(*inputs)
    return counter.get_total_flops()


def inference_costs(gflops_rate: float, grays: dict[str, np.ndarray]) -> list[dict]:
    """Each model on an image of its modality (`grays`)."""
    weights = REPO / "weights"
    rows = []
    for modality, name in MODALITY_MODELS.items():
        classifier = Classifier.load(weights, name)
        gray = grays[modality]
        times = []
        for _ in range(30):
            started = time.perf_counter()
            classifier.probabilities([gray])
            times.append(time.perf_counter() - started)
        # what serving runs: the image and its mirror, whole or by windows of tissue
        model_flops = flops(lambda batch: tta_logits(classifier.network, batch, classifier.spec),
                            to_batch([gray], classifier.spec))
        bound = model_flops / (gflops_rate * 1e9)
        rows.append({"model": name, "gflops": round(model_flops / 1e9, 3),
                     "median_ms": round(1000 * statistics.median(times), 2),
                     "lower_bound_ms": round(1000 * bound, 2), "ratio": round(statistics.median(times) / bound, 2)})
    for modality, name in SEGMENTER_MODELS.items():
        if not (weights / f"{name}.json").exists():
            continue
        model, card = load_carded_segmenter(weights, name)
        segmenter = Segmenter.for_card(model, card, cache_size=0)
        gray = grays[modality]
        times = []
        for _ in range(15):
            started = time.perf_counter()
            segmenter.probability(gray)
            times.append(time.perf_counter() - started)
        size = card["build"]["img_size"]
        # Segmenter.probability encodes the image and its mirror image, with each member.
        encodings = 2 * len(segmenter.members)
        encoder_flops = encodings * flops(segmenter.members[0].image_encoder, torch.zeros(1, 3, size, size))
        bound = encoder_flops / (gflops_rate * 1e9)
        rows.append({"model": name + f" ({encodings} image encodings bound)", "gflops": round(encoder_flops / 1e9, 3),
                     "median_ms": round(1000 * statistics.median(times), 2),
                     "lower_bound_ms": round(1000 * bound, 2), "ratio": round(statistics.median(times) / bound, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results.json")
    args = parser.parse_args()
    images = [path.read_bytes() for path in IMAGES]
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                                 "torch_threads": torch.get_num_threads()}}
    with tempfile.TemporaryDirectory() as data_dir:
        process, base, ready_s = start_service(data_dir)
        try:
            results["ready_seconds"] = round(ready_s, 2)
            workers = worker_pids(process.pid) or [process.pid]
            results["rss_mb_per_worker"] = [round(rss_kib(pid) / 1024, 1) for pid in workers]
            image = images[0]
            results["latency"] = {
                "classification": latency(lambda: post_analysis(base, image, saliency="none"), args.requests),
                "classification+saliency": latency(lambda: post_analysis(base, image), args.requests),
                "roi_extraction": latency(lambda: post_analysis(base, image, extract_roi="true", saliency="none"),
                                          args.requests),
            }
            analysis = post_analysis(base, image, extract_roi="true", saliency="none").json()
            box = {"box": {"x0": 60, "y0": 60, "x1": 200, "y1": 200}}
            correction = lambda: requests.post(f"{base}/v1/analyses/{analysis['id']}/roi", json=box, timeout=60)
            results["latency"]["roi_correction"] = latency(correction, args.requests)
            # mammography's segmenter answers prompts only: a box around mdb001's circled finding
            mammogram = post_analysis(base, MAMMOGRAM.read_bytes(), modality="mammography", saliency="none").json()
            circle = {"box": {"x0": 169, "y0": 201, "x1": 366, "y1": 398}}
            results["latency"]["roi_correction_mammography"] = latency(
                lambda: requests.post(f"{base}/v1/analyses/{mammogram['id']}/roi", json=circle, timeout=60), args.requests)
            results["throughput"] = [throughput(base, images, clients, args.seconds) for clients in (1, 2, 4, 8)]
            results["rss_mb_per_worker_after"] = [round(rss_kib(pid) / 1024, 1) for pid in workers]
        finally:
            process.terminate()
            process.wait(timeout=30)
    rate = matmul_gflops()
    results["matmul_gflops"] = round(rate, 1)
    results["inference"] = inference_costs(rate, {"ultrasound": load_gray(IMAGES[0]), "mammography": load_gray(MAMMOGRAM)})
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(results: dict) -> None:
    print(f"ready after {results['ready_seconds']} s; RSS per worker {results['rss_mb_per_worker']} MB "
          f"(after the run {results['rss_mb_per_worker_after']} MB)")
    print(f"{'end to end':28} {'median ms':>10} {'p95 ms':>10}")
    for name, row in results["latency"].items():
        print(f"{name:28} {row['median_ms']:>10} {row['p95_ms']:>10}")
    print(f"{'clients':28} {'analyses/s':>10}")
    for row in results["throughput"]:
        print(f"{row['clients']:<28} {row['analyses_per_second']:>10}")
    print(f"matrix multiply: {results['matmul_gflops']} GFLOP/s")
    print(f"{'model':44} {'GFLOPs':>8} {'median ms':>10} {'bound ms':>9} {'ratio':>6}")
    for row in results["inference"]:
        print(f"{row['model']:44} {row['gflops']:>8} {row['median_ms']:>10} {row['lower_bound_ms']:>9} {row['ratio']:>6}")


if __name__ == "__main__":
    main()
