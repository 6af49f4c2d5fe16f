"""``verify --canary`` / ``apply --canary`` / ``apply --wait``: prove delivery end to end.

The canary makes one harmless management *write* call on a resource trailwatch owns: it puts a
metric filter ``trailwatch-canary-<nonce>`` on the trail's log group and deletes it again. The
filter's pattern matches no CloudTrail record, so it never publishes a data point
(:func:`handlers.canary.canary_filter`). The call must be one CloudTrail records:
``PutMetricFilter`` and ``DeleteMetricFilter`` are on the CloudWatch Logs User Guide's list of
actions "logged as events in CloudTrail log files" ("Logging Amazon CloudWatch Logs API calls in
AWS CloudTrail"); ``TagResource``, the call of earlier versions, is not. The canary then polls
the log group in the home region
(``FilterLogEvents`` for the nonce, with backoff, up to ``--canary-timeout``) until the record
arrives, and reports eventTime -> delivered -> found and the stream it arrived in
(check ``canary.delivered``).

The filter is deleted in a ``finally`` once the put may have taken effect. One it cannot delete is
recorded on the probe and named, with its ``aws logs delete-metric-filter`` command, in
``canary.delivered``'s message, remediation and ``details["left_behind"]`` (the check is then at
least WARN). Before putting, the canary deletes filters earlier runs left on the log group, only
those of exactly its own shape (:func:`is_leftover_canary_filter`). A log group at the quota of
100 metric filters (``LimitExceededException``) is a FAIL that says so; nothing else is deleted.

If the group's subscription filter targets a Lambda function in the same account, it then looks in
that function's log group for the processor's ``canary_observed`` line carrying the same nonce and
reports the processor's receipt lag (check ``canary.processed``). Kinesis, Firehose and
cross-account destinations are not followed (their consumer logs elsewhere): the check says so.

``--canary-member-role ARN`` (organization trails) also makes a canary call from a member account
through that role: a ``PutMetricFilter`` on a log group that does not exist (nothing is created
or changed; CloudTrail records the failed call), so the member-account stream ``o-<orgid>_...`` is
proven too.

``apply --wait`` polls ``GetTrailStatus`` after ``UpdateTrail`` until
``LatestCloudWatchLogsDeliveryTime`` advances past the apply, or a delivery error appears
(aws-facts trap 19), bounded by ``--wait-timeout``.

Clock, sleep and progress output are injected so every wait is tested instantly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from handlers.canary import CANARY_FILTER_PREFIX, CANARY_METRIC, canary_filter
from setup.aws import AwsClients, clients_for_role
from setup.errors import error_code, error_message
from setup.verify import FAIL, PASS, WARN, CheckResult
from setup.wiring.models import Target

CANARY_EVENTS = ("PutMetricFilter",)    # the processor recognises it (handlers/canary.py)
OBSERVED = "canary_observed"            # the processor's log message for a canary record
# CloudTrail "typically delivers events to your log group within an average of about 5 minutes of
# an API call. This time is not guaranteed" (CloudTrail User Guide, "Sending events to CloudWatch
# Logs"): the canary waits 15 minutes for its record by default.
DEFAULT_TIMEOUT = 900.0
# Then the subscription: "Log events are sent to the receiving resource soon after being ingested,
# usually less than three minutes" (CloudWatch Logs User Guide, "Real-time processing of log data
# with subscriptions", https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/Subscriptions.html).
# After the record is found the processor gets those 3 minutes plus 2 for its own run and for its
# canary_observed line to be ingested and searchable (--canary-processor-wait).
SUBSCRIPTION_DELIVERY_SECONDS = 180
DEFAULT_PROCESSOR_WAIT = SUBSCRIPTION_DELIVERY_SECONDS + 120.0
DEFAULT_WAIT_TIMEOUT = 900.0
DEFAULT_MAX_AGE = 7200.0
FIRST_INTERVAL, MAX_INTERVAL, BACKOFF = 5.0, 30.0, 1.5
LOOKBACK_SECONDS = 120                  # records of the call can carry a slightly earlier eventTime
ERROR_SETTLE_SECONDS = 120.0            # a delivery error already present before apply: grace
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
# "The maximum number of metric filters that can be associated with a log group is 100"
# (CloudWatch Logs API Reference, PutMetricFilter; past it the call fails LimitExceededException).
MAX_METRIC_FILTERS = 100
DELETE_ATTEMPTS = 2                     # a connection error on the delete is tried once more
# The name of a filter this canary puts: new_nonce() (tw- and 32 hex), -member for the member probe
_CANARY_FILTER_NAME = re.compile(
    "^" + re.escape(CANARY_FILTER_PREFIX) + r"(tw-[0-9a-f]{32}(?:-member)?)$")


def _now() -> float:
    return time.time()


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _stderr(message: str) -> None:
    print(f"trailwatch: {message}", file=sys.stderr, flush=True)


def progress_for(args: argparse.Namespace) -> Callable[[str], None]:
    """Progress lines while waiting go to stderr only when it is a terminal, and never with
    --no-progress (logs and pipes get the result, not the ticks)."""
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        return lambda message: None
    return _stderr


# ----------------------------------------------------------------------------------- CLI flags

def duration(value: str) -> float:
    """``7200``, ``90m``, ``2h``, ``1d`` -> seconds (argparse type)."""
    m = _DURATION.match(value)
    if not m:
        raise argparse.ArgumentTypeError(f"a duration looks like 7200, 90m, 2h or 1d, not {value!r}")
    n = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if n <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return n


def add_arguments(parser: argparse.ArgumentParser, apply: bool = False) -> None:
    """The canary/freshness flags of ``verify`` and ``apply`` (contract names)."""
    g = parser.add_argument_group("end-to-end proof")
    g.add_argument("--canary", action="store_true",
                   help=f"make one harmless write call (put a metric filter {CANARY_FILTER_PREFIX}"
                        "<nonce> that matches nothing on the log group, then delete it), wait for "
                        "its CloudTrail record to arrive in the "
                        "log group and for the processor to log it (checks canary.delivered, "
                        "canary.processed)")
    g.add_argument("--canary-timeout", type=duration, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="how long to wait for the canary record (default 900; CloudTrail "
                        "delivers in about 5 min on average, not guaranteed)")
    g.add_argument("--canary-processor-wait", type=duration, default=DEFAULT_PROCESSOR_WAIT,
                   metavar="SECONDS", help="after the record arrived, how long to wait for the "
                   f"processor's {OBSERVED} line (default {DEFAULT_PROCESSOR_WAIT:.0f}; CloudWatch "
                   "Logs sends subscribed events usually in less than 3 min)")
    g.add_argument("--canary-member-role", metavar="ARN",
                   help="organization trails: also make a canary call from a member account "
                        "through this role (proves the o-<orgid>_* member streams)")
    g.add_argument("--max-delivery-age", type=duration, default=DEFAULT_MAX_AGE,
                   metavar="DURATION", help="LatestCloudWatchLogsDeliveryTime older than this is "
                   "a FAIL (default 2h; older than 20 min is a WARN); e.g. 7200, 90m, 2h")
    if apply:
        g.add_argument("--wait", action="store_true",
                       help="after UpdateTrail, poll GetTrailStatus until the CloudWatch Logs "
                            "delivery time advances past the apply or a delivery error appears")
        g.add_argument("--wait-timeout", type=duration, default=DEFAULT_WAIT_TIMEOUT,
                       metavar="SECONDS", help="bound for --wait (default 900)")


def context_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :class:`setup.verify.Context` from the parsed flags."""
    return {"max_delivery_age": dt.timedelta(seconds=getattr(args, "max_delivery_age",
                                                             DEFAULT_MAX_AGE)),
            "cis_requested": bool(getattr(args, "cis_alarms", False))}


