"""Load against the service as deployed, shared by the soak test (tests/test_soak.py), the soak
benchmark (benchmarks/soak.py) and the fault tests: start gunicorn on loopback, read worker memory
from /proc, and run concurrent clients doing what the app does, with real images.

Resident memory is VmRSS from /proc/<pid>/status of each gunicorn worker (the children of the
master process, from /proc/<master>/task/<master>/children).
"""
from __future__ import annotations

import base64
import io
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident memory of one process, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def worker_pids(master: int) -> list[int]:
    path = Path(f"/proc/{master}/task/{master}/children")
    return sorted(int(p) for p in path.read_text().split()) if path.exists() else []


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks, from /proc/<pid>/stat."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields_[11]) + int(fields_[12])


@dataclass
class Service:
    process: subprocess.Popen
    base: str
    log_path: Path
    ready_s: float

    @property
    def workers(self) -> list[int]:
        return worker_pids(self.process.pid)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)


def wait_ready(base: str, timeout: float, process: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base}/v1/ready", timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if process is not None and process.poll() is not None:
            return False
        time.sleep(0.2)
    return False


def start_gunicorn(data_dir: Path, log_path: Path, env: dict | None = None, timeout: float = 180) -> Service:
    """gunicorn with gunicorn.conf.py on a free loopback port, its log in `log_path` (a file, not a
    pipe: a pipe nobody reads fills up and blocks the workers). Raises when it does not get ready."""
    port = free_port()
    environment = {**os.environ, "PORT": str(port), "BRANET_DATA_DIR": str(data_dir),
                   "BRANET_RATE_LIMIT": "1000000 per minute", **(env or {})}
    environment.pop("BRANET_FIREBASE_PROJECT_ID", None)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    started = time.monotonic()
    with open(log_path, "ab") as log:
        process = subprocess.Popen([str(gunicorn), "-c", "gunicorn.conf.py", "api:create_app()"], cwd=REPO,
                                   env=environment, stdout=log, stderr=subprocess.STDOUT)
    service = Service(process, f"http://127.0.0.1:{port}", Path(log_path), 0.0)
    if not wait_ready(service.base, timeout, process):
        service.stop()
        raise RuntimeError(f"gunicorn did not get ready:\n{service.log_tail()}")
    service.ready_s = time.monotonic() - started
    return service


@dataclass
class Upload:
    name: str
    modality: str
    data: bytes


def soak_images(shared_data: Path) -> list[Upload]:
    """Real images of both modalities and a few sizes: BUS-BRA and BUSI ultrasound, mini-MIAS."""
    picks = [("busbra/images", "bus_0002-l.png", "ultrasound"), ("busbra/images", "bus_0003-l.png", "ultrasound"),
             ("busbra/images", "bus_0005-r.png", "ultrasound"), ("busbra/images", "bus_0008-l.png", "ultrasound"),
             ("busi/benign", "benign (1).png", "ultrasound"), ("busi/malignant", "malignant (1).png", "ultrasound"),
             ("busi/normal", "normal (1).png", "ultrasound"), ("mias/images", "mdb001.png", "mammography"),
             ("mias/images", "mdb005.png", "mammography")]
    uploads = [Upload(name, modality, (shared_data / folder / name).read_bytes())
               for folder, name, modality in picks if (shared_data / folder / name).exists()]
    if not any(u.modality == "ultrasound" for u in uploads):
        raise FileNotFoundError(f"no ultrasound images under {shared_data}")
    return uploads


