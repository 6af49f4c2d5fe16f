"""boto3 clients for the processor: one configuration (short timeouts, the trailwatch user agent)
and a factory that imports boto3 only on first use (sinks, ``RULES_FILE`` from S3/SSM,
idempotency).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from handlers import __version__

# botocore's defaults (60 s connect and read timeouts, retries on top) can outlive a 60 s Lambda.
# Calls here are small: fail a stuck one fast and let the sink's own loop retry within the deadline.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
BOTOCORE_MAX_ATTEMPTS = 2     # total attempts per call inside botocore (its throttling backoff)
MAX_POOL_CONNECTIONS = 32     # >= the processor's publishing concurrency, so threads never queue
# The alert state table (handlers/alert_state.py) has a 3 s budget per invocation: one attempt per
# botocore call (alert_state retries throttling itself, within the budget), and short timeouts,
# so a hung endpoint costs about a second, not botocore's retries of 5 s reads (review F5).
STATE_CONNECT_TIMEOUT = 0.5
STATE_READ_TIMEOUT = 1.0
STATE_MAX_ATTEMPTS = 1


def client_config() -> Any:
    from botocore.config import Config

    return Config(user_agent_extra=f"trailwatch/{__version__}",
                  connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                  max_pool_connections=MAX_POOL_CONNECTIONS,
                  retries={"mode": "standard", "total_max_attempts": BOTOCORE_MAX_ATTEMPTS})


def state_table_config() -> Any:
    from botocore.config import Config

    return Config(user_agent_extra=f"trailwatch/{__version__}",
                  connect_timeout=STATE_CONNECT_TIMEOUT, read_timeout=STATE_READ_TIMEOUT,
                  retries={"mode": "standard", "total_max_attempts": STATE_MAX_ATTEMPTS})


def default_client_factory(service: str) -> Any:
    import boto3  # deferred: keeps the cold start small

    return boto3.client(service, config=client_config())


def state_table_client(service: str = "dynamodb") -> Any:
    import boto3  # deferred: keeps the cold start small

    return boto3.client(service, config=state_table_config())


def for_state_table(factory: Callable[[str], Any]) -> Callable[[str], Any]:
    """The factory for the state table's client: the default factory's clients get the state
    table's configuration; an injected factory (tests, tools) is used as it is."""
    return state_table_client if factory is default_client_factory else factory
