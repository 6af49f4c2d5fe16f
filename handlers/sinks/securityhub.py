"""Security Hub sink: alerts as ASFF findings through ``BatchImportFindings``.

Enabled by ``SECURITY_HUB_FINDINGS=enabled`` (contract name). Findings use the account's default
product ARN (``arn:<partition>:securityhub:<region>:<account>:product/<account>/default``), so they
must carry the *calling* account as ``AwsAccountId``; the account the event happened in is in
``Resources`` and ``ProductFields``. ``Id`` is the alert id, so a re-import (Lambda retry, redelivered
event) updates the finding instead of adding one.

Limits enforced here (moto does not): at most 100 findings and 6 MB per request, 240 KB per finding;
Title 256 and Description 1,024 characters; Remediation text 512; at most 50 ``ProductFields`` with
keys of at most 128 and values of at most 2,048 characters; at most 32 ``Resources``.
Errors are classified. Permanent, never retried, logged and counted by the processor
(``AlertsRejected``) without failing the invocation: ``InvalidAccessException`` (Security Hub is
not enabled in this Region, or the account may not import) and ``InvalidInputException`` /
``AccessDeniedException`` on the call, and ``FailedFindings`` with ``InvalidInput``. Any other
failure (``InternalException``, ``LimitExceededException``, a timeout, other FailedFindings
codes) is retried with backoff, then returned undelivered like any other sink's.
Resource Regions are never longer than ASFF's 16 characters, whatever a record's ARNs say.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import orjson

from handlers.alerts import principal_of, routing_keys
from handlers.clients import default_client_factory
from handlers.sinks.base import ClientFactory, _Lazy, _RetryingSink, pack

ENV_FLAG = "SECURITY_HUB_FINDINGS"
SCHEMA_VERSION = "2018-10-08"
MAX_FINDINGS = 100
MAX_FINDING_BYTES = 240 * 1000         # "240 KB"; the decimal reading is the conservative one
MAX_REQUEST_BYTES = 6 * 1000 * 1000    # "6 MB"
MAX_TITLE = 256
MAX_DESCRIPTION = 1024
MAX_RECOMMENDATION = 512
MAX_PRODUCT_FIELDS = 50
MAX_FIELD_KEY = 128
MAX_FIELD_VALUE = 2048
MAX_RESOURCES = 32
SEVERITY_LABELS = {"INFO": "INFORMATIONAL", "LOW": "LOW", "MEDIUM": "MEDIUM", "HIGH": "HIGH",
                   "CRITICAL": "CRITICAL"}
CIS_TYPE = "Software and Configuration Checks/Industry and Regulatory Standards/" \
           "CIS AWS Foundations Benchmark"
# ASFF types for MITRE ATT&CK tactic ids: the TTPs namespace's categories follow ATT&CK's tactics;
# exfiltration is an ASFF effect. Tactics ASFF has no category for (Impact, Reconnaissance,
# Resource Development) add no type.
TTP_TYPES = {"TA0001": "TTPs/Initial Access", "TA0002": "TTPs/Execution",
             "TA0003": "TTPs/Persistence", "TA0004": "TTPs/Privilege Escalation",
             "TA0005": "TTPs/Defense Evasion", "TA0006": "TTPs/Credential Access",
             "TA0007": "TTPs/Discovery", "TA0008": "TTPs/Lateral Movement",
             "TA0009": "TTPs/Collection", "TA0011": "TTPs/Command and Control",
             "TA0010": "Effects/Data Exfiltration"}
# Resource types Security Hub knows, by (ARN service, resource prefix); anything else is "Other".
_RESOURCE_TYPES = {("iam", "role"): "AwsIamRole", ("iam", "user"): "AwsIamUser",
                   ("iam", "group"): "AwsIamGroup", ("iam", "policy"): "AwsIamPolicy",
                   ("kms", "key"): "AwsKmsKey", ("cloudtrail", "trail"): "AwsCloudTrailTrail",
                   ("ec2", "security-group"): "AwsEc2SecurityGroup",
                   ("ec2", "instance"): "AwsEc2Instance", ("lambda", "function"): "AwsLambdaFunction"}


_ACCOUNT = re.compile(r"\d{12}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
MAX_REGION = 16                        # ASFF Resource.Region: 1-16 characters (botocore model)


def _region(value: Any, fallback: str) -> str:
    """A Region name from the record only if it looks like one and fits ASFF (record fields are
    untrusted: an over-long Region makes Security Hub refuse the whole finding)."""
    return value if isinstance(value, str) and len(value) <= MAX_REGION and \
        _REGION.fullmatch(value) else fallback


def _s(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else \
        orjson.dumps(value).decode()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _resource_type(arn: str) -> str:
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return "Other"
    service, resource = parts[2], parts[5]
    if service == "s3" and resource and "/" not in resource:
        return "AwsS3Bucket"
    if service in ("sns", "sqs") and resource and "/" not in resource:
        return "AwsSnsTopic" if service == "sns" else "AwsSqsQueue"
    prefix = resource.replace(":", "/").split("/")[0]
    return _RESOURCE_TYPES.get((service, prefix), "Other")


def finding_types(rule: dict[str, Any], kind: str) -> list[str]:
    """CIS checks under the industry-standards namespace, tamper/threat rules under TTPs."""
    types: list[str] = []
    if rule.get("cis"):
        types.append(CIS_TYPE)
    for tactic in (rule.get("attack") or {}).get("tactics") or ():
        kind_ = TTP_TYPES.get(tactic)
        if kind_ and kind_ not in types:
            types.append(kind_)
    if rule.get("source") == "tamper" and not any(t.startswith("TTPs/") for t in types):
        types.append("TTPs/Defense Evasion")
    if not types:
        types.append("Software and Configuration Checks/AWS Security Best Practices"
                     if kind != "rule_match" else "Unusual Behaviors/User")
    return types


def _iso(value: Any, fallback: str) -> str:
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return fallback
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
    return fallback


class SecurityHubSink(_RetryingSink):
    """``publish(alerts) -> undelivered`` into Security Hub as ASFF findings."""

    name = "securityhub"
    permanent_call_errors = frozenset({"InvalidAccessException", "InvalidInputException",
                                       "AccessDeniedException"})
    permanent_entry_errors = frozenset({"InvalidInput"})

    def __init__(self, client_factory: ClientFactory = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep, account_id: str | None = None,
                 region: str | None = None, partition: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(sleep)
        self.client = _Lazy("securityhub", client_factory)
        self._sts = _Lazy("sts", client_factory)
        self._account, self._region, self._partition = account_id, region, partition
        self.clock = clock

    # The calling account and Region, looked up once (first publish) unless given.
    def _identity(self) -> tuple[str, str, str]:
        if self._account is None or self._partition is None:
            arn = self._sts().get_caller_identity()["Arn"]
            parts = arn.split(":")
            self._partition = self._partition or parts[1]
            self._account = self._account or parts[4]
        if self._region is None:
            self._region = self.client().meta.region_name
        return self._account, self._region, self._partition  # type: ignore[return-value]

    @property
    def product_arn(self) -> str:
        account, region, partition = self._identity()
        return f"arn:{partition}:securityhub:{region}:{account}:product/{account}/default"

    def finding(self, alert: dict[str, Any]) -> dict[str, Any]:
        account, region, partition = self._identity()
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        now_iso = now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        rule = alert.get("rule") or {}
        event = alert.get("event") if isinstance(alert.get("event"), dict) else {}
        agg = alert.get("aggregate") or {}
        keys = routing_keys(alert)
        first = _iso(agg.get("first_event_time") or event.get("eventTime"), now_iso)
        last = _iso(agg.get("last_event_time") or event.get("eventTime"), now_iso)
        severity = {"Label": SEVERITY_LABELS.get(str(rule.get("severity")), "MEDIUM"),
                    "Original": _clip(_s(rule.get("severity")) or "MEDIUM", 64)}
        types = finding_types(rule, str(alert.get("kind")))
        remediation = _s(alert.get("remediation"))
        recommendation: dict[str, str] = {"Text": _clip(remediation or "See the rule's runbook.",
                                                        MAX_RECOMMENDATION)}
        if remediation.startswith("https://") and " " not in remediation:
            recommendation["Url"] = remediation
        event_account = keys.get("account")
        if not (event_account and _ACCOUNT.fullmatch(event_account)):
            event_account = None
        event_region = _region(keys.get("region"), region)
        resources = [{"Type": _resource_type(arn), "Id": arn, "Partition": partition,
                      "Region": _region((arn.split(":") + [""] * 4)[3], event_region)}
                     for arn in (alert.get("resources") or ())[:MAX_RESOURCES - 1]
                     if isinstance(arn, str)]
        if event_account or not resources:
            resources.append({"Type": "AwsAccount",
                              "Id": f"AWS::::Account:{event_account or account}",
                              "Partition": partition, "Region": event_region})
        finding = {
            "SchemaVersion": SCHEMA_VERSION,
            "Id": alert["alert_id"],
            "ProductArn": self.product_arn,
            "ProductName": "trailwatch",
            "CompanyName": "trailwatch",
            "GeneratorId": _clip(f"trailwatch/{keys.get('rule_id', alert.get('kind'))}", 512),
            "AwsAccountId": account,
            "Region": region,
            "Types": types,
            "FirstObservedAt": first,
            "LastObservedAt": last,
            "CreatedAt": first,
            "UpdatedAt": now_iso,
            "Severity": severity,
            "FindingProviderFields": {"Severity": severity, "Types": types},
            "Title": _clip(_s(alert.get("title")) or _s(rule.get("title")) or "trailwatch alert",
                           MAX_TITLE),
            "Description": _clip(_s(alert.get("description")) or _s(rule.get("title")) or "-",
                                 MAX_DESCRIPTION),
            "Remediation": {"Recommendation": recommendation},
            "ProductFields": self.product_fields(alert),
            "Resources": resources,
            "RecordState": "ACTIVE",
        }
        return finding

    @staticmethod
    def product_fields(alert: dict[str, Any]) -> dict[str, str]:
        """The source event summary, flattened to at most 50 string pairs within ASFF's limits."""
        event = alert.get("event") if isinstance(alert.get("event"), dict) else {}
        rule = alert.get("rule") or {}
        fields: dict[str, str] = {}

        def put(key: str, value: Any) -> None:
            text = _s(value)
            if text and len(fields) < MAX_PRODUCT_FIELDS:
                fields[key[:MAX_FIELD_KEY]] = _clip(text, MAX_FIELD_VALUE)

        put("trailwatch/alert_id", alert.get("alert_id"))
        put("trailwatch/kind", alert.get("kind"))
        put("trailwatch/schema", alert.get("schema"))
        put("trailwatch/rule_id", rule.get("id"))
        put("trailwatch/rule_source", rule.get("source"))
        put("trailwatch/cis", rule.get("cis"))
        attack = rule.get("attack") or {}
        put("trailwatch/attack_tactics", ",".join(attack.get("tactics") or ()))
        put("trailwatch/attack_techniques", ",".join(attack.get("techniques") or ()))
        put("trailwatch/expected_change", "true" if alert.get("expected_change") else "false")
        for k in ("count", "first_event_time", "last_event_time", "principal"):
            put(f"trailwatch/aggregate/{k}", (alert.get("aggregate") or {}).get(k))
        for k in ("eventID", "eventTime", "eventSource", "eventName", "eventType", "eventCategory",
                  "awsRegion", "recipientAccountId", "sourceIPAddress", "userAgent", "errorCode",
                  "errorMessage", "requestID", "sharedEventID", "readOnly", "vpcEndpointId",
                  "size_bytes", "count", "max_lag_seconds"):
            put(f"aws/cloudtrail/{k}", event.get(k))
        ui = event.get("userIdentity") if isinstance(event.get("userIdentity"), dict) else {}
        for k in ("type", "arn", "accountId", "principalId", "accessKeyId", "userName",
                  "invokedBy"):
            put(f"aws/cloudtrail/userIdentity/{k}", ui.get(k))
        sc = ui.get("sessionContext") if isinstance(ui.get("sessionContext"), dict) else {}
        put("aws/cloudtrail/sessionIssuer/arn", (sc.get("sessionIssuer") or {}).get("arn"))
        put("aws/cloudtrail/mfaAuthenticated", (sc.get("attributes") or {}).get("mfaAuthenticated"))
        put("aws/cloudtrail/sourceIdentity", sc.get("sourceIdentity"))
        for k in ("requestParameters", "responseElements"):
            put(f"aws/cloudtrail/{k}", event.get(k))
        put("trailwatch/principal", principal_of(event) if event else None)
        return fields

    def prepare(self, alerts: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], list[tuple[str, int]]]:
        entries: dict[str, Any] = {}
        sizes: list[tuple[str, int]] = []
        for alert in alerts:
            finding = self.finding(alert)
            size = len(orjson.dumps(finding))
            while size > MAX_FINDING_BYTES and finding["ProductFields"]:   # hostile records only:
                finding["ProductFields"].popitem()                        # least useful first
                size = len(orjson.dumps(finding))
            if size > MAX_FINDING_BYTES:      # then the resource list, down to the account
                finding["Resources"] = finding["Resources"][-1:]
                size = len(orjson.dumps(finding))
            entries[alert["alert_id"]] = finding
            sizes.append((alert["alert_id"], size))
        return entries, sizes

    def publish(self, alerts: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        if not alerts:
            return []
        entries, sizes = self.prepare(alerts)
        return self._deliver(entries, pack(sizes, MAX_FINDINGS, MAX_REQUEST_BYTES))

    def _send_batch(self, ids: list[str], entries: dict[str, Any]) -> list[tuple[str, str]]:
        resp = self.client().batch_import_findings(Findings=[entries[i] for i in ids])
        return [(f["Id"], f"{f.get('ErrorCode')}: {f.get('ErrorMessage', '')}")
                for f in resp.get("FailedFindings", [])]
