"""Scheduled watchdog: ``handlers/watchdog.py::lambda_handler`` (EventBridge schedule).

Continuous verification: every run executes the read-only ``trailwatch verify`` checks with the
very code the CLI uses (:mod:`setup.verify`), emits one metric per check (``CheckStatus``: 0 PASS,
1 WARN, 2 FAIL, dimension ``check``) plus ``ChecksFailed`` / ``ChecksRun``, and publishes an alert
when a check *changes* to FAIL and a recovery when a failed check returns to PASS. The previous
statuses live in an SSM parameter, so an unchanged FAIL alerts once, not every 15 minutes.

Environment (contract names, set by template.yaml), read and checked once per cold start by
:class:`handlers.settings.WatchdogSettings` (the only reader; the functions here take the typed
settings, or a mapping they read the same way):

``TRAIL_NAME``                  the trail (name or ARN) to verify; from a member account an
                                organization trail's name works too (found among the trails
                                the account sees)
``TRAIL_LOG_GROUP_NAME``        its log group (default: the one the trail delivers to)
``VERIFY_ROLE_ARN``             optional role to assume in the log group's account
``ORG_ID``                      optional organization id (else organizations:DescribeOrganization)
``MAX_DELIVERY_AGE_SECONDS``    verify --max-delivery-age (7200)
``ALERT_TOPIC_ARN``             SNS topic for the notices: the template points it at the ops topic
                                (delivery health is operational); unset: notices are only logged
``WATCHDOG_STATE_PARAMETER``    SSM String parameter holding the last statuses (JSON)
``READINESS_REGIONS``           optional: also run ``trailwatch readiness`` for these Regions
                                ("all" or R,R,...); each finding is a check
                                ``readiness.<id>[.<region>]`` with the same alerts and metrics
``CHAT_TOPIC_ARN``              optional: the processor's chat topic, checked as ``chat.topic``
                                (a FIFO or customer-KMS topic cannot reach a chat channel)
``AWS_REGION``                  the Region for the clients (set by Lambda; else AWS_DEFAULT_REGION)

A value that cannot be used never stops a run: it is logged (``setting ignored``) and reported
by a ``watchdog.config`` FAIL check on every run (notified once, as every new FAIL is), and the
watchdog carries on without it: a malformed MAX_DELIVERY_AGE_SECONDS uses 7200 (more than a year is capped); a TRAIL_LOG_GROUP_NAME,
VERIFY_ROLE_ARN or ORG_ID of the wrong shape is not used (the trail's log group, this account,
the organization looked up); an ALERT_TOPIC_ARN that is not an SNS topic ARN logs the notices;
a WATCHDOG_STATE_PARAMETER that is not a parameter name keeps the statuses in memory; a
READINESS_REGIONS entry that is not a Region name is left out. A VERIFY_ROLE_ARN that cannot be
assumed is a ``watchdog.trail`` FAIL (alerted), never an exception on every run.

The artifact bundles ``setup/`` beside ``handlers/`` (Makefile ``build-WatchdogFunction``).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from handlers.alerts import alert_id
from handlers.settings import MAX_DELIVERY_AGE_LIMIT  # noqa: F401 - MAX_DELIVERY_AGE_SECONDS cap
from handlers.settings import WatchdogSettings, metrics_namespace

# Not a trailwatch.alert (no record, no identity block): its own versioned message kind, so a
# consumer of the alert contract never mistakes a watchdog notice for a detection.
SCHEMA = "trailwatch.watchdog/1"

SERVICE = "trailwatch-watchdog"
NAMESPACE = metrics_namespace()
STATUS_VALUE = {"PASS": 0, "WARN": 1, "FAIL": 2}


class SsmState:
    """Last statuses per check id, as JSON in an SSM String parameter."""

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self.client = client

    def load(self) -> dict[str, str]:
        try:
            value = self.client.get_parameter(Name=self.name)["Parameter"]["Value"]
        except self.client.exceptions.ParameterNotFound:
            return {}
        try:
            doc = json.loads(value)
        except ValueError:
            return {}
        return {k: v for k, v in doc.items() if isinstance(v, str)} if isinstance(doc, dict) else {}

    def save(self, statuses: dict[str, str]) -> None:
        self.client.put_parameter(Name=self.name, Value=json.dumps(statuses, sort_keys=True),
                                  Type="String", Overwrite=True)


class MemoryState:
    def __init__(self, initial: dict[str, str] | None = None) -> None:
        self.value = dict(initial or {})

    def load(self) -> dict[str, str]:
        return dict(self.value)

    def save(self, statuses: dict[str, str]) -> None:
        self.value = dict(statuses)


def _result(cid: str, status: str, message: str, remediation: str = "") -> Any:
    from setup.verify import CheckResult
    return CheckResult(cid, status, message, remediation)


def config_notes(settings: WatchdogSettings) -> list[Any]:
    """One ``watchdog.config`` FAIL naming every environment value that was ignored (none: no
    result), so that a bad value is reported on every run, beside the checks that still ran,
    and alerted once on the ops topic when it appears (a FAIL is what the watchdog notifies)."""
    if not settings.errors:
        return []
    return [_result("watchdog.config", "FAIL", "; ".join(settings.errors.values()),
                    "fix the function's environment")]


def run_verify(settings: WatchdogSettings | Mapping[str, str],
               clients: Any = None) -> tuple[str, list[Any]]:
    """(trail ARN, results) of the read-only verify checks, as the CLI runs them."""
    from botocore.exceptions import ClientError

    from setup.aws import AwsClients
    from setup.errors import SetupError
    from setup.verify import CHECKS, TRAIL_LEVEL_CHECKS, Context, run_checks
    from setup.wiring.models import Target, default_log_group, default_role_name
    from setup.wiring.state import caller, find_trail, organization_id

    s = WatchdogSettings.of(settings)
    notes: list[Any] = config_notes(s)
    clients = clients or AwsClients(region=s.region)
    notes += chat_checks(s, clients)      # the stack's own topic: in its own account
    if not s.trail_name:
        return "", notes + [_result("watchdog.trail", "FAIL", "TRAIL_NAME is empty: there is no "
                                    "trail to verify", "set the template's TrailName (the "
                                    "trail's name or ARN)")]
    trail_ref = s.trail_name
    try:
        if s.verify_role_arn:
            from setup.aws import clients_for_role
            clients = clients_for_role(clients, s.verify_role_arn, clients.default_region)
        trail = find_trail(clients, trail_ref)
        who = caller(clients, trail.home_region)
        org_id = s.org_id or (organization_id(clients, trail.home_region)
                              if trail.is_org else None)
    except SetupError as e:
        return trail_ref, notes + [_result("watchdog.trail", "FAIL", e.message, e.remediation)]
    except ClientError as e:      # e.g. AssumeRole of VERIFY_ROLE_ARN refused: every run
        err = e.response.get("Error", {})
        return trail_ref, notes + [_result(
            "watchdog.trail", "FAIL",
            f"{err.get('Code')}: {str(err.get('Message'))[:300]} (calling "
            f"{e.operation_name})", "check VERIFY_ROLE_ARN (the template's VerifyRoleArn) and "
            "the watchdog role's permissions")]
    group_arn = trail.log_group_arn or ""
    parts = group_arn.split(":")
    group = s.log_group or (parts[6] if len(parts) > 6 else default_log_group(trail.name))
    role = trail.role_arn.rsplit("/", 1)[1] if trail.role_arn else \
        default_role_name(trail.name, trail.home_region)       # the role the CLI creates
    target = Target(trail=trail, account=who["account"], log_group=group, role_name=role,
                    org_id=org_id)
    checks = list(CHECKS)
    if len(parts) > 4 and parts[4] != who["account"]:
        checks = list(TRAIL_LEVEL_CHECKS)
        notes.append(_result("watchdog.scope", "WARN", f"the log group is in account {parts[4]}; "
                             f"this watchdog runs in {who['account']} without VerifyRoleArn, so "
                             "only the trail-level checks ran",
                             "set the template's VerifyRoleArn to a read-only role in that account"))
    ctx = Context(clients, target, max_delivery_age=dt.timedelta(seconds=s.max_delivery_age))
    return trail.arn, notes + run_checks(ctx, checks)


def chat_checks(settings: WatchdogSettings, clients: Any) -> list[Any]:
    """``chat.topic`` when ``CHAT_TOPIC_ARN`` is set (:mod:`setup.verify.chat`)."""
    if not settings.chat_topic_arn:
        return []
    from setup.verify.chat import chat_topic
    return [chat_topic(clients, settings.chat_topic_arn)]


def run_readiness_checks(settings: WatchdogSettings | Mapping[str, str],
                         clients: Any = None) -> list[Any]:
    """``trailwatch readiness`` (read-only), its findings named per Region so that a state that
    changes in one Region alerts once, for that Region."""
    from setup.aws import AwsClients
    from setup.errors import SetupError
    from setup.verify.readiness import resolve_regions, run_readiness

    s = WatchdogSettings.of(settings)
    clients = clients or AwsClients(region=s.region)
    try:
        results = run_readiness(clients, resolve_regions(clients, s.readiness_regions))
    except SetupError as e:
        return [_result("readiness.run", "WARN", f"readiness did not run: {e.message}",
                        e.remediation)]
    except Exception as e:  # noqa: BLE001 - the watchdog's own checks must still report
        return [_result("readiness.run", "WARN",
                        f"readiness did not run: {type(e).__name__}: {str(e)[:200]}",
                        "re-run `trailwatch readiness` to see the error; the watchdog's other "
                        "checks ran")]
    for r in results:
        where = (r.details or {}).get("region", "global")
        r.id = f"readiness.{r.id}" + ("" if where == "global" else f".{where}")
    return results


def verify_and_readiness(settings: WatchdogSettings | Mapping[str, str]
                         ) -> tuple[str, list[Any]]:
    s = WatchdogSettings.of(settings)
    trail, results = run_verify(s)
    return trail, results + run_readiness_checks(s)


def metric_documents(results: list[Any], now_ms: int) -> list[bytes]:
    """EMF: one ``CheckStatus`` value per check (dimension ``check``), and the run's totals."""
    out = []
    for r in results:
        out.append(json.dumps({
            "_aws": {"Timestamp": now_ms, "CloudWatchMetrics": [{
                "Namespace": NAMESPACE, "Dimensions": [["service", "check"]],
                "Metrics": [{"Name": "CheckStatus", "Unit": "None"}]}]},
            "service": SERVICE, "check": r.id, "CheckStatus": STATUS_VALUE[r.status]}).encode())
    failed = sum(1 for r in results if r.status == "FAIL")
    out.append(json.dumps({
        "_aws": {"Timestamp": now_ms, "CloudWatchMetrics": [{
            "Namespace": NAMESPACE, "Dimensions": [["service"]],
            "Metrics": [{"Name": "ChecksFailed", "Unit": "Count"},
                        {"Name": "ChecksRun", "Unit": "Count"}]}]},
        "service": SERVICE, "ChecksFailed": failed, "ChecksRun": len(results)}).encode())
    return out


