"""CloudWatch Embedded Metric Format documents for per-record values (lag samples).

Counters go through Powertools Metrics. Per-record samples (one delivery lag per CloudTrail record)
would cost a validated ``add_metric`` call each and an auto-flush every 100 values, so they are
written here as EMF documents directly: the same namespace and ``service`` dimension as Powertools
uses, each array at most 100 values (the EMF limit), so CloudWatch computes p50/p95/max over every
sample.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import orjson

MAX_VALUES = 100


def documents(series: Mapping[str, Sequence[float]], unit: str, namespace: str, service: str,
              now_ms: int | None = None) -> list[bytes]:
    """EMF documents carrying every value of every series, at most 100 values per array.

    The series share documents (DeliveryLag and ReceiptLag of one invocation travel together), so
    an invocation of up to 100 records writes a single log line.
    """
    ts = int(time.time() * 1000) if now_ms is None else now_ms
    longest = max((len(v) for v in series.values()), default=0)
    out = []
    for i in range(0, longest, MAX_VALUES):
        chunk = {name: values[i:i + MAX_VALUES] for name, values in series.items()
                 if len(values) > i}
        directive = {"Namespace": namespace, "Dimensions": [["service"]],
                     "Metrics": [{"Name": name, "Unit": unit} for name in chunk]}
        out.append(orjson.dumps({"_aws": {"Timestamp": ts, "CloudWatchMetrics": [directive]},
                                 "service": service, **chunk}))
    return out


def stdout_writer() -> Callable[[bytes], None]:
    import sys

    def write(line: bytes) -> None:
        sys.stdout.write(line.decode() + "\n")
    return write
