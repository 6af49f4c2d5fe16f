"""The functions' environment, read and checked once, at cold start, into one typed object.

:meth:`ProcessorSettings.from_env` (the processor, ``handlers/processor.py``) and
:meth:`WatchdogSettings.from_env` (``handlers/watchdog.py``) are the only readers of the
environment under ``handlers/`` (tests/handlers/test_settings.py holds every other module to it);
the components take the typed fields they need. The variable names are contract names: the
template sets them, and the module docstrings of the two entry points list them.

Nothing here raises on a bad value. Each value that cannot be used is ignored, and the reason is
kept in ``errors`` (name -> message): a number falls back to its default, a resource name or ARN
of the wrong shape disables the component that would have used it (a wrong shape would otherwise
fail deep inside that component, on every invocation). The processor logs each one (``setting
ignored``) and counts them in its ``ConfigErrors`` metric (alarmed) on every invocation; the
watchdog logs them and reports a ``watchdog.config`` FAIL check on every run.

The tamper rules' names (``TRAIL_NAME``, ``TRAIL_LOG_GROUP_NAME``, ``DELIVERY_ROLE_NAME``,
``AWS_LAMBDA_FUNCTION_NAME``) are carried as given (:class:`TamperNames`): the tamper rules check
them and a name they cannot use skips that one rule (``rule skipped``, ``RuleErrors``), as before.

Standard library only, and no dataclasses: it is imported on every cold start.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any

# ------------------------------------------------------------------------------ defaults
# The components keep their own constants (tests/handlers/test_settings.py holds them equal):
# this module imports none of them, so that it stays cheap to import.
DEFAULT_LAG_THRESHOLD = 900.0              # handlers.pipeline.DEFAULT_LAG_THRESHOLD
DEFAULT_SKEW_TOLERANCE = 60.0              # handlers.pipeline.DEFAULT_SKEW_TOLERANCE
DEFAULT_MAX_DECOMPRESSED = 16 * 1024 * 1024    # handlers.pipeline.DEFAULT_MAX_DECOMPRESSED
EVENTBRIDGE_MAX_ENTRY_BYTES = 262_144      # handlers.sinks.eventbridge
SQS_MAX_BYTES = 262_144                    # handlers.sinks.failure_queue
DEFAULT_CONCURRENCY = 16                   # handlers.processor.DEFAULT_CONCURRENCY
DEFAULT_AGGREGATION_THRESHOLD = 20         # handlers.alerts
DEFAULT_IDEMPOTENCY_WINDOW = 24 * 3600     # handlers.sinks.idempotency.DEFAULT_WINDOW
DEFAULT_MAX_DELIVERY_AGE = 7200.0          # the watchdog's verify --max-delivery-age
MAX_DELIVERY_AGE_LIMIT = 365 * 86400.0     # MAX_DELIVERY_AGE_SECONDS is capped here (review F7)
DEFAULT_NAMESPACE = "Trailwatch"

# Every number the processor reads, with its default.
NUMBERS: dict[str, float] = {
    "DELIVERY_LAG_THRESHOLD_SECONDS": DEFAULT_LAG_THRESHOLD,
    "CLOCK_SKEW_TOLERANCE_SECONDS": DEFAULT_SKEW_TOLERANCE,
    "MAX_DECOMPRESSED_BYTES": DEFAULT_MAX_DECOMPRESSED,
    "EVENTBRIDGE_MAX_ENTRY_BYTES": EVENTBRIDGE_MAX_ENTRY_BYTES,
    "FAILURE_QUEUE_MAX_BYTES": SQS_MAX_BYTES,
    "PUBLISH_CONCURRENCY": DEFAULT_CONCURRENCY,
    "ALERT_AGGREGATION_THRESHOLD": DEFAULT_AGGREGATION_THRESHOLD,
    "IDEMPOTENCY_WINDOW_SECONDS": DEFAULT_IDEMPOTENCY_WINDOW,
}
# sizes and concurrency (whole numbers): 0 would reject every payload or publish nothing (review F8)
POSITIVE = frozenset(("MAX_DECOMPRESSED_BYTES", "EVENTBRIDGE_MAX_ENTRY_BYTES",
                      "FAILURE_QUEUE_MAX_BYTES", "PUBLISH_CONCURRENCY"))

# ------------------------------------------------------------------------------ shapes
# Each follows what the API (botocore's service model) or the service's naming rules accept, as
# narrowed by the template's AllowedPattern where the template passes the value. Kept as text:
# re compiles (and caches) only the ones a set variable needs, not all of them at import.
_PARTITION = r"arn:aws[a-z-]*"
_REGION_RE = r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}"
# SNS topic names: 1-256 of letters, digits, - and _, a FIFO topic's ending in .fifo (CreateTopic).
SNS_TOPIC_TEXT = "an SNS topic ARN (arn:<partition>:sns:<region>:<account>:<topic>)"
SNS_TOPIC_ARN = _PARTITION + r":sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}(?:\.fifo)?"
# PutEventsRequestEntry.EventBusName: NonPartnerEventBusNameOrArn (1-1600 characters),
# (arn:aws[\w-]*:events:<region>:<account>:event-bus/)?[\.\-_A-Za-z0-9]+
EVENT_BUS = (r"(?:arn:aws[\w-]*:events:[a-z]+-[a-z]+-[\w-]+:[0-9]{12}:event-bus/)?"
             r"[.\-_A-Za-z0-9]{1,256}")
# SQS queue URLs: <scheme>://<endpoint>/<account>/<queue name> (names: 1-80 of letters, digits,
# - and _, a FIFO queue's ending in .fifo). A queue ARN or a bare name is not a URL.
QUEUE_URL = r"https?://[A-Za-z0-9.:-]+/\d{12}/[A-Za-z0-9_-]{1,80}(?:\.fifo)?"
# S3 bucket names as botocore accepts them before sending (its validate_bucket_name: letters,
# digits, . - and _, up to 255: the general purpose naming rules plus the older us-east-1
# names); an s3:// URL or an ARN is not a bucket name.
S3_BUCKET = r"[A-Za-z0-9.\-_]{3,255}"
# DynamoDB TableName: a name (3-255 of letters, digits, _ . -) or the table's ARN.
DYNAMODB_TABLE = (r"(?:" + _PARTITION + r":dynamodb:[a-z0-9-]+:\d{12}:table/)?"
                  r"[A-Za-z0-9_.-]{3,255}")
# IAM role ARNs (optional path), as the template's ExpectedChangePrincipals and VerifyRoleArn.
IAM_ROLE_ARN = _PARTITION + r":iam::\d{12}:role/[\w+=,.@/-]{1,576}"
# what handlers/expected.py compares: an assumed role's issuer (a role ARN) or an IAM user's ARN
IAM_PRINCIPAL_ARN = _PARTITION + r":iam::\d{12}:(?:role|user)/[\w+=,.@/-]{1,576}"
# CloudWatch Logs log group names: 1-512 of [.-_/#A-Za-z0-9].
LOG_GROUP = r"[.\-_/#A-Za-z0-9]{1,512}"
# Organizations: o-<10 to 32 lowercase letters or digits>.
ORG_ID = r"o-[a-z0-9]{10,32}"
# SSM parameter names (letters, digits, _ . - and /; at most 2048) or the parameter's ARN.
SSM_PARAMETER = (r"(?:" + _PARTITION + r":ssm:[a-z0-9-]+:\d{12}:parameter)?"
                 r"[A-Za-z0-9_./-]{1,2048}")
REGION = _REGION_RE


def _clip(raw: Any) -> str:
    return repr(str(raw)[:64])


def read_numbers(env: Mapping[str, str]) -> tuple[dict[str, float], dict[str, str]]:
    """(value of each of :data:`NUMBERS`, {name: error} for the values that were ignored).

    A value that is not a finite, non-negative number (for :data:`POSITIVE`, at least 1) is
    ignored: its default is used."""
    values: dict[str, float] = {}
    errors: dict[str, str] = {}
    for key, default in NUMBERS.items():
        raw = env.get(key)
        values[key] = float(default)
        if raw in (None, ""):
            continue
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            value = math.nan
        if not math.isfinite(value) or value < 0:
            errors[key] = f"{key}={_clip(raw)} is not a non-negative number; using {default}"
            continue
        if value < 1 and key in POSITIVE:      # used as int(): 0.5 would be 0
            errors[key] = f"{key}={_clip(raw)}: a size or concurrency must be at least 1; " \
                          f"using {default}"
            continue
        values[key] = value
    return values, errors


def _shaped(env: Mapping[str, str], key: str, shape: str, what: str,
            consequence: str, errors: dict[str, str]) -> str | None:
    """The value of ``key`` when set and of the right shape; None when unset (or empty); None
    and an error when it cannot be what it names."""
    raw = env.get(key)
    if not raw:
        return None
    if isinstance(raw, str) and re.fullmatch(shape, raw):
        return raw
    errors[key] = f"{key}={_clip(raw)} is not {what}; {consequence}"
    return None


def metrics_namespace(env: Mapping[str, str] | None = None) -> str:
    """``POWERTOOLS_METRICS_NAMESPACE`` (Powertools reads it too), read at import by the entry
    points for their own EMF documents."""
    env = os.environ if env is None else env
    return env.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE


class TamperNames:
    """The resources the tamper rules watch, as the environment names them (not yet checked:
    :mod:`handlers.detection.tamper` does, with RuleErrors semantics)."""

    __slots__ = ("trail", "log_group", "delivery_role", "function", "region")

    def __init__(self, trail: str = "", log_group: str = "", delivery_role: str = "",
                 function: str = "", region: str = "") -> None:
        self.trail = trail                 # TRAIL_NAME: a name or a trail ARN
        self.log_group = log_group         # TRAIL_LOG_GROUP_NAME
        self.delivery_role = delivery_role  # DELIVERY_ROLE_NAME (empty: the CLI's default)
        self.function = function           # AWS_LAMBDA_FUNCTION_NAME
        self.region = region               # AWS_REGION: the default role's Region for a name

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None) -> TamperNames:
        env = env or {}

        def text(key: str) -> str:
            value = env.get(key)
            return value if isinstance(value, str) else "" if value is None else str(value)
        return cls(text("TRAIL_NAME"), text("TRAIL_LOG_GROUP_NAME"), text("DELIVERY_ROLE_NAME"),
                   text("AWS_LAMBDA_FUNCTION_NAME"), text("AWS_REGION"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TamperNames) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __repr__(self) -> str:
        return "TamperNames(" + ", ".join(f"{s}={getattr(self, s)!r}" for s in self.__slots__) + ")"


class _Settings:
    __slots__ = ("errors",)
    DEFAULTS: dict[str, Any] = {}

    def __init__(self, **values: Any) -> None:
        for name, default in self.DEFAULTS.items():
            setattr(self, name, values.pop(name, default))
        self.errors: dict[str, str] = values.pop("errors", None) or {}
        if values:
            raise TypeError(f"unknown settings: {sorted(values)}")

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.DEFAULTS)
        return f"{type(self).__name__}({fields}, errors={self.errors!r})"


class ProcessorSettings(_Settings):
    """Everything the processor reads from its environment (handlers/processor.py lists the
    contract names), typed and checked."""

    __slots__ = ("alert_topic_arn", "alert_bus_name", "failure_queue_url",
                 "failure_queue_max_bytes", "failure_archive_bucket", "expected_principals",
                 "delivery_lag_threshold", "rules_file", "clock_skew_tolerance",
                 "max_decompressed_bytes", "eventbridge_max_entry_bytes", "publish_concurrency",
                 "tamper", "security_hub", "chat_topic_arn", "aggregation_threshold",
                 "idempotency_table", "idempotency_window", "alert_state_table")
    DEFAULTS: dict[str, Any] = {
        "alert_topic_arn": None,            # ALERT_TOPIC_ARN
        "alert_bus_name": None,             # ALERT_BUS_NAME
        "failure_queue_url": None,          # FAILURE_QUEUE_URL
        "failure_queue_max_bytes": SQS_MAX_BYTES,       # FAILURE_QUEUE_MAX_BYTES
        "failure_archive_bucket": None,     # FAILURE_ARCHIVE_BUCKET
        "expected_principals": frozenset(),  # EXPECTED_CHANGE_PRINCIPALS
        "delivery_lag_threshold": DEFAULT_LAG_THRESHOLD,  # DELIVERY_LAG_THRESHOLD_SECONDS
        "rules_file": "",                   # RULES_FILE
        "clock_skew_tolerance": DEFAULT_SKEW_TOLERANCE,   # CLOCK_SKEW_TOLERANCE_SECONDS
        "max_decompressed_bytes": DEFAULT_MAX_DECOMPRESSED,   # MAX_DECOMPRESSED_BYTES
        "eventbridge_max_entry_bytes": EVENTBRIDGE_MAX_ENTRY_BYTES,  # EVENTBRIDGE_MAX_ENTRY_BYTES
        "publish_concurrency": DEFAULT_CONCURRENCY,       # PUBLISH_CONCURRENCY
        "tamper": TamperNames(),            # TRAIL_NAME, TRAIL_LOG_GROUP_NAME, ...
        "security_hub": False,              # SECURITY_HUB_FINDINGS
        "chat_topic_arn": None,             # CHAT_TOPIC_ARN
        "aggregation_threshold": DEFAULT_AGGREGATION_THRESHOLD,   # ALERT_AGGREGATION_THRESHOLD
        "idempotency_table": None,          # IDEMPOTENCY_TABLE_NAME
        "idempotency_window": DEFAULT_IDEMPOTENCY_WINDOW,     # IDEMPOTENCY_WINDOW_SECONDS
        "alert_state_table": None,          # ALERT_STATE_TABLE_NAME
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProcessorSettings:
        """The processor's settings from ``env`` (default: ``os.environ``). Never raises."""
        env = os.environ if env is None else env
        num, errors = read_numbers(env)
        v: dict[str, Any] = {
            "delivery_lag_threshold": num["DELIVERY_LAG_THRESHOLD_SECONDS"],
            "clock_skew_tolerance": num["CLOCK_SKEW_TOLERANCE_SECONDS"],
            "max_decompressed_bytes": int(num["MAX_DECOMPRESSED_BYTES"]),
            "eventbridge_max_entry_bytes": int(num["EVENTBRIDGE_MAX_ENTRY_BYTES"]),
            "failure_queue_max_bytes": int(num["FAILURE_QUEUE_MAX_BYTES"]),
            "publish_concurrency": int(num["PUBLISH_CONCURRENCY"]),
            "aggregation_threshold": int(num["ALERT_AGGREGATION_THRESHOLD"]),
            "idempotency_window": int(num["IDEMPOTENCY_WINDOW_SECONDS"]),
        }
        sns_arn = SNS_TOPIC_TEXT
        v["alert_topic_arn"] = _shaped(env, "ALERT_TOPIC_ARN", SNS_TOPIC_ARN, sns_arn,
                                       "alerts are not published to SNS", errors)
        v["alert_bus_name"] = _shaped(env, "ALERT_BUS_NAME", EVENT_BUS,
                                      "an EventBridge event bus name or ARN",
                                      "alerts are not published to EventBridge", errors)
        v["failure_queue_url"] = _shaped(
            env, "FAILURE_QUEUE_URL", QUEUE_URL,
            "an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>)",
            "unprocessable items are only logged", errors)
        v["failure_archive_bucket"] = _shaped(
            env, "FAILURE_ARCHIVE_BUCKET", S3_BUCKET, "an S3 bucket name",
            "failure records larger than the queue takes cannot be written", errors)
        v["chat_topic_arn"] = _shaped(env, "CHAT_TOPIC_ARN", SNS_TOPIC_ARN, sns_arn,
                                      "alerts are not sent to chat", errors)
        v["idempotency_table"] = _shaped(
            env, "IDEMPOTENCY_TABLE_NAME", DYNAMODB_TABLE, "a DynamoDB table name or ARN",
            "alerts are published without cross-invocation deduplication", errors)
        v["alert_state_table"] = _shaped(
            env, "ALERT_STATE_TABLE_NAME", DYNAMODB_TABLE, "a DynamoDB table name or ARN",
            "rule thresholds and dedup windows are kept per invocation only", errors)
        v["expected_principals"] = _principals(env.get("EXPECTED_CHANGE_PRINCIPALS"), errors)
        flag = str(env.get("SECURITY_HUB_FINDINGS") or "").strip().lower()
        if flag not in ("", "enabled", "disabled"):
            errors["SECURITY_HUB_FINDINGS"] = \
                f"SECURITY_HUB_FINDINGS={_clip(env.get('SECURITY_HUB_FINDINGS'))} is neither " \
                "'enabled' nor 'disabled'; alerts are not imported into Security Hub"
        v["security_hub"] = flag == "enabled"
        v["rules_file"] = str(env.get("RULES_FILE") or "")
        v["tamper"] = TamperNames.from_env(env)
        return cls(errors=errors, **v)