def transition_alerts(trail: str, results: list[Any], previous: Mapping[str, str],
                      run_key: str) -> list[dict[str, Any]]:
    """An alert for each check that changed to FAIL, a recovery for each FAIL back to PASS."""
    alerts = []
    for r in results:
        before = previous.get(r.id)
        if r.status == "FAIL" and before != "FAIL":
            kind, severity, title = "verify_check_failed", "HIGH", f"trailwatch check {r.id} FAILS"
        elif r.status == "PASS" and before == "FAIL":
            kind, severity, title = "verify_check_recovered", "INFO", \
                f"trailwatch check {r.id} recovered"
        else:
            continue
        rule_id = f"trailwatch-verify-{r.id}"
        alerts.append({
            "schema": SCHEMA,
            "alert_id": alert_id(kind, rule_id, f"{trail}|{run_key}"),
            "kind": kind,
            "rule": {"id": rule_id, "title": title, "severity": severity, "source": "watchdog"},
            "event": {"trail": trail, "check": r.to_json(), "previous_status": before},
            "delivery": None,
            "expected_change": False,
            "truncated_fields": [],
        })
    return alerts


class Watchdog:
    def __init__(self, settings: WatchdogSettings | Mapping[str, str], state: Any,
                 publish: Callable[[dict], None] | None, emit: Callable[[bytes], None],
                 log: Any = None,
                 verify: Callable[[WatchdogSettings], tuple[str, list[Any]]] = run_verify,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = WatchdogSettings.of(settings)
        self.state, self.publish, self.emit = state, publish, emit
        self.log = log
        self.verify = verify
        self.clock = clock

    def run(self, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        trail, results = self.verify(self.settings)
        now = self.clock()
        for doc in metric_documents(results, int(now * 1000)):
            self.emit(doc)
        previous = self.state.load()
        # The schedule's time keys the alert ids: a retried run publishes the same ids.
        run_key = str((event or {}).get("time") or int(now))
        alerts = transition_alerts(trail, results, previous, run_key)
        for alert in alerts:
            if self.publish is None:
                if self.log is not None:
                    self.log.warning("alert", extra={"alert": alert})
            else:
                self.publish(alert)     # raises: state is not saved, the retry re-alerts
        current = {r.id: r.status for r in results}
        self.state.save(current)
        summary = {s: sum(1 for r in results if r.status == s) for s in STATUS_VALUE}
        return {"trail": trail, "checks": current, "summary": summary, "alerts": len(alerts)}


def sns_publisher(topic_arn: str, client: Any) -> Callable[[dict], None]:
    def publish(alert: dict) -> None:
        client.publish(TopicArn=topic_arn, Message=json.dumps(alert),
                       Subject=alert["rule"]["title"][:99],
                       MessageAttributes={
                           "kind": {"DataType": "String", "StringValue": alert["kind"]},
                           "severity": {"DataType": "String",
                                        "StringValue": alert["rule"]["severity"]}})
    return publish


def from_env(env: Mapping[str, str] | WatchdogSettings | None = None) -> Watchdog:
    import logging
    import sys

    import boto3
    s = env if isinstance(env, WatchdogSettings) else WatchdogSettings.from_env(env)
    for key, err in s.errors.items():         # and a watchdog.config FAIL on every run
        logging.getLogger(__name__).error("setting ignored: %s: %s", key, err)
    state: Any = SsmState(s.state_parameter, boto3.client("ssm")) \
        if s.state_parameter else MemoryState()
    publish = sns_publisher(s.alert_topic_arn, boto3.client("sns")) \
        if s.alert_topic_arn else None

    def emit(line: bytes) -> None:
        sys.stdout.write(line.decode() + "\n")
    return Watchdog(s, state, publish, emit,
                    verify=verify_and_readiness if s.readiness_regions else run_verify)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return from_env().run(event)
