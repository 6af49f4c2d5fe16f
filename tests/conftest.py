"""Shared fixtures. Every test runs with fake credentials and no inherited endpoint, so moto's
in-process mock sees every call (it ignores calls when AWS_ENDPOINT_URL is set)."""

from __future__ import annotations

import base64
import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import settings

# No test may depend on wall-clock speed: hypothesis' per-example deadline is off (a loaded
# 2-core CI machine or a mutation run's tracing made examples "flaky" for taking 500 ms).
# HYPOTHESIS_PROFILE=mutate (set by `make mutate`) also runs fewer examples per property.
settings.register_profile("default", deadline=None)
settings.register_profile("mutate", deadline=None, max_examples=25)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

from setup.demo.world import drain_queue  # noqa: F401  (one helper for tests and the demo)

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
# ../shared beside the clone (CI, the team's machines); absent in a user's fresh clone. The
# environment variables point a local run at another copy.
CORPUS = Path(os.environ.get("TRAILWATCH_CORPUS") or ROOT.parent / "shared" / "corpus")
FACTS = Path(os.environ.get("TRAILWATCH_FACTS") or
             ROOT.parent / "shared" / "reference" / "aws-facts.md")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL") or key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    yield


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of the tree as it is, built from a copy (setuptools' in-tree build/ directory
    would keep files of earlier builds)."""
    import shutil
    import subprocess
    import sys
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("setup", "handlers"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                        str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return next(dist.glob("trailwatch-*.whl"))


def corpus_lines() -> list[str]:
    """Every record of ../shared/corpus (one CloudTrail record per line); skips when absent."""
    if not CORPUS.is_dir():
        pytest.skip("../shared/corpus is not present (fresh clone)")
    lines: list[str] = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        lines += [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return lines


def facts_text() -> str:
    """aws-facts.md (the team's fact sheet); skips when absent."""
    if not FACTS.is_file():
        pytest.skip("../shared/reference/aws-facts.md is not present (fresh clone)")
    return FACTS.read_text(encoding="utf-8")


def load_event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


def load_source(name: str) -> dict:
    return json.loads((EVENTS / "sources" / f"{name}.json").read_text())


def awslogs_event(log_events: list[dict], group: str = "CloudTrail/test",
                  stream: str = "111122223333_CloudTrail_us-east-1",
                  message_type: str = "DATA_MESSAGE") -> dict:
    env = {"messageType": message_type, "owner": "111122223333", "logGroup": group,
           "logStream": stream, "subscriptionFilters": ["f"], "logEvents": log_events}
    data = gzip.compress(json.dumps(env, ensure_ascii=False).encode("utf-8"))
    return {"awslogs": {"data": base64.b64encode(data).decode()}}


class ListMetrics:
    """Stands in for Powertools Metrics: records add_metric calls."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}

    def add_metric(self, name, unit, value, resolution=60):  # noqa: ARG002
        self.values.setdefault(name, []).append(value)

    def total(self, name: str) -> float:
        return sum(self.values.get(name, []))


class ListLogger:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict]] = []

    def _log(self, level, msg, extra=None):
        self.records.append((level, msg, extra or {}))

    def error(self, msg, extra=None):
        self._log("error", msg, extra)

    def warning(self, msg, extra=None):
        self._log("warning", msg, extra)

    def info(self, msg, extra=None):
        self._log("info", msg, extra)


class Collect:
    """A sink that keeps what it is given (the processor's alerts, in order)."""

    name = "collect"

    def __init__(self):
        self.alerts = []

    def publish(self, alerts):
        self.alerts += alerts
        return []
