#!/usr/bin/env python3
"""Peak RSS of one invocation carrying a 1 MiB (gzip) payload and one at the decompression cap.

Builds each payload from ../shared/corpus (else events/), writes it to a temporary file, and runs
the handler on it in a fresh process (no network: alerts are fitted to SNS limits, not sent),
reporting the process's peak RSS (``VmHWM``) before and after ``App.handle``. docs/processor.md quotes its output.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RUN = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from handlers.processor import App
from handlers.sinks.sns import SnsSink
class Quiet:
    def error(self, *a, **k): ...
    warning = info = error
class NoMetrics:
    def add_metric(self, **k): ...
class NoNetwork:
    name = "sns"
    sink = SnsSink("arn:aws:sns:us-east-1:111122223333:t", client_factory=lambda s: None)
    def publish(self, alerts):
        self.sink.prepare(alerts)
        return []
app = App.from_env({}, metrics_sink=NoMetrics(), log=Quiet(), emit=lambda line: None)
app.sinks = [NoNetwork()]
event = json.loads(open(sys.argv[2]).read())
def hwm():   # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, fork/exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = hwm()
t = time.perf_counter()
out = app.handle(event)
took = time.perf_counter() - t
after = hwm()
print(json.dumps({"records": out["records"], "payload_errors": out["payload_errors"],
                  "seconds": round(took, 2), "rss_before_mib": round(before / 1024),
                  "peak_rss_mib": round(after / 1024)}))
"""


def build(lines: list[str], raw_target: int, path: Path) -> tuple[int, int, int]:
    rng = random.Random(20261121)
    events, size = [], 0
    while size < raw_target:
        msg = rng.choice(lines)
        events.append({"id": f"{len(events):056d}", "timestamp": 1_763_632_900_000, "message": msg})
        size += len(msg.encode()) + 110
    env = {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "CloudTrail/rss",
           "logStream": "111122223333_CloudTrail_us-east-1", "subscriptionFilters": ["f"],
           "logEvents": events}
    raw = json.dumps(env).encode()
    comp = gzip.compress(raw)
    path.write_text(json.dumps({"awslogs": {"data": base64.b64encode(comp).decode()}}))
    return len(events), len(comp), len(raw)


def main() -> int:
    from bench.bench_handler import load_records   # noqa: PLC0415 - same corpus loader
    from handlers.pipeline import DEFAULT_MAX_DECOMPRESSED
    lines, source = load_records()
    print(f"corpus: {source}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, target in (("~1 MiB gzip (a full Kinesis record)", 8_400_000),
                              ("just under the decompression cap", int(DEFAULT_MAX_DECOMPRESSED * 0.88))):
            path = Path(tmp) / "event.json"
            n, comp, raw = build(lines, target, path)
            out = subprocess.run([sys.executable, "-c", RUN, str(ROOT), str(path)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout)
            print(f"{label}: {n} events, gzip {comp / 2**20:.2f} MiB -> {raw / 2**20:.2f} MiB "
                  f"({raw / comp:.1f}x), {r['records']} records in {r['seconds']} s; peak RSS "
                  f"{r['peak_rss_mib']} MiB ({r['rss_before_mib']} MiB before the invocation)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
