"""`trailwatch demo` installed from the wheel, away from the checkout, gives the same summary as
the checkout's: the demo reads nothing outside its package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, build_wheel

pytestmark = pytest.mark.slow


def demo(pythonpath, cwd) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env["PYTHONPATH"] = str(pythonpath)
    r = subprocess.run([sys.executable, "-m", "setup.cli", "demo", "--output", "json"], cwd=cwd,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    where = subprocess.run([sys.executable, "-c", "import setup; print(setup.__file__)"],
                           cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return {"doc": json.loads(r.stdout), "setup": where.stdout.strip()}


def summary(doc: dict) -> dict:
    p = doc["processing"]
    return {"events": (p["log_events_written"], p["log_events_processed"], p["records"],
                       p["lost_events"]),
            "alerts": doc["alerts"]["by_rule"], "routes": doc["routing"]["delivered"],
            "verify": doc["verify"]["summary"],
            "exit": (doc["plan_exit_code"], doc["apply_exit_code"], doc["verify_exit_code"])}


def test_the_installed_demo_is_the_whole_demo(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--disable-pip-version-check", "--target", str(site),
                        str(build_wheel(tmp_path))], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    installed = demo(site, elsewhere)      # the wheel's code only (dependencies from this venv)
    checkout = demo(ROOT, ROOT)
    assert installed["setup"].startswith(str(site)) and checkout["setup"].startswith(str(ROOT))
    assert summary(installed["doc"]) == summary(checkout["doc"])
    assert installed["doc"]["processing"]["log_events_written"] == 30
