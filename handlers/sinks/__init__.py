"""Where alerts and failures go: SNS (:mod:`.sns`), EventBridge (:mod:`.eventbridge`), the failure
queue and its S3 archive (:mod:`.failure_queue`), Security Hub (:mod:`.securityhub`), chat
(:mod:`.chat`), all built on :mod:`.base`; :mod:`.idempotency` wraps them to publish once.

Import the sink modules directly: this package re-exports nothing, so the processor's cold start
loads only the sinks it uses. ``routing_sinks`` adds the optional Security Hub and chat sinks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def routing_sinks(security_hub: bool, chat_topic_arn: str | None,
                  client_factory: Callable[[str], Any],
                  sleep: Callable[[float], None] = time.sleep) -> list[Any]:
    """The optional sinks the settings turn on (``SECURITY_HUB_FINDINGS=enabled``, a checked
    ``CHAT_TOPIC_ARN``: :class:`handlers.settings.ProcessorSettings`)."""
    sinks: list[Any] = []
    if security_hub:
        from handlers.sinks.securityhub import SecurityHubSink  # imported only when configured
        sinks.append(SecurityHubSink(client_factory, sleep))
    if chat_topic_arn:
        from handlers.sinks.chat import ChatSink
        sinks.append(ChatSink(chat_topic_arn, client_factory, sleep))
    return sinks