def _principals(value: Any, errors: dict[str, str]) -> frozenset[str]:
    """``EXPECTED_CHANGE_PRINCIPALS``: comma-separated IAM role ARNs, or IAM user ARNs for a CLI
    run as a user (blank entries ignored). An entry that is neither (a role name, an assumed-role
    session ARN) could never match CloudTrail's session issuer or user: it is left out and
    reported."""
    good, bad = _split_list(value, IAM_PRINCIPAL_ARN)
    if bad:
        errors["EXPECTED_CHANGE_PRINCIPALS"] = \
            f"EXPECTED_CHANGE_PRINCIPALS: {_listed(bad)} " \
            f"{'is not an' if len(bad) == 1 else 'are not'} IAM role or user ARN(s) " \
            "(arn:<partition>:iam::<account>:role/<name>); ignored, so no alert is marked " \
            "expected for them"
    return frozenset(good)


def _split_list(value: Any, pattern: str) -> tuple[list[str], list[str]]:
    """A comma-separated value -> (entries matching ``pattern``, other non-blank entries)."""
    good: list[str] = []
    bad: list[str] = []
    for item in str(value or "").split(","):
        item = item.strip()
        if re.fullmatch(pattern, item):
            good.append(item)
        elif item:
            bad.append(item)
    return good, bad