def extra_checks(clients: AwsClients, target: Target, args: argparse.Namespace) -> list[CheckResult]:
    """The canary checks when ``--canary`` was given (after the read-only checks)."""
    if not getattr(args, "canary", False):
        return []
    return Canary(clients, target, timeout=args.canary_timeout,
                  member_role_arn=getattr(args, "canary_member_role", None),
                  processor_wait=getattr(args, "canary_processor_wait", DEFAULT_PROCESSOR_WAIT),
                  progress=progress_for(args)).run()


# ----------------------------------------------------------------------------------- helpers

def _epoch(value: Any) -> float | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def _event_time(record: dict[str, Any]) -> float | None:
    raw = record.get("eventTime")
    if not isinstance(raw, str):
        return None
    try:
        t = dt.datetime.fromisoformat(raw)
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)).timestamp()


def new_nonce() -> str:
    return f"tw-{uuid.uuid4().hex}"


def is_canary_record(record: dict[str, Any], nonce: str) -> bool:
    """CloudTrail's record of this canary's call: its metric filter, by exact name (a member
    probe's nonce extends the main one, so a substring would not do)."""
    if record.get("eventName") not in CANARY_EVENTS:
        return False
    params = record.get("requestParameters")
    return isinstance(params, dict) and params.get("filterName") == CANARY_FILTER_PREFIX + nonce


