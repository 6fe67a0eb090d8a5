"""The mobile client stub's own tests (`node --test mobile_client_stub`), run from pytest so that
`.ci/run` runs them: node starts the service itself with this interpreter (BRANET_PYTHON), on a
free loopback port and a temporary data folder, and must pass everything with nothing skipped."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from api.config import REPO_ROOT


def test_node_client_stub_passes_against_a_live_service(shared_data):
    node = shutil.which("node")
    assert node, "Node.js 20 is required (scripts/install-test-tools)"
    env = {**os.environ, "BRANET_PYTHON": sys.executable, "BRANET_SHARED_DATA": str(shared_data)}
    env.pop("BRANET_API_URL", None)
    env.pop("BRANET_FIREBASE_PROJECT_ID", None)
    result = subprocess.run([node, "--test", "mobile_client_stub"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    counts = {name: int(value) for name, value in re.findall(r"^# (\w+) (\d+)$", result.stdout, re.MULTILINE)}
    assert counts["pass"] >= 10 and counts["tests"] == counts["pass"], counts
    assert counts["fail"] == counts["skipped"] == counts["todo"] == counts["cancelled"] == 0, counts
