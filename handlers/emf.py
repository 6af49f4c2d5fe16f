"""CloudWatch Embedded Metric Format documents for per-record values (lag samples).

Counters go through Powertools Metrics. Per-record samples (one delivery lag per CloudTrail record)
would cost a validated ``add_metric`` call each and an auto-flush every 100 values, so they are
written here as EMF documents directly: the same namespace and ``service`` dimension as Powertools
uses, each array at most 100 values (the EMF limit), so CloudWatch computes p50/p95/max over every
sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import orjson

MAX_VALUES = 100


def documents(name: str, unit: str, values: Sequence[float], namespace: str, service: str,
              now_ms: int | None = None) -> list[bytes]:
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    directive = {"Namespace": namespace, "Dimensions": [["service"]],
                 "Metrics": [{"Name": name, "Unit": unit}]}
    out = []
    for i in range(0, len(values), MAX_VALUES):
        out.append(orjson.dumps({"_aws": {"Timestamp": ts, "CloudWatchMetrics": [directive]},
                                 "service": service, name: list(values[i:i + MAX_VALUES])}))
    return out


def stdout_writer() -> Callable[[bytes], None]:
    import sys

    def write(line: bytes) -> None:
        sys.stdout.write(line.decode() + "\n")
    return write