def is_leftover_canary_filter(mf: dict[str, Any]) -> bool:
    """A metric filter (DescribeMetricFilters' shape) that is exactly one this canary puts: its
    name (:data:`_CANARY_FILTER_NAME`), pattern and single metric, as :func:`canary_filter`
    makes them. Only such a filter is ever deleted as an earlier run's leftover."""
    m = _CANARY_FILTER_NAME.match(str(mf.get("filterName", "")))
    if not m:
        return False
    expected = canary_filter(m.group(1))
    transforms = mf.get("metricTransformations")
    if mf.get("filterPattern") != expected["filterPattern"] or not isinstance(transforms, list) \
            or len(transforms) != 1 or not isinstance(transforms[0], dict):
        return False
    t = transforms[0]
    return all(t.get(k) == v for k, v in CANARY_METRIC.items()) and not t.get("dimensions") \
        and t.get("defaultValue") is None and t.get("unit") in (None, "None")


@dataclass
class Found:
    record: dict[str, Any]
    stream: str
    delivered: float           # the log event's timestamp: CloudTrail's delivery time
    found: float               # when the canary saw it


@dataclass
class Probe:
    """One canary call: where it was made and the stream its record must reach."""
    label: str                 # "account 111122223333" / "member account ..."
    nonce: str
    called: float
    call_error: str = ""       # the call itself failed in a way that means no record
    call_remediation: str = ""  # what to do about call_error when it is not a permission
    left_behind: list[dict[str, Any]] = field(default_factory=list)  # filters not deleted
    found: Found | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- canary

