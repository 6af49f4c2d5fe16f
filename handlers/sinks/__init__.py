"""Where alerts and failures go: SNS (:mod:`.sns`), EventBridge (:mod:`.eventbridge`), the failure
queue and its S3 archive (:mod:`.failure_queue`), Security Hub (:mod:`.securityhub`), chat
(:mod:`.chat`), all built on :mod:`.base`; :mod:`.idempotency` wraps them to publish once.

Import the sink modules directly: this package re-exports nothing, so the processor's cold start
loads only the sinks it uses. ``routing_sinks`` adds the optional Security Hub and chat sinks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any


def routing_sinks(env: Mapping[str, str], client_factory: Callable[[str], Any],
                  sleep: Callable[[float], None] = time.sleep) -> list[Any]:
    from handlers.sinks.chat import ENV_TOPIC, ChatSink  # imported only when configured
    from handlers.sinks.securityhub import SecurityHubSink, enabled

    sinks: list[Any] = []
    if enabled(env):
        sinks.append(SecurityHubSink(client_factory, sleep))
    if env.get(ENV_TOPIC):
        sinks.append(ChatSink(env[ENV_TOPIC], client_factory, sleep))
    return sinks
