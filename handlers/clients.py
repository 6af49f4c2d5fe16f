"""boto3 clients for the processor: one configuration (short timeouts, the trailwatch user agent)
and a factory that imports boto3 only on first use (sinks, ``RULES_FILE`` from S3/SSM,
idempotency).
"""

from __future__ import annotations

from typing import Any

from handlers import __version__

# botocore's defaults (60 s connect and read timeouts, retries on top) can outlive a 60 s Lambda.
# Calls here are small: fail a stuck one fast and let the sink's own loop retry within the deadline.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 5.0
BOTOCORE_MAX_ATTEMPTS = 2     # total attempts per call inside botocore (its throttling backoff)
MAX_POOL_CONNECTIONS = 32     # >= the processor's publishing concurrency, so threads never queue


def client_config() -> Any:
    from botocore.config import Config

    return Config(user_agent_extra=f"trailwatch/{__version__}",
                  connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                  max_pool_connections=MAX_POOL_CONNECTIONS,
                  retries={"mode": "standard", "total_max_attempts": BOTOCORE_MAX_ATTEMPTS})


def default_client_factory(service: str) -> Any:
    import boto3  # deferred: keeps the cold start small

    return boto3.client(service, config=client_config())