class Canary:
    def __init__(self, clients: AwsClients, target: Target, timeout: float = DEFAULT_TIMEOUT,
                 clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] | None = None,
                 progress: Callable[[str], None] | None = None, nonce: str | None = None,
                 member_role_arn: str | None = None,
                 processor_wait: float = DEFAULT_PROCESSOR_WAIT) -> None:
        self.clients = clients
        self.processor_wait = processor_wait
        self.target = target
        self.timeout = timeout
        self.clock = clock or _now
        self.sleep = sleep or _sleep
        self.progress = progress or _stderr
        self.nonce = nonce or new_nonce()
        self.member_role_arn = member_role_arn
        self.logs = clients.client("logs", target.region)

    # -------------------------------------------------------------- the call
    def _delete_command(self, group: str, name: str) -> str:
        return (f"aws logs delete-metric-filter --log-group-name {shlex.quote(group)} "
                f"--filter-name {shlex.quote(name)} --region {self.target.region}")

    def _delete(self, logs: Any, group: str, name: str, probe: Probe, where: str = "") -> None:
        """Delete one canary filter; on failure record it on the probe (never raise)."""
        error = ""
        for _ in range(DELETE_ATTEMPTS):
            try:
                logs.delete_metric_filter(logGroupName=group, filterName=name)
                return
            except ClientError as e:
                if error_code(e) == "ResourceNotFoundException":
                    return                              # already gone
                error = f"{error_code(e)}: {error_message(e)}"
                break                                   # refused: asking again will not help
            except BotoCoreError as e:                  # connection / timeout: try once more
                error = f"{type(e).__name__}: {e}"
        left = {"filter_name": name, "log_group": group, "error": error,
                "delete_command": self._delete_command(group, name)}
        if where:
            left["account"] = where
        probe.left_behind.append(left)
        self.progress(f"canary: could not delete the metric filter {name} from {group} "
                      f"({error}); delete it by hand: {left['delete_command']}")

    def _sweep(self, group: str, probe: Probe) -> None:
        """Delete canary filters earlier runs left on ``group``: only those of exactly the
        canary's shape (:func:`is_leftover_canary_filter`); any other filter is never touched."""
        kwargs: dict[str, Any] = {"logGroupName": group, "filterNamePrefix": CANARY_FILTER_PREFIX}
        leftovers: list[str] = []
        try:
            for _ in range(20):
                page = self.logs.describe_metric_filters(**kwargs)
                leftovers += [f["filterName"] for f in page.get("metricFilters", [])
                              if is_leftover_canary_filter(f)]
                if not page.get("nextToken"):
                    break
                kwargs["nextToken"] = page["nextToken"]
        except (ClientError, BotoCoreError) as e:      # the canary itself still runs
            probe.extra["earlier_filters_not_checked"] = (
                f"{error_code(e)}: {error_message(e)}" if isinstance(e, ClientError)
                else f"{type(e).__name__}: {e}")
            return
        for name in leftovers:
            before = len(probe.left_behind)
            self._delete(self.logs, group, name, probe)
            if len(probe.left_behind) == before:
                probe.extra.setdefault("removed_earlier_filters", []).append(name)

    def call(self) -> Probe:
        group = self.target.log_group
        probe = Probe(f"account {self.target.account}", self.nonce, self.clock())
        spec = canary_filter(self.nonce)
        self._sweep(group, probe)
        refused = False
        try:
            self.logs.put_metric_filter(logGroupName=group, **spec)
        except ClientError as e:
            refused = True                      # AWS refused: no filter was made
            probe.call_error = f"{error_code(e)}: {error_message(e)}"
            if error_code(e) == "LimitExceededException":
                probe.call_error = (
                    f"the log group {group} already has the maximum number of metric filters "
                    f"(CloudWatch Logs allows {MAX_METRIC_FILTERS} per log group), so the "
                    f"canary could not put its filter ({probe.call_error})")
                probe.call_remediation = (
                    f"{group} is at the CloudWatch Logs quota of {MAX_METRIC_FILTERS} metric "
                    f"filters per log group: remove one that is no longer used (list them: "
                    f"aws logs describe-metric-filters --log-group-name {shlex.quote(group)} "
                    f"--region {self.target.region}), or run `trailwatch verify` without "
                    "--canary; trailwatch never deletes a filter that is not its own canary")
        except BotoCoreError as e:              # the filter may exist (e.g. a read timeout)
            probe.call_error = f"{type(e).__name__}: {e}"
            probe.call_remediation = ("check the network path to CloudWatch Logs in "
                                      f"{self.target.region} and run the canary again")
        finally:
            if not refused:
                self._delete(self.logs, group, spec["filterName"], probe)
        return probe

    def member_call(self) -> Probe:
        assert self.member_role_arn
        nonce = f"{self.nonce}-member"
        member = self.member_role_arn.split(":")[4] if self.member_role_arn.count(":") >= 5 else "?"
        probe = Probe(f"member account {member}", nonce, self.clock())
        region = self.target.region
        try:
            mc = clients_for_role(self.clients, self.member_role_arn, region)
        except ClientError as e:
            probe.call_error = f"cannot assume {self.member_role_arn}: {error_code(e)}"
            return probe
        # A log group that does not exist: nothing changes; CloudTrail records the call anyway.
        # Should it exist after all, the filter is deleted again like the main probe's.
        logs = mc.client("logs", region)
        group, spec = f"{CANARY_FILTER_PREFIX}{nonce}", canary_filter(nonce)
        made = True
        try:
            logs.put_metric_filter(logGroupName=group, **spec)
        except ClientError as e:
            made = False
            if error_code(e) not in ("ResourceNotFoundException", "AccessDeniedException"):
                probe.call_error = f"{error_code(e)}: {error_message(e)}"
        except BotoCoreError as e:
            probe.call_error = f"{type(e).__name__}: {e}"
        finally:
            if made:
                self._delete(logs, group, spec["filterName"], probe, where=probe.label)
        return probe

    # -------------------------------------------------------------- polling
    def _search(self, group: str, nonce: str, since: float,
                accept: Callable[[dict[str, Any]], bool]) -> list[tuple[dict[str, Any], dict]]:
        kwargs: dict[str, Any] = {"logGroupName": group, "filterPattern": f'"{nonce}"',
                                  "startTime": int((since - LOOKBACK_SECONDS) * 1000)}
        out = []
        for _ in range(20):     # pages; the nonce is unique, so hits are few
            page = self.logs.filter_log_events(**kwargs)
            for ev in page.get("events", []):
                try:
                    doc = json.loads(ev.get("message", ""))
                except ValueError:
                    doc = {"message": ev.get("message", "")}
                if isinstance(doc, dict) and accept(doc):
                    out.append((doc, ev))
            if out or not page.get("nextToken"):
                break
            kwargs["nextToken"] = page["nextToken"]
        return out

    def _wait(self, what: str, deadline: float, attempt: Callable[[], bool]) -> bool:
        interval = FIRST_INTERVAL
        start = self.clock()
        while True:
            if attempt():
                return True
            now = self.clock()
            if now >= deadline:
                return False
            self.progress(f"canary: waiting for {what} ({now - start:.0f} s of "
                          f"{deadline - start:.0f} s)")
            self.sleep(min(interval, max(0.0, deadline - now)))
            interval = min(MAX_INTERVAL, interval * BACKOFF)

    def wait_delivered(self, probes: list[Probe], deadline: float) -> None:
        group = self.target.log_group

        def attempt() -> bool:
            for p in probes:
                if p.found or p.call_error:
                    continue
                hits = self._search(group, p.nonce, p.called,
                                    lambda doc, n=p.nonce: is_canary_record(doc, n))
                if hits:
                    doc, ev = hits[0]
                    p.found = Found(doc, ev.get("logStreamName", "?"),
                                    ev.get("timestamp", 0) / 1000.0, self.clock())
            return all(p.found or p.call_error for p in probes)
        self._wait("the canary's CloudTrail record in " + group, deadline, attempt)

    # -------------------------------------------------------------- checks
    def run(self) -> list[CheckResult]:
        self.progress(f"canary: putting the metric filter {CANARY_FILTER_PREFIX}{self.nonce} on "
                      f"{self.target.log_group} (and deleting it)")
        probes = [self.call()]
        if self.member_role_arn:
            probes.append(self.member_call())
        deadline = probes[0].called + self.timeout
        self.wait_delivered(probes, deadline)
        delivered = self.delivered_result(probes)
        processed = self.processed_result(probes[0], deadline)
        return [delivered, processed]

    def timings(self, p: Probe) -> dict[str, Any]:
        out: dict[str, Any] = {"account": p.label, "nonce": p.nonce, "called_at": _iso(p.called)}
        if p.found:
            et = _event_time(p.found.record)
            out.update({
                "stream": p.found.stream,
                "event_time": _iso(et),
                "delivered_at": _iso(p.found.delivered),
                "found_at": _iso(p.found.found),
                "delivery_lag_seconds": None if et is None else round(p.found.delivered - et, 3),
                "found_after_seconds": round(p.found.found - p.called, 3),
            })
        return out

    def _delivery_error(self) -> str:
        try:
            status = self.clients.client("cloudtrail", self.target.region).get_trail_status(
                Name=self.target.trail.arn)
        except ClientError:
            return ""
        return status.get("LatestCloudWatchLogsDeliveryError") or ""

    def delivered_result(self, probes: list[Probe]) -> CheckResult:
        details: dict[str, Any] = {"timeout_seconds": self.timeout,
                                   "probes": [self.timings(p) for p in probes]}
        left = [entry for p in probes for entry in p.left_behind]
        removed = [n for p in probes for n in p.extra.get("removed_earlier_filters", [])]
        if removed:
            details["removed_earlier_filters"] = removed
        unchecked = [p.extra["earlier_filters_not_checked"] for p in probes
                     if "earlier_filters_not_checked" in p.extra]
        if unchecked:
            details["earlier_filters_not_checked"] = unchecked[0]
        left_note, left_fix = "", ""
        if left:
            details["left_behind"] = left
            left_note = ("; metric filter(s) left behind, not deleted: " + ", ".join(
                f"{e['filter_name']} on {e['log_group']} ({e['error']})" for e in left))
            left_fix = ("; delete what was left behind: " + "; ".join(
                e["delete_command"] + (f" (in {e['account']})" if e.get("account") else "")
                for e in left) + " (allow logs:DeleteMetricFilter)")
        bad_call = [p for p in probes if p.call_error]
        if bad_call:
            p = bad_call[0]
            fix = p.call_remediation or (
                "allow logs:PutMetricFilter and logs:DeleteMetricFilter on "
                f"{self.target.log_group_arn_bare} (and sts:AssumeRole for --canary-member-role)")
            return CheckResult("canary.delivered", FAIL, f"the canary call in {p.label} failed: "
                               f"{p.call_error}{left_note}", fix + left_fix, details=details)
        missing = [p for p in probes if not p.found]
        if missing:
            err = self._delivery_error()
            what = "; ".join(f"{p.label} (nonce {p.nonce})" for p in missing)
            member = any(p is not probes[0] for p in missing)
            member_acct = (self.member_role_arn or "").split(":")[4] \
                if (self.member_role_arn or "").count(":") >= 5 else "<account>"
            stream = (f"{self.target.org_id or 'o-<orgid>'}_{member_acct}_CloudTrail_"
                      f"{self.target.region}" if member else
                      f"{self.target.account}_CloudTrail_{self.target.region}")
            return CheckResult(
                "canary.delivered", FAIL,
                f"no CloudTrail record of the canary call from {what} reached "
                f"{self.target.log_group} within {self.timeout:.0f} s (expected stream {stream}*)"
                + (f"; CloudTrail reports: {err}" if err else "") + left_note,
                "check trail.logging, trail.management_events, role.stream_policy and "
                "delivery.error above" + ("; the role's policy needs the o-<orgid>_* stream "
                                          "resource for member accounts" if member else "")
                + "; or raise --canary-timeout" + left_fix, details=details)
        parts = []
        for p in probes:
            t = self.timings(p)
            parts.append(f"{p.label}: eventTime {t['event_time']} -> delivered "
                         f"+{t['delivery_lag_seconds']} s -> found {t['found_after_seconds']} s "
                         f"after the call, stream {t['stream']}")
        if left:
            return CheckResult("canary.delivered", WARN, "; ".join(parts) + left_note,
                               left_fix[2:], details=details)
        return CheckResult("canary.delivered", PASS, "; ".join(parts), details=details)

    # -------------------------------------------------------------- processor
    def _processors(self) -> tuple[list[tuple[str, str]], list[str]]:
        """([(filter name, function ARN) same-account Lambda], [why others are not followed])."""
        try:
            subs = self.logs.describe_subscription_filters(
                logGroupName=self.target.log_group).get("subscriptionFilters", [])
        except ClientError as e:
            return [], [f"DescribeSubscriptionFilters failed: {error_code(e)}"]
        lambdas, skipped = [], []
        for s in subs:
            dest = s.get("destinationArn", "")
            parts = dest.split(":")
            if ":lambda:" in dest and len(parts) > 4 and parts[4] == self.target.account:
                lambdas.append((s.get("filterName", "?"), dest))
            elif ":lambda:" in dest:
                skipped.append(f"{s.get('filterName')} -> {dest} is in another account")
            else:
                kind = ("a Kinesis stream" if ":kinesis:" in dest else "a Firehose stream"
                        if ":firehose:" in dest else "a CloudWatch Logs destination "
                        "(cross-account)" if ":destination:" in dest else dest)
                skipped.append(f"{s.get('filterName')} -> {kind}: the consumer logs in its own "
                               "account; look there for canary_observed or the CanaryLag metric")
        if not subs:
            skipped.append("the log group has no subscription filter: nothing processes it")
        return lambdas, skipped

    def _function_log_group(self, function_arn: str) -> str:
        name = function_arn.split(":")[6] if function_arn.count(":") >= 6 else function_arn
        try:
            cfg = self.clients.client("lambda", self.target.region).get_function_configuration(
                FunctionName=function_arn)
            return (cfg.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{name}"
        except ClientError:
            return f"/aws/lambda/{name}"

    def processed_result(self, probe: Probe, deadline: float) -> CheckResult:
        cid = "canary.processed"
        if not probe.found:
            return CheckResult(cid, WARN, "not checked: the canary record was not delivered "
                               "(see canary.delivered)", "fix canary.delivered first")
        lambdas, skipped = self._processors()
        if not lambdas:
            return CheckResult(cid, WARN, "processor not checked: " + "; ".join(skipped),
                               "run `trailwatch verify --canary` in the account of the consumer, "
                               "or watch its Trailwatch/CanaryLag metric",
                               details={"not_checked": skipped})
        _, function = lambdas[0]
        group = self._function_log_group(function)
        # The processor runs after the subscription delivers the record (usually < 3 min): give
        # it processor_wait past the record's arrival, however little of the timeout is left.
        deadline = max(deadline, probe.found.found + self.processor_wait)
        seen: list[tuple[dict[str, Any], dict]] = []

        def attempt() -> bool:
            try:
                seen.extend(self._search(group, probe.nonce, probe.called,
                                         lambda doc: doc.get("message") == OBSERVED
                                         and doc.get("nonce") == probe.nonce))
            except ClientError as e:
                if error_code(e) != "ResourceNotFoundException":
                    raise
            return bool(seen)
        self._wait(f"the processor's {OBSERVED} line in {group}", deadline, attempt)
        details: dict[str, Any] = {"function": function, "function_log_group": group}
        if not seen:
            waited = deadline - probe.found.found
            return CheckResult(cid, FAIL, f"{function} did not log {OBSERVED} for nonce "
                               f"{probe.nonce} in {group} within {waited:.0f} s of the record's "
                               "arrival although it was delivered",
                               "check subscription.filters (the filter and the function's invoke "
                               "permission), the function's errors and its failure queue; or "
                               "raise --canary-processor-wait", details=details)
        doc, ev = seen[0]
        logged = ev.get("timestamp", 0) / 1000.0
        details.update({
            "logged_at": _iso(logged),
            "receipt_lag_seconds": doc.get("receipt_lag_seconds"),
            "delivery_lag_seconds": doc.get("delivery_lag_seconds"),
            "end_to_end_seconds": round(logged - (_event_time(probe.found.record) or
                                                  probe.called), 3),
        })
        note = f"; {'; '.join(skipped)}" if skipped else ""
        return CheckResult(cid, PASS, f"{function} logged {OBSERVED} in {group}: receipt lag "
                           f"{doc.get('receipt_lag_seconds')} s after delivery, "
                           f"{details['end_to_end_seconds']} s after eventTime{note}",
                           details=details)


# ----------------------------------------------------------------------------------- apply --wait

def wait_for_delivery(clients: AwsClients, target: Target, since: float,
                      timeout: float = DEFAULT_WAIT_TIMEOUT,
                      clock: Callable[[], float] | None = None,
                      sleep: Callable[[float], None] | None = None,
                      progress: Callable[[str], None] | None = None) -> CheckResult:
    """Poll GetTrailStatus (home region, trail ARN) until LatestCloudWatchLogsDeliveryTime passes
    ``since`` (PASS) or a delivery error appears (FAIL with the error), at most ``timeout`` s.

    An error already reported on the first poll may be stale (from before the apply): it fails
    only if it is still there after ERROR_SETTLE_SECONDS without the delivery time advancing.
    """
    clock, sleep, progress = clock or _now, sleep or _sleep, progress or _stderr
    ct = clients.client("cloudtrail", target.region)
    cid = "delivery.after_apply"
    start = clock()
    deadline = start + timeout
    first_error: str | None = None
    interval = FIRST_INTERVAL
    last: float | None = None
    while True:
        try:
            status = ct.get_trail_status(Name=target.trail.arn)
        except ClientError as e:
            return CheckResult(cid, FAIL, f"GetTrailStatus failed: {error_code(e)}",
                               "allow cloudtrail:GetTrailStatus")
        err = status.get("LatestCloudWatchLogsDeliveryError") or ""
        last = _epoch(status.get("LatestCloudWatchLogsDeliveryTime"))
        now = clock()
        if first_error is None:
            first_error = err
        advanced = last is not None and last > since
        details = {"since": _iso(since), "latest_delivery": _iso(last),
                   "waited_seconds": round(now - start, 3)}
        if err and (err != first_error or now - start >= ERROR_SETTLE_SECONDS or advanced):
            return CheckResult(cid, FAIL, f"CloudTrail reports a CloudWatch Logs delivery error "
                               f"after the apply: {err}", "check role.trust and "
                               "role.stream_policy; for organization trails the policy needs the "
                               "o-<orgid>_* stream resource", details=details)
        if advanced and not err:
            return CheckResult(cid, PASS, f"CloudTrail delivered to CloudWatch Logs at "
                               f"{_iso(last)}, {last - since:.0f} s after the apply",
                               details=details)
        if now >= deadline:
            return CheckResult(cid, FAIL, f"LatestCloudWatchLogsDeliveryTime did not advance past "
                               f"the apply within {timeout:.0f} s (last: {_iso(last) or 'never'})",
                               "check trail.logging and delivery.error; first deliveries can "
                               "take longer: re-run `trailwatch verify` or raise --wait-timeout",
                               details=details)
        progress(f"waiting for CloudTrail to deliver to CloudWatch Logs ({now - start:.0f} s of "
                 f"{timeout:.0f} s)")
        sleep(min(interval, max(0.0, deadline - now)))
        interval = min(MAX_INTERVAL, interval * BACKOFF)
