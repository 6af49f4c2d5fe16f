"""``trailwatch readiness``: are the log sources an incident responder needs switched on?

The sources are those of ``incident-response-log-sources.md``: CloudTrail (multi-Region,
management events, log file validation, CloudWatch Logs delivery), AWS Config ("not enabled by
default": recorder on, all resources, a delivery channel), S3 server access logs ("must be enabled
on a per bucket basis"), VPC flow logs ("must be enabled either at the VPC, subnet, or ENI level";
record versions 2-5) and WAF logs. Each finding is PASS / WARN / FAIL with the command that fixes
it (trailwatch's own where it has one).

Read-only. Reading is separate from judging: one task per (source, Region) and one per bucket,
run concurrently on pre-created clients (boto3 clients are thread-safe; creating them is not),
every list paginated, throttling retried by botocore's standard mode; a source that cannot be read
is a WARN that names the missing permission, never a crash.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from setup.errors import error_code, error_message
from setup.verify.checks import FAIL, PASS, WARN, CheckResult
from setup.wiring.flowlogs import record_version

MAX_WORKERS = 16
SHOW = 5     # names listed per finding


def _r(check: str, status: str, message: str, fix: str = "", region: str | None = None,
       **details: Any) -> CheckResult:
    return CheckResult(check, status, message, fix,
                       details={"region": region or "global", **details})


def _unreadable(check: str, region: str | None, e: Exception, action: str) -> CheckResult:
    code = error_code(e) if isinstance(e, ClientError) else type(e).__name__
    msg = error_message(e) if isinstance(e, ClientError) else str(e)
    return _r(check, WARN, f"could not read ({code}: {msg[:120]})",
              f"allow {action} to the credentials running readiness, then re-run", region)


def _names(items: list[str]) -> str:
    more = f" and {len(items) - SHOW} more" if len(items) > SHOW else ""
    return ", ".join(items[:SHOW]) + more


# ----------------------------------------------------------------------------------- CloudTrail

def cloudtrail(clients: Any, regions: list[str]) -> list[CheckResult]:
    """DescribeTrails in every Region (a single-Region trail is visible only in its own; a
    multi-Region or organization trail shows as a shadow everywhere), GetTrailStatus once per
    trail in its home Region."""
    out: list[CheckResult] = []
    trails: dict[str, dict[str, Any]] = {}
    covers: dict[str, list[str]] = {r: [] for r in regions}
    for region in regions:
        try:
            found = clients.client("cloudtrail", region).describe_trails(
                includeShadowTrails=True).get("trailList", [])
        except (ClientError, BotoCoreError) as e:
            out.append(_unreadable("cloudtrail.trail", region, e, "cloudtrail:DescribeTrails"))
            covers.pop(region)          # unknown, reported above: not a FAIL
            continue
        for t in found:
            trails[t["TrailARN"]] = t
            if t.get("IsMultiRegionTrail") or t.get("HomeRegion", region) == region:
                covers[region].append(t["TrailARN"])
    logging: list[dict[str, Any]] = []
    unknown: list[dict[str, Any]] = []
    for arn, t in trails.items():
        c = clients.client("cloudtrail", t.get("HomeRegion") or regions[0])
        try:
            on = bool(c.get_trail_status(Name=arn).get("IsLogging"))
        except (ClientError, BotoCoreError) as e:
            if t.get("IsOrganizationTrail") and isinstance(e, ClientError):
                # a member account sees the organization's trail but may not read its status
                out.append(_r("cloudtrail.organization_trail", WARN,
                              f"organization trail {t['Name']} ({arn.split(':')[4]}) covers this "
                              f"account; its status is not readable here ({error_code(e)})",
                              "check it from the management account: trailwatch verify --trail "
                              f"{arn}"))
                logging.append(t)
                continue
            out.append(_unreadable("cloudtrail.trail", None, e, "cloudtrail:GetTrailStatus"))
            unknown.append(t)       # may be logging: what it covers is a WARN, not a FAIL
            continue
        if on:
            logging.append(t)
    on_arns = {t["TrailARN"] for t in logging}
    unknown_arns = {t["TrailARN"] for t in unknown}
    multi = [t for t in logging if t.get("IsMultiRegionTrail")]
    unknown_multi = [t for t in unknown if t.get("IsMultiRegionTrail")]
    if multi:
        out.append(_r("cloudtrail.multi_region", PASS,
                      f"multi-Region trail(s) logging: {_names([t['Name'] for t in multi])}"))
    elif unknown_multi:
        out.append(_r("cloudtrail.multi_region", WARN,
                      "no multi-Region trail is known to be logging: the status of "
                      f"{_names([t['Name'] for t in unknown_multi])} could not be read "
                      "(cloudtrail.trail)", "see cloudtrail.trail, then re-run"))
    else:
        out.append(_r("cloudtrail.multi_region", FAIL,
                      "no multi-Region trail is logging: activity in other Regions is not "
                      "recorded beyond 90 days of event history",
                      "aws cloudtrail create-trail --name audit --s3-bucket-name BUCKET "
                      "--is-multi-region-trail --enable-log-file-validation && aws cloudtrail "
                      "start-logging --name audit"))
    for region, arns in covers.items():
        if not any(a in on_arns for a in arns) and any(a in unknown_arns for a in arns):
            out.append(_r("cloudtrail.region", WARN, "no trail covering this Region is known to "
                          "be logging: a covering trail's status could not be read",
                          "see cloudtrail.trail, then re-run", region))
        elif not any(a in on_arns for a in arns):
            out.append(_r("cloudtrail.region", FAIL, "no logging trail covers this Region",
                          "create a multi-Region trail (see cloudtrail.multi_region)", region))
    if not logging:
        return out
    best = multi or logging
    mgmt, lfv, cwl = [], [], []
    unread: list[CheckResult] = []
    for t in best:
        c = clients.client("cloudtrail", t.get("HomeRegion") or regions[0])
        try:
            if _management(c.get_event_selectors(TrailName=t["TrailARN"])):
                mgmt.append(t["Name"])
        except (ClientError, BotoCoreError) as e:
            unread.append(_unreadable("cloudtrail.management_events", None, e,
                                      "cloudtrail:GetEventSelectors"))
        if t.get("LogFileValidationEnabled"):
            lfv.append(t["Name"])
        if t.get("CloudWatchLogsLogGroupArn"):
            cwl.append(t["Name"])
    names = [t["Name"] for t in best]
    if unread and not mgmt:         # unknown, not a FAIL: one WARN under the check's id
        out.append(unread[0])
    else:
        out.append(_r("cloudtrail.management_events", PASS if mgmt else FAIL,
                      f"management events (read and write) recorded by {_names(mgmt)}" if mgmt
                      else f"no logging trail records all management events ({_names(names)})",
                      "" if mgmt else f"aws cloudtrail put-event-selectors --trail-name "
                      f"{names[0]} --event-selectors '[{{\"ReadWriteType\":\"All\","
                      "\"IncludeManagementEvents\":true}]'"))
    out.append(_r("cloudtrail.log_file_validation", PASS if lfv else WARN,
                  f"log file validation on for {_names(lfv)}" if lfv else
                  "log file validation is off: tampering with delivered log files would go "
                  "unnoticed", "" if lfv else f"aws cloudtrail update-trail --name {names[0]} "
                  "--enable-log-file-validation"))
    out.append(_r("cloudtrail.cloudwatch_logs", PASS if cwl else WARN,
                  f"delivered to CloudWatch Logs: {_names(cwl)}" if cwl else
                  "no trail delivers to CloudWatch Logs: no metric filters, alarms or "
                  "trailwatch alerts", "" if cwl else f"trailwatch apply --trail {names[0]}"))
    return out


def _management(sel: dict[str, Any]) -> bool:
    for s in sel.get("EventSelectors") or []:
        if s.get("IncludeManagementEvents", True) and s.get("ReadWriteType", "All") == "All":
            return True
    for a in sel.get("AdvancedEventSelectors") or []:
        fields = {f.get("Field"): f for f in a.get("FieldSelectors", [])}
        cat = fields.get("eventCategory", {})
        if "Management" in (cat.get("Equals") or []) and "readOnly" not in fields:
            return True
    return False


# ----------------------------------------------------------------------------------- Config

def config(clients: Any, region: str) -> list[CheckResult]:
    c = clients.client("config", region)
    try:
        recorders = c.describe_configuration_recorders().get("ConfigurationRecorders", [])
        status = {s["name"]: s for s in c.describe_configuration_recorder_status().get(
            "ConfigurationRecordersStatus", [])}
        channels = c.describe_delivery_channels().get("DeliveryChannels", [])
    except (ClientError, BotoCoreError) as e:
        return [_unreadable("config.recorder", region, e, "config:DescribeConfigurationRecorders, "
                            "config:DescribeConfigurationRecorderStatus, "
                            "config:DescribeDeliveryChannels")]
    fix_rec = ("aws configservice put-configuration-recorder --configuration-recorder "
               "name=default,roleARN=ROLE_ARN --recording-group allSupported=true,"
               "includeGlobalResourceTypes=true && aws configservice "
               "start-configuration-recorder --configuration-recorder-name default")
    if not recorders:
        return [_r("config.recorder", FAIL, "AWS Config has no configuration recorder (it is not "
                   "enabled by default): no history of who changed which resource", fix_rec,
                   region)]
    out = []
    on = [r["name"] for r in recorders if status.get(r["name"], {}).get("recording")]
    out.append(_r("config.recorder", PASS if on else FAIL,
                  f"recorder {on[0]} is recording" if on else
                  f"recorder {recorders[0]['name']} exists but is not recording",
                  "" if on else "aws configservice start-configuration-recorder "
                  f"--configuration-recorder-name {recorders[0]['name']}", region))
    group = recorders[0].get("recordingGroup") or {}
    all_res = group.get("allSupported", False)
    out.append(_r("config.all_resources", PASS if all_res else WARN,
                  "records all supported resource types" if all_res else
                  "records only selected resource types", "" if all_res else
                  "aws configservice put-configuration-recorder ... --recording-group "
                  "allSupported=true", region))
    out.append(_r("config.delivery_channel", PASS if channels else FAIL,
                  f"delivery channel to s3://{channels[0].get('s3BucketName')}" if channels else
                  "no delivery channel: configuration items are not delivered",
                  "" if channels else "aws configservice put-delivery-channel "
                  "--delivery-channel name=default,s3BucketName=BUCKET", region))
    return out


# ----------------------------------------------------------------------------------- VPC flow logs

def flow_logs(clients: Any, region: str) -> list[CheckResult]:
    ec2 = clients.client("ec2", region)
    try:
        vpcs = [v["VpcId"] for p in ec2.get_paginator("describe_vpcs").paginate()
                for v in p.get("Vpcs", [])]
        fls = [f for p in ec2.get_paginator("describe_flow_logs").paginate()
               for f in p.get("FlowLogs", [])]
    except (ClientError, BotoCoreError) as e:
        return [_unreadable("vpc.flow_logs", region, e, "ec2:DescribeVpcs, ec2:DescribeFlowLogs")]
    if not vpcs:
        return [_r("vpc.flow_logs", PASS, "no VPCs", region=region)]
    active = {}
    failing = []
    for f in fls:
        if f.get("FlowLogStatus", "ACTIVE") != "ACTIVE":
            continue
        if f.get("DeliverLogsStatus") == "FAILED":
            failing.append(f"{f['FlowLogId']} ({f.get('ResourceId')}: "
                           f"{f.get('DeliverLogsErrorMessage') or 'FAILED'})")
        active.setdefault(f.get("ResourceId"), []).append(f)
    without = [v for v in vpcs if v not in active]
    out = []
    if without:
        out.append(_r("vpc.flow_logs", FAIL,
                      f"{len(without)} of {len(vpcs)} VPC(s) without a VPC-level flow log: "
                      f"{_names(without)}",
                      f"trailwatch flow-logs apply --region {region} "
                      + " ".join(f"--vpc {v}" for v in without[:SHOW])
                      + " --to s3://BUCKET/flow-logs (or --all-vpcs)", region, vpcs=without))
    else:
        versions = sorted({record_version(f.get("LogFormat")) for v in vpcs for f in active[v]})
        out.append(_r("vpc.flow_logs", PASS,
                      f"all {len(vpcs)} VPC(s) have flow logs (record version "
                      f"{'/'.join(map(str, versions))})", region=region,
                      record_versions=versions))
    if failing:
        out.append(_r("vpc.flow_logs_delivery", FAIL, f"delivery failing: {_names(failing)}",
                      f"trailwatch flow-logs verify --region {region} --vpc ID --to DESTINATION "
                      "names the cause", region))
    return out


# ----------------------------------------------------------------------------------- WAF

def waf(clients: Any, region: str) -> list[CheckResult]:
    w = clients.client("wafv2", region)
    scopes = ["REGIONAL"] + (["CLOUDFRONT"] if region == "us-east-1" else [])
    acls: list[dict[str, Any]] = []
    try:
        for scope in scopes:
            kw: dict[str, Any] = {"Scope": scope, "Limit": 100}
            while True:
                page = w.list_web_acls(**kw)
                acls += page.get("WebACLs", [])
                if not page.get("NextMarker") or not page.get("WebACLs"):
                    break
                kw["NextMarker"] = page["NextMarker"]
    except (ClientError, BotoCoreError) as e:
        return [_unreadable("waf.logging", region, e, "wafv2:ListWebACLs")]
    if not acls:
        return [_r("waf.logging", PASS, "no WAF web ACLs", region=region)]
    unlogged = []
    for acl in acls:
        try:
            w.get_logging_configuration(ResourceArn=acl["ARN"])
        except (ClientError, BotoCoreError) as e:
            if isinstance(e, ClientError) and error_code(e) == "WAFNonexistentItemException":
                unlogged.append(acl["Name"])
                continue
            return [_unreadable("waf.logging", region, e, "wafv2:GetLoggingConfiguration")]
    if unlogged:
        return [_r("waf.logging", FAIL,
                   f"{len(unlogged)} of {len(acls)} web ACL(s) without logging: {_names(unlogged)}",
                   "aws wafv2 put-logging-configuration --logging-configuration "
                   "ResourceArn=WEB_ACL_ARN,LogDestinationConfigs=arn:aws:logs:REGION:ACCOUNT:"
                   "log-group:aws-waf-logs-NAME", region, web_acls=unlogged)]
    return [_r("waf.logging", PASS, f"all {len(acls)} web ACL(s) log requests", region=region)]


# ----------------------------------------------------------------------------------- S3

def s3_buckets(clients: Any, region: str) -> list[str]:
    s3 = clients.client("s3", region)
    names: list[str] = []
    if s3.can_paginate("list_buckets"):
        for page in s3.get_paginator("list_buckets").paginate():
            names += [b["Name"] for b in page.get("Buckets", [])]
    else:
        names = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    return names


def bucket_logging(clients: Any, region: str, bucket: str) -> bool | Exception:
    try:
        return "LoggingEnabled" in clients.client("s3", region).get_bucket_logging(Bucket=bucket)
    except (ClientError, BotoCoreError) as e:
        return e


def s3_verdict(results: dict[str, bool | Exception]) -> list[CheckResult]:
    if not results:
        return [_r("s3.access_logging", PASS, "no buckets")]
    off = sorted(b for b, v in results.items() if v is False)
    err = sorted(b for b, v in results.items() if isinstance(v, Exception))
    out = []
    if off:
        out.append(_r("s3.access_logging", FAIL,
                      f"{len(off)} of {len(results)} bucket(s) without server access logging "
                      f"(not enabled by default): {_names(off)}",
                      f"aws s3api put-bucket-logging --bucket {off[0]} --bucket-logging-status "
                      "'{\"LoggingEnabled\":{\"TargetBucket\":\"LOG_BUCKET\",\"TargetPrefix\":"
                      f"\"{off[0]}/\"}}}}'", buckets=off))
    else:
        out.append(_r("s3.access_logging", PASS,
                      f"all {len(results) - len(err)} readable bucket(s) log server access"))
    if err:
        out.append(_r("s3.access_logging_unreadable", WARN,
                      f"could not read the logging configuration of {len(err)} bucket(s): "
                      f"{_names(err)}", "allow s3:GetBucketLogging"))
    return out


# ----------------------------------------------------------------------------------- runner

SOURCES = ("cloudtrail", "config", "s3", "vpc", "waf")


def run_readiness(clients: Any, regions: list[str], *, max_workers: int = MAX_WORKERS,
                  pool: Callable[[int], cf.Executor] | None = None) -> list[CheckResult]:
    """Every check, in a stable order (source, Region), whatever order the tasks finished in."""
    # boto3: clients are thread-safe, creating them from a shared session is not.
    for region in regions:
        for svc in ("cloudtrail", "config", "ec2", "wafv2", "s3"):
            clients.client(svc, region)
    home = regions[0]
    make = pool or (lambda n: cf.ThreadPoolExecutor(max_workers=n))
    with make(max_workers) as ex:
        ct = ex.submit(cloudtrail, clients, regions)
        per_region = {(name, r): ex.submit(fn, clients, r) for r in regions
                      for name, fn in (("config", config), ("vpc", flow_logs), ("waf", waf))}
        try:
            buckets = s3_buckets(clients, home)
            logging = {b: ex.submit(bucket_logging, clients, home, b) for b in buckets}
            s3 = s3_verdict({b: f.result() for b, f in logging.items()})
        except (ClientError, BotoCoreError) as e:
            s3 = [_unreadable("s3.access_logging", None, e, "s3:ListAllMyBuckets")]
        out = ct.result()
        for name in ("config", "vpc", "waf"):
            for r in regions:
                out += per_region[(name, r)].result()
        out += s3
    for c in out:
        c.details = {"source": c.id.split(".")[0], **(c.details or {})}
    return out


def resolve_regions(clients: Any, value: str | None) -> list[str]:
    if not value:
        region = clients.default_region
        if not region:
            from setup.errors import UsageError
            raise UsageError("no AWS region", "pass --regions R,... or --region, or set AWS_REGION",
                             code="NoRegion")
        return [region]
    if value == "all":
        ec2 = clients.client("ec2", clients.default_region or "us-east-1")
        return sorted(r["RegionName"] for r in ec2.describe_regions().get("Regions", []))
    return [r.strip() for r in value.split(",") if r.strip()]