def _listed(bad: list[str]) -> str:
    return ", ".join(_clip(b) for b in bad[:5])


class WatchdogSettings(_Settings):
    """Everything the watchdog reads from its environment (handlers/watchdog.py lists the
    contract names), typed and checked."""

    __slots__ = ("trail_name", "log_group", "verify_role_arn", "org_id", "max_delivery_age",
                 "alert_topic_arn", "state_parameter", "readiness_regions", "region",
                 "chat_topic_arn")
    DEFAULTS: dict[str, Any] = {
        "trail_name": "",                   # TRAIL_NAME (name or ARN; empty: nothing to verify)
        "log_group": None,                  # TRAIL_LOG_GROUP_NAME (None: the trail's own)
        "verify_role_arn": None,            # VERIFY_ROLE_ARN
        "org_id": None,                     # ORG_ID (None: looked up)
        "max_delivery_age": DEFAULT_MAX_DELIVERY_AGE,     # MAX_DELIVERY_AGE_SECONDS
        "alert_topic_arn": None,            # ALERT_TOPIC_ARN
        "state_parameter": None,            # WATCHDOG_STATE_PARAMETER (None: in memory)
        "readiness_regions": None,          # READINESS_REGIONS: None (off), "all" or "r1,r2"
        "region": None,                     # AWS_REGION, else AWS_DEFAULT_REGION
        "chat_topic_arn": None,             # CHAT_TOPIC_ARN (None: no chat.topic check)
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WatchdogSettings:
        """The watchdog's settings from ``env`` (default: ``os.environ``). Never raises."""
        env = os.environ if env is None else env
        errors: dict[str, str] = {}
        v: dict[str, Any] = {"trail_name": str(env.get("TRAIL_NAME") or ""),
                             "region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
                             or None}
        v["log_group"] = _shaped(env, "TRAIL_LOG_GROUP_NAME", LOG_GROUP,
                                 "a CloudWatch Logs log group name",
                                 "the log group the trail delivers to is verified instead", errors)
        v["verify_role_arn"] = _shaped(
            env, "VERIFY_ROLE_ARN", IAM_ROLE_ARN, "an IAM role ARN",
            "running in this account (trail-level checks only when the log group is elsewhere)",
            errors)
        v["org_id"] = _shaped(env, "ORG_ID", ORG_ID, "an organization id (o-...)",
                              "looking the organization up", errors)
        v["alert_topic_arn"] = _shaped(env, "ALERT_TOPIC_ARN", SNS_TOPIC_ARN, SNS_TOPIC_TEXT,
                                       "notices are only logged", errors)
        v["chat_topic_arn"] = _shaped(env, "CHAT_TOPIC_ARN", SNS_TOPIC_ARN, SNS_TOPIC_TEXT,
                                      "the chat topic is not checked", errors)
        v["state_parameter"] = _shaped(
            env, "WATCHDOG_STATE_PARAMETER", SSM_PARAMETER, "an SSM parameter name",
            "the last statuses are kept in memory only (a cold start alerts again)", errors)
        raw_age = env.get("MAX_DELIVERY_AGE_SECONDS") or ""
        age = DEFAULT_MAX_DELIVERY_AGE
        if raw_age:
            try:
                age = float(raw_age)
            except (TypeError, ValueError):
                age = -1.0
            if not 0 < age < math.inf:
                age = DEFAULT_MAX_DELIVERY_AGE
                errors["MAX_DELIVERY_AGE_SECONDS"] = \
                    f"MAX_DELIVERY_AGE_SECONDS={_clip(raw_age)} is not a number of seconds; " \
                    f"using {DEFAULT_MAX_DELIVERY_AGE:.0f}"
            elif age > MAX_DELIVERY_AGE_LIMIT:     # a timedelta overflows past ~8.6e13 s
                age = MAX_DELIVERY_AGE_LIMIT
                errors["MAX_DELIVERY_AGE_SECONDS"] = \
                    f"MAX_DELIVERY_AGE_SECONDS={_clip(raw_age)} is more than a year; " \
                    f"using {MAX_DELIVERY_AGE_LIMIT:.0f}"
        v["max_delivery_age"] = age
        v["readiness_regions"] = _regions(env.get("READINESS_REGIONS"), errors)
        return cls(errors=errors, **v)

    @classmethod
    def of(cls, value: WatchdogSettings | Mapping[str, str] | None) -> WatchdogSettings:
        """``value`` itself, or the settings read from a mapping (tests and the CLI pass one)."""
        return value if isinstance(value, WatchdogSettings) else cls.from_env(value or {})


def _regions(value: Any, errors: dict[str, str]) -> str | None:
    """``READINESS_REGIONS``: "all" or comma-separated Region names; a name that is not one is
    left out (and reported), the others still run."""
    text = str(value or "").strip()
    if not text:
        return None
    if text == "all":
        return "all"
    good, bad = _split_list(text, REGION)
    if bad:
        errors["READINESS_REGIONS"] = \
            f"READINESS_REGIONS: {_listed(bad)} " \
            f"{'is not a Region name' if len(bad) == 1 else 'are not Region names'}; " \
            + ("readiness runs for " + ",".join(good) if good else "readiness does not run")
    return ",".join(good) or None