def mask_png(width: int, height: int, rng: random.Random) -> str:
    """A clinician's edited mask: a random rectangle, as base64 PNG of the image's size."""
    mask = np.zeros((height, width), dtype=np.uint8)
    x0, y0 = rng.randrange(0, width // 2), rng.randrange(0, height // 2)
    mask[y0:y0 + height // 4, x0:x0 + width // 4] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# What the app does, and how often: (operation, weight).
MIX = [("classify", 30), ("saliency", 12), ("roi", 12), ("read", 22), ("feedback", 12), ("delete", 12)]
EXPECTED = {"classify": 201, "saliency": 201, "roi": 201, "read": 200, "feedback": 201, "delete": 204}


@dataclass
class LoadResult:
    seconds: float = 0.0
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    created: int = 0
    deleted: int = 0

    @property
    def requests(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values())

    def table(self) -> list[dict]:
        rows = []
        for op, _ in MIX:
            times = self.latencies_ms.get(op) or []
            rows.append({"operation": op, "requests": len(times),
                         "median_ms": round(statistics.median(times), 1) if times else None,
                         "p95_ms": round(float(np.percentile(times, 95)), 1) if times else None,
                         "max_ms": round(max(times), 1) if times else None})
        return rows


class Client:
    """One user of the app doing the mix in a loop; it deletes and reads only its own analyses."""

    def __init__(self, base: str, uploads: list[Upload], seed: int, result: LoadResult, lock: threading.Lock):
        self.base, self.uploads, self.rng = base, uploads, random.Random(seed)
        self.result, self.lock = result, lock
        self.session = requests.Session()
        self.mine: list[dict] = []  # id, image size

    def _check(self, op: str, response: requests.Response, expected: int) -> bool:
        if response.status_code != expected:
            self._fail(op, f"{response.status_code} {response.text[:300]}")
            return False
        return True

    def _fail(self, op: str, what: str) -> None:
        with self.lock:
            self.result.errors.append(f"{op}: {what}")

    def step(self) -> None:
        ops, weights = zip(*MIX)
        op = self.rng.choices(ops, weights)[0]
        if op in ("read", "feedback", "delete") and not self.mine:
            op = "classify"
        started = time.perf_counter()
        try:
            ok = getattr(self, op)()
        except requests.RequestException as error:
            self._fail(op, f"{type(error).__name__}: {error}")
            return
        if ok:
            with self.lock:
                self.result.latencies_ms[op].append((time.perf_counter() - started) * 1000)

    def _analyse(self, op: str, **fields) -> bool:
        pool = [u for u in self.uploads if u.modality == "ultrasound"] if op == "roi" else self.uploads
        upload = self.rng.choice(pool)
        response = self.session.post(f"{self.base}/v1/analyses", data={"modality": upload.modality, **fields},
                                     files={"file": (upload.name, upload.data, "image/png")}, timeout=180)
        if not self._check(op, response, 201):
            return False
        body = response.json()
        if abs(sum(body["probabilities"].values()) - 1) > 1e-3 or body["label"] not in body["probabilities"]:
            self._fail(op, f"implausible result {body['probabilities']} {body['label']}")
            return False
        self.mine.append({"id": body["id"], "width": body["image"]["width"], "height": body["image"]["height"],
                          "images": list(body["images"].values())})
        with self.lock:
            self.result.created += 1
        return True

    def classify(self) -> bool:
        return self._analyse("classify", saliency="none")

    def saliency(self) -> bool:
        return self._analyse("saliency", saliency="gradcam")

    def roi(self) -> bool:
        return self._analyse("roi", extract_roi="true", saliency="none")

    def read(self) -> bool:
        mine = self.rng.choice(self.mine)
        one = self.session.get(f"{self.base}/v1/analyses/{mine['id']}", timeout=60)
        if not self._check("read", one, 200) or one.json()["id"] != mine["id"]:
            return False
        page = self.session.get(f"{self.base}/v1/analyses", params={"limit": 20, "offset": 0}, timeout=60)
        if not self._check("read", page, 200):
            return False
        image = self.session.get(self.base + self.rng.choice(mine["images"]), timeout=60)
        if not self._check("read", image, 200):
            return False
        if not image.content.startswith(b"\x89PNG"):
            self._fail("read", "a stored image is not a PNG")
            return False
        return True

    def feedback(self) -> bool:
        mine = self.rng.choice(self.mine)
        body = {"label": self.rng.choice(["normal", "benign", "malignant"]), "comment": "soak"}
        if self.rng.random() < 0.5:
            body["missed_lesions"] = {"png": mask_png(mine["width"], mine["height"], self.rng)}
        response = self.session.post(f"{self.base}/v1/analyses/{mine['id']}/feedback", json=body, timeout=60)
        return self._check("feedback", response, 201)

    def delete(self) -> bool:
        mine = self.mine.pop(self.rng.randrange(len(self.mine)))
        response = self.session.delete(f"{self.base}/v1/analyses/{mine['id']}", timeout=60)
        if not self._check("delete", response, 204):
            return False
        with self.lock:
            self.result.deleted += 1
        gone = self.session.get(f"{self.base}/v1/analyses/{mine['id']}", timeout=60)
        return self._check("delete", gone, 404)


def run_load(base: str, uploads: list[Upload], clients: int, seconds: float, seed: int = 0,
             result: LoadResult | None = None) -> LoadResult:
    """`clients` threads doing the mix for `seconds`; errors are collected, never raised."""
    result = result or LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    started = time.monotonic()

    def loop(k: int) -> None:
        client = Client(base, uploads, seed * 1000 + k, result, lock)
        while time.monotonic() < deadline:
            client.step()

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds += time.monotonic() - started
    return result


def soak(service: Service, uploads: list[Upload], clients: int, warmup_s: float, seconds: float,
         sample_every_s: float = 5.0) -> dict:
    """Warm up, read each worker's resident memory, run the load, read it again. Memory is sampled
    every few seconds too (its maximum is reported). The workers must be the same processes at the
    end (a restarted worker would hide a leak), and the history must hold exactly what was created
    and not deleted (nothing a user sent is lost)."""
    before_total = requests.get(f"{service.base}/v1/analyses?limit=1", timeout=60).json()["total"]
    warm = run_load(service.base, uploads, clients, warmup_s, seed=1)
    workers = service.workers
    rss_warm = {pid: rss_kib(pid) for pid in workers}
    samples: list[dict[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(sample_every_s):
            samples.append({pid: rss_kib(pid) for pid in workers if Path(f"/proc/{pid}").exists()})

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_load(service.base, uploads, clients, seconds, seed=2)
    stop.set()
    sampler.join()
    workers_end = service.workers
    rss_end = {pid: rss_kib(pid) for pid in workers_end}
    total = requests.get(f"{service.base}/v1/analyses?limit=1", timeout=60).json()["total"]
    expected_total = before_total + warm.created - warm.deleted + result.created - result.deleted
    growth = {pid: round(100 * (rss_end[pid] - rss_warm[pid]) / rss_warm[pid], 2)
              for pid in workers if pid in rss_end}
    return {
        "clients": clients, "warmup_s": warmup_s, "seconds": round(result.seconds, 1),
        "requests": result.requests, "requests_per_second": round(result.requests / result.seconds, 2),
        "errors": warm.errors + result.errors, "warmup_requests": warm.requests,
        "created": warm.created + result.created, "deleted": warm.deleted + result.deleted,
        "history_total": total, "history_expected": expected_total,
        "workers": workers, "workers_end": workers_end,
        "rss_mib_after_warmup": {pid: round(v / 1024, 1) for pid, v in rss_warm.items()},
        "rss_mib_end": {pid: round(v / 1024, 1) for pid, v in rss_end.items()},
        "rss_mib_max": {pid: round(max([s.get(pid, 0) for s in samples] + [rss_end.get(pid, 0)]) / 1024, 1)
                        for pid in workers},
        "rss_growth_percent": growth,
        "operations": result.table(),
    }


def print_report(report: dict) -> None:
    print(f"{'operation':<10} {'requests':>8} {'median ms':>10} {'p95 ms':>9} {'max ms':>9}")
    for row in report["operations"]:
        print(f"{row['operation']:<10} {row['requests']:>8} {row['median_ms'] or '-':>10} "
              f"{row['p95_ms'] or '-':>9} {row['max_ms'] or '-':>9}")
    print(f"{report['requests']} requests in {report['seconds']} s with {report['clients']} clients "
          f"({report['requests_per_second']}/s) after a {report['warmup_s']} s warm-up; errors: {len(report['errors'])}")
    for pid in report["workers"]:
        print(f"worker {pid}: RSS {report['rss_mib_after_warmup'][pid]} MiB after warm-up, "
              f"{report['rss_mib_end'].get(pid)} MiB at the end (max {report['rss_mib_max'][pid]}), "
              f"growth {report['rss_growth_percent'].get(pid)}%")
    print(f"history: {report['history_total']} analyses, expected {report['history_expected']}")
