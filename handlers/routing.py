"""Wiring of the routing features into the processor (issue 12), kept out of its hot path.

``routing_sinks`` adds the optional Security Hub and chat sinks from the environment;
``aggregate_for`` collapses noisy rule matches before publishing and keeps Kinesis mode's
alert -> source-record map whole (an undelivered aggregate fails every record it came from).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from handlers.alerts import aggregate


def routing_sinks(env: Mapping[str, str], client_factory: Callable[[str], Any],
                  sleep: Callable[[float], None] = time.sleep) -> list[Any]:
    from handlers.chat import ENV_TOPIC, ChatSink     # imported only when configured
    from handlers.securityhub import SecurityHubSink, enabled

    sinks: list[Any] = []
    if enabled(env):
        sinks.append(SecurityHubSink(client_factory, sleep))
    if env.get(ENV_TOPIC):
        sinks.append(ChatSink(env[ENV_TOPIC], client_factory, sleep))
    return sinks


def aggregate_for(alerts: list[dict[str, Any]], origin: dict[str, set[str]] | None,
                  threshold: int) -> list[dict[str, Any]]:
    out, members = aggregate(alerts, threshold)
    if origin is not None:
        for agg_id, ids in members.items():
            origin[agg_id] = set().union(*(origin.get(i, set()) for i in ids))
    return out
