"""The template <-> code seam (issue 24): template.yaml rendered the way CloudFormation would for
a parameter value, then the functions' code booted with the environment that results. Nothing
may raise, and the values must name the right things (the trail, the role the CLI creates)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from handlers.detection.tamper import tamper_rules
from setup.wiring.models import default_role_name
from tests.template.test_template import translate
from tests.template.test_template_modes import REGION, Env

ACCOUNT = "111122223333"


class Rendered(Env):
    """Env plus the intrinsics the seams need (Fn::Select, as CloudFormation evaluates it)."""

    # What Ref returns for a resource (the CloudFormation resource reference, "Return values"):
    # an SNS topic's ARN, an SQS queue's URL, the name of an event bus, a DynamoDB table, an S3
    # bucket or an SSM parameter. Generated names follow CloudFormation's <stack>-<logical id>-
    # <suffix> (a bucket's in lowercase). The code checks these shapes at cold start.
    REF_NAME = {"AWS::SNS::Topic": "TopicName", "AWS::SQS::Queue": "QueueName",
                "AWS::Events::EventBus": "Name", "AWS::DynamoDB::Table": "TableName",
                "AWS::S3::Bucket": "BucketName", "AWS::SSM::Parameter": "Name"}

    def ref(self, logical_id: str) -> Any:
        res = self.cfn["Resources"].get(logical_id)
        if res is None or res["Type"] not in self.REF_NAME:
            return None
        kind = res["Type"]
        given = (res.get("Properties") or {}).get(self.REF_NAME[kind])
        name = str(self.value(given)) if given is not None else \
            f"{self.params['AWS::StackName']}-{logical_id}-1A2B3C4D5E6F"
        if kind == "AWS::SNS::Topic":
            return f"arn:aws:sns:{REGION}:{ACCOUNT}:{name}"
        if kind == "AWS::SQS::Queue":
            return f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{name}"
        return name.lower() if kind == "AWS::S3::Bucket" else name

    def value(self, node: Any) -> Any:
        if isinstance(node, dict) and len(node) == 1 and "Ref" in node:
            ref = self.ref(node["Ref"])
            if ref is not None:
                return ref
        if isinstance(node, dict) and len(node) == 1 and "Fn::Select" in node:
            index, items = node["Fn::Select"]
            items = self.value(items)
            index = int(self.value(index))
            assert 0 <= index < len(items), f"Fn::Select index {index} out of range: {items}"
            return items[index]
        return super().value(node)

    def function_env(self, logical_id: str) -> dict[str, str]:
        props = self.cfn["Resources"][logical_id]["Properties"]
        env = {k: str(v) for k, v in self.value(props["Environment"]["Variables"]).items()}
        env.setdefault("AWS_REGION", REGION)          # set by Lambda, as is the name:
        env.setdefault("AWS_LAMBDA_FUNCTION_NAME", str(self.value(props["FunctionName"])))
        return env


@pytest.fixture(scope="module")
def cfn():
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return translate()


TRAILS = {
    "name": ("org-trail", "org-trail", REGION),
    "arn": (f"arn:aws:cloudtrail:eu-west-1:{ACCOUNT}:trail/org-trail", "org-trail", "eu-west-1"),
    "long-name": ("t" * 128, "t" * 128, REGION),
    "50-chars": ("n" * 50, "n" * 50, REGION),
    "long-arn": (f"arn:aws:cloudtrail:ap-southeast-2:{ACCOUNT}:trail/{'a' * 128}", "a" * 128,
                 "ap-southeast-2"),
}


@pytest.mark.parametrize("case", sorted(TRAILS))
def test_processor_tamper_rules_watch_the_trail_and_the_role_the_cli_creates(cfn, case):
    """Observed on 5bb8a96: TrailName as an ARN gave TRAIL_NAME `arn:aws:cloudtrail:<r>:<acct>:`,
    a name of 50+ characters a DELIVERY_ROLE_NAME over 64 characters (the processor raised on
    every invocation), and the default role was not the one the CLI creates."""
    value, name, region = TRAILS[case]
    env = Rendered(cfn, {"TrailName": value}).function_env("ProcessorFunction")
    errors: list[str] = []
    rules = {r.id: r for r in tamper_rules(env, errors=errors)}
    assert errors == []
    assert f'"{name}"' in rules["trailwatch-tamper-trail"].pattern.text
    role = default_role_name(name, region)
    assert f'roleName = "{role}"' in rules["trailwatch-tamper-delivery-role"].pattern.text


def test_an_explicit_delivery_role_name_reaches_the_processor(cfn):
    env = Rendered(cfn, {"DeliveryRoleName": "CloudTrail_CloudWatchLogs_Role"}) \
        .function_env("ProcessorFunction")
    rules = {r.id: r for r in tamper_rules(env)}
    assert '"CloudTrail_CloudWatchLogs_Role"' in \
        rules["trailwatch-tamper-delivery-role"].pattern.text


@pytest.mark.parametrize("metric", ["AlertsRejected", "ConfigErrors"])
def test_what_the_processor_degrades_on_is_alarmed(cfn, metric):
    """Issue 24: a permanent sink error (Security Hub not enabled, an invalid finding) no longer
    fails the invocation (AlertsRejected), nor does a malformed number in the environment
    (ConfigErrors): both must alarm."""
    import inspect

    from handlers import processor
    assert f'"{metric}"' in inspect.getsource(processor)
    alarms = [r["Properties"] for r in cfn["Resources"].values()
              if r["Type"] == "AWS::CloudWatch::Alarm"
              and r["Properties"].get("MetricName") == metric]
    assert len(alarms) == 1
    (alarm,) = alarms
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == \
        "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "OpsTopic"}]
    assert alarm["Namespace"] == {"Fn::Sub": "Trailwatch/${AWS::StackName}"}


def _watchdog_policies(cfn) -> list[dict]:
    role = cfn["Resources"]["WatchdogFunctionRole"]["Properties"]
    return [p["PolicyDocument"] for p in role["Policies"]]


def test_the_watchdog_role_allows_every_call_its_checks_make(cfn):
    """Issue 24 item 7. Observed on 5bb8a96: the destination checks call
    cloudwatch:ListMetrics / GetMetricStatistics and logs:DescribeDestinations, which the
    watchdog's role did not allow: false FAILs in a real account (moto checks no IAM).
    The calls are recorded from the real code (the verify checks on moto, and both destination
    branches), then each action is evaluated against the template's policies (action level)."""
    import datetime as dt
    import io

    import boto3
    from moto import mock_aws

    from handlers.watchdog import run_verify
    from setup.aws import AwsClients
    from setup.cli import main
    from setup.policy_eval import evaluate
    from setup.verify.destinations import check_filter
    from setup.wiring.models import Target
    from setup.wiring.state import find_trail

    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="trail-bucket")
        ct = boto3.client("cloudtrail", region_name=REGION)
        ct.create_trail(Name="main", S3BucketName="trail-bucket", IsMultiRegionTrail=True)
        ct.start_logging(Name="main")
        assert main(["apply", "--trail", "main", "--yes", "--cis-alarms", "--output", "json"],
                    out=io.StringIO(), clients=AwsClients(region=REGION)) == 0
        clients = AwsClients(region=REGION)
        run_verify({"TRAIL_NAME": "main", "AWS_REGION": REGION}, clients)
        trail = find_trail(clients, "main")
        acct = trail.owner_account
        target = Target(trail=trail, account=acct, log_group="CloudTrail/main",
                        role_name=f"trailwatch-cwl-main-{REGION}")
        now = dt.datetime.now(dt.UTC)
        boto3.client("cloudwatch", region_name=REGION).put_metric_data(
            Namespace="AWS/Logs", MetricData=[{"MetricName": "DeliveryErrors", "Value": 1.0,
                                               "Dimensions": [
                                                   {"Name": "LogGroupName",
                                                    "Value": "CloudTrail/main"},
                                                   {"Name": "FilterName", "Value": "f"}]}])
        for dest in (f"arn:aws:logs:{REGION}:{acct}:destination:same",        # same account
                     f"arn:aws:logs:{REGION}:999999999999:destination:audit",  # another one
                     f"arn:aws:kinesis:{REGION}:{acct}:stream/s"):
            check_filter(clients, target, {"filterName": "f", "destinationArn": dest,
                                           "roleArn": f"arn:aws:iam::{acct}:role/r"}, now)
    actions = {f"{svc}:{op}" for svc, op, _ in clients.calls if svc != "sts"}
    for needed in ("cloudwatch:ListMetrics", "cloudwatch:GetMetricStatistics",
                   "logs:DescribeDestinations"):
        assert needed in actions, needed              # the recording reaches those branches
    docs = _watchdog_policies(cfn)
    denied = sorted(a for a in actions if not evaluate(docs, a).allowed)
    assert denied == []


@pytest.mark.parametrize("value,ok", [
    ("rate(1 minute)", True), ("rate(15 minutes)", True), ("rate(1 hour)", True),
    ("rate(2 days)", True), ("rate(10 minutes)", True), ("cron(0/15 * * * ? *)", True),
    # EventBridge: "If the value is equal to 1, then the unit must be singular. If the value is
    # greater than 1, the unit must be plural." (Schedule expressions for rules)
    ("rate(1 minutes)", False), ("rate(5 minute)", False), ("rate(1 days)", False),
    ("rate(0 minutes)", False), ("rate(01 minute)", False),
])
def test_watchdog_schedule_accepts_only_what_eventbridge_accepts(cfn, value, ok):
    """Issue 24 item 7. Observed on 5bb8a96: rate(1 minutes) passed the AllowedPattern and the
    stack failed later, in EventBridge."""
    import re
    pattern = cfn["Parameters"]["WatchdogSchedule"]["AllowedPattern"]
    assert bool(re.fullmatch(pattern, value)) is ok


# ------------------------------------------------------------------ the seam matrix (issue 24)
import itertools  # noqa: E402
import re  # noqa: E402

MGMT = "111111111111"
TRAIL_VALUES = {"name": "org-trail",
                "arn": f"arn:aws:cloudtrail:{REGION}:{MGMT}:trail/org-trail",
                "128": "t" * 128,
                "arn-128": f"arn:aws:cloudtrail:{REGION}:{MGMT}:trail/{'a' * 128}"}
MODES = {
    "direct": {"SourceMode": "direct"},
    "kinesis": {"SourceMode": "kinesis",
                "KinesisStreamArn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/trail"},
    "destination-accounts": {"SourceMode": "destination", "SourceAccountIds": MGMT},
    "destination-org": {"SourceMode": "destination", "SourceAccountIds": MGMT,
                        "SourceOrganizationId": "o-abc1234567"},
}
FEATURES = {
    "off": {},
    "on": {"SecurityHubFindings": "enabled",
           "ChatTopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:chat",
           "AlertIdempotency": "enabled", "OpsEmail": "ops@example.com",
           "AlertEmail": "alerts@example.com",
           "RulesFile": "s3://rules-bucket/trailwatch/rules.json",
           "ExpectedChangePrincipals": f"arn:aws:iam::{ACCOUNT}:role/deployer",
           "VerifyRoleArn": f"arn:aws:iam::{MGMT}:role/trailwatch-verify",
           "DeliveryRoleName": "CloudTrail_CloudWatchLogs_Role"},
    "ssm-rules": {"RulesFile": "ssm:/trailwatch/rules"},
}
MATRIX = list(itertools.product(sorted(TRAIL_VALUES), sorted(MODES), sorted(FEATURES)))


def _trail_parts(value: str) -> tuple[str, str]:
    m = re.fullmatch(r"arn:aws:cloudtrail:([a-z0-9-]+):\d{12}:trail/(.+)", value)
    return (m.group(2), m.group(1)) if m else (value, REGION)


def _check_parameters(cfn, params: dict[str, str]) -> None:
    """What CloudFormation checks before it creates anything: AllowedPattern/AllowedValues of
    every parameter given, and the template's Rules."""
    for name, value in params.items():
        spec = cfn["Parameters"][name]
        if "AllowedPattern" in spec:
            assert re.fullmatch(spec["AllowedPattern"], value), (name, value)
        if "AllowedValues" in spec:
            assert value in spec["AllowedValues"], (name, value)


def _rules_hold(e: Rendered) -> bool:
    for rule in (e.cfn.get("Rules") or {}).values():
        if "RuleCondition" in rule and not e.value(rule["RuleCondition"]):
            continue
        if not all(e.value(a["Assert"]) for a in rule["Assertions"]):
            return False
    return True


def _client_factory(service: str):
    """Nothing may reach AWS at cold start except reading RULES_FILE, which fails here (the
    bucket or parameter is unreadable): a rule error, never a crash."""
    if service in ("s3", "ssm"):
        class Unreadable:
            def __getattr__(self, name):
                def call(**kw):
                    from botocore.exceptions import ClientError
                    raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, name)
                return call
        return Unreadable()
    return object()


@pytest.mark.parametrize("trail,mode,features", MATRIX,
                         ids=["-".join(c) for c in MATRIX])
def test_every_combination_boots_both_functions_and_names_the_right_things(cfn, trail, mode,
                                                                            features):
    """Rendered as CloudFormation would (conditions, only the chosen Fn::If branch, Sub/Split/
    Select/Join, pseudo parameters), then each function's code booted with its environment."""
    from handlers.processor import App
    from handlers.watchdog import from_env as watchdog_from_env
    from tests.conftest import ListLogger, ListMetrics

    params = {"TrailName": TRAIL_VALUES[trail], **MODES[mode], **FEATURES[features]}
    _check_parameters(cfn, params)
    e = Rendered(cfn, params)
    assert _rules_hold(e)
    name, region = _trail_parts(TRAIL_VALUES[trail])

    penv = e.function_env("ProcessorFunction")
    log, metrics = ListLogger(), ListMetrics()
    app = App.from_env(penv, client_factory=_client_factory, metrics_sink=metrics, log=log,
                       emit=lambda line: None)
    errors = [x["error"] for lvl, m, x in log.records if m == "rule skipped"]
    if "RulesFile" in params:
        assert len(errors) == 1 and "rules" in errors[0].lower()     # unreadable file only
    else:
        assert errors == []
    loaded = {r.id for r in app.pipeline.rules}
    tamper = {r.id: r for r in tamper_rules(penv, errors=[])}
    assert set(tamper) <= loaded and len(tamper) == 5
    assert f'"{name}"' in tamper["trailwatch-tamper-trail"].pattern.text
    role = params.get("DeliveryRoleName") or default_role_name(name, region)
    assert f'roleName = "{role}"' in tamper["trailwatch-tamper-delivery-role"].pattern.text
    assert penv["TRAIL_LOG_GROUP_NAME"] == e.params["TrailLogGroupName"]
    assert f'"{penv["TRAIL_LOG_GROUP_NAME"]}"' in tamper["trailwatch-tamper-log-group"].pattern.text
    # Every value the template passes has the shape the code checks at cold start (Refs render
    # as CloudFormation returns them): nothing ignored, every component configured.
    assert app.settings.errors == {} and app.config_errors == []
    assert app.failure_queue is not None and app.failure_queue.archive_bucket
    sinks = {s.name for s in app.sinks}
    assert {"sns", "eventbridge"} <= sinks
    assert (app.settings.idempotency_table is not None) == \
        (params.get("AlertIdempotency") == "enabled")
    assert ("securityhub" in sinks) == (params.get("SecurityHubFindings") == "enabled")
    assert ("chat" in sinks) == bool(params.get("ChatTopicArn"))

    wenv = e.function_env("WatchdogFunction")
    assert wenv["TRAIL_NAME"] == TRAIL_VALUES[trail]
    assert wenv["TRAIL_LOG_GROUP_NAME"] == e.params["TrailLogGroupName"]
    assert wenv["VERIFY_ROLE_ARN"] == params.get("VerifyRoleArn", "")
    assert wenv["CHAT_TOPIC_ARN"] == params.get("ChatTopicArn", "")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    dog = watchdog_from_env(wenv)
    assert dog.settings.trail_name == TRAIL_VALUES[trail] and dog.settings.errors == {}

    if params["SourceMode"] == "destination":       # who CloudWatch Logs may deliver for
        from setup.demo.topology import trust_admits
        trust = e.value(e.resources()["DestinationRole"]["Properties"])[
            "AssumeRolePolicyDocument"]
        member = f"arn:aws:logs:{REGION}:444455556666:log-group:CloudTrail/x"
        assert trust_admits(trust, f"arn:aws:logs:{REGION}:{MGMT}:log-group:CloudTrail/x")
        assert trust_admits(trust, member) is bool(params.get("SourceOrganizationId"))


@pytest.mark.parametrize("trail", sorted(TRAIL_VALUES))
def test_the_watchdog_finds_the_trail_the_template_names_from_the_audit_account(cfn, trail):
    """The README's audit-account topology: the stack in an audit account, the organization
    trail in the management account; every accepted TrailName form finds it (by ARN, or by name
    among the trails the account sees: tests/strict_fakes.StrictCloudTrail)."""
    from types import SimpleNamespace

    import boto3
    from moto import mock_aws

    from handlers.watchdog import run_verify
    from tests.strict_fakes import CloudTrailWorld, FakeAwsClients

    name, region = _trail_parts(TRAIL_VALUES[trail])
    world = CloudTrailWorld(org_members=(MGMT, ACCOUNT))
    world.add(MGMT, region, name, org=True,
              CloudWatchLogsLogGroupArn=f"arn:aws:logs:{region}:{MGMT}:log-group:CloudTrail/x:*",
              CloudWatchLogsRoleArn=f"arn:aws:iam::{MGMT}:role/r")
    env = Rendered(cfn, {"TrailName": TRAIL_VALUES[trail], **MODES["destination-org"]}) \
        .function_env("WatchdogFunction")
    sts = SimpleNamespace(get_caller_identity=lambda: {
        "Account": ACCOUNT, "Arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/watchdog/fn"})
    org = SimpleNamespace(describe_organization=lambda: {"Organization": {"Id": "o-abc1234567"}})
    with mock_aws():
        clients = FakeAwsClients(REGION, cloudtrail=lambda r: world.client(ACCOUNT, r),
                                 sts=lambda r: sts, organizations=lambda r: org,
                                 logs=lambda r: boto3.client("logs", region_name=r))
        arn, results = run_verify(env, clients)
    assert arn == f"arn:aws:cloudtrail:{region}:{MGMT}:trail/{name}"
    assert "watchdog.trail" not in {r.id for r in results}


# ------------------------------------------------------------------ the destination role's trust
ORG = "o-abc1234567"
MEMBER = "444455556666"        # an organization account that is not in SourceAccountIds


def _destination_trust(cfn, mode: str) -> dict:
    e = Rendered(cfn, {"TrailName": "org-trail", **MODES[mode]})
    return e.value(e.resources()["DestinationRole"]["Properties"])["AssumeRolePolicyDocument"]


@pytest.mark.parametrize("mode", ["destination-accounts", "destination-org"])
def test_the_destination_role_trusts_cloudwatch_logs_for_every_sender_the_access_policy_admits(
        cfn, mode):
    """Issue 24 item 3. Observed on d534756: with SourceOrganizationId the access policy admits
    every account of the organization, but the role CloudWatch Logs assumes to put their records
    into the stream still trusted only SourceAccountIds, so a member account's subscription
    was accepted and its records were never delivered. The documented key for this role is
    aws:SourceArn (CloudWatch Logs User Guide, "Step 1: Create a destination"); aws:SourceOrgID
    is not confirmed for it, so the organization form narrows by it only when it is present."""
    from setup.demo.topology import trust_admits
    from tests.template.test_template_modes import ACCOUNT as RECIPIENT

    trust = _destination_trust(cfn, mode)
    (st,) = trust["Statement"]
    assert st["Principal"] == {"Service": "logs.amazonaws.com"}
    listed = f"arn:aws:logs:{REGION}:{MGMT}:log-group:CloudTrail/org-trail"
    member = f"arn:aws:logs:{REGION}:{MEMBER}:log-group:CloudTrail/org-trail"
    assert trust_admits(trust, listed)
    assert trust_admits(trust, f"arn:aws:logs:{REGION}:{RECIPIENT}:destination:x")  # test message
    assert not trust_admits(trust, f"arn:aws:logs:eu-west-1:{MGMT}:log-group:x")   # other Region
    assert not trust_admits(trust, f"arn:aws-cn:logs:{REGION}:{MGMT}:log-group:x")
    if mode == "destination-org":
        assert trust_admits(trust, member)                       # aws:SourceOrgID not supplied
        assert trust_admits(trust, member, source_org=ORG)
        assert not trust_admits(trust, member, source_org="o-zzzzzzzzzz")
        assert st["Condition"]["StringEqualsIfExists"] == {"aws:SourceOrgID": ORG}
    else:                                                        # unchanged: the listed accounts
        assert not trust_admits(trust, member)
        assert st["Condition"]["StringLike"] == {"aws:SourceArn": [
            f"arn:*:logs:*:{RECIPIENT}:*", f"arn:*:logs:*:{MGMT}:*"]}
        assert st["Condition"]["ArnLike"] == {"aws:SourceArn": f"arn:aws:logs:{REGION}:*"}


# ------------------------------------------------------------------ the chat topic
@pytest.mark.parametrize("value,ok", [
    ("", True),
    (f"arn:aws:sns:{REGION}:{ACCOUNT}:chat", True),
    (f"arn:aws:sns:{REGION}:{ACCOUNT}:team_alerts-1", True),
    (f"arn:aws-us-gov:sns:us-gov-west-1:{ACCOUNT}:chat", True),
    # SNS FIFO topics deliver only to SQS queues (Amazon SNS Developer Guide, "Message delivery
    # for FIFO topics"); chat applications subscribe an HTTPS endpoint.
    (f"arn:aws:sns:{REGION}:{ACCOUNT}:chat.fifo", False),
    (f"arn:aws:sns:{REGION}:{ACCOUNT}:chat.FIFO", False),
    (f"arn:aws:sns:{REGION}:{ACCOUNT}:chat.x", False),
])
def test_the_chat_topic_parameter_refuses_a_fifo_topic_at_deploy_time(cfn, value, ok):
    """Issue 24 item 7. Observed on d534756: ChatTopicArn accepted `...:chat.fifo`; the stack
    deployed and no alert ever reached the channel."""
    spec = cfn["Parameters"]["ChatTopicArn"]
    assert bool(re.fullmatch(spec["AllowedPattern"], value)) is ok
    if not ok:
        assert "FIFO" in spec["ConstraintDescription"]


def test_the_watchdog_gets_the_chat_topic_and_may_read_it(cfn):
    """Issue 24 item 7: the watchdog checks the processor's chat topic (chat.topic); its role
    allows each call the check makes, on that topic and this account's keys (resource level)."""
    import boto3
    from moto import mock_aws

    from setup.aws import AwsClients
    from setup.policy_eval import evaluate
    from setup.verify.chat import chat_topic
    from tests.template.test_template_modes import ACCOUNT as STACK_ACCOUNT

    topic = f"arn:aws:sns:{REGION}:{STACK_ACCOUNT}:chat"
    e = Rendered(cfn, {"ChatTopicArn": topic})
    assert e.function_env("WatchdogFunction")["CHAT_TOPIC_ARN"] == topic
    assert Rendered(cfn, {}).function_env("WatchdogFunction")["CHAT_TOPIC_ARN"] == ""
    role = e.value(e.resources()["WatchdogFunctionRole"]["Properties"])
    docs = [p["PolicyDocument"] for p in role["Policies"]]
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        clients = AwsClients(region=REGION)
        key = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["KeyId"]
        arn = boto3.client("sns", region_name=REGION).create_topic(
            Name="chat", Attributes={"KmsMasterKeyId": key})["TopicArn"]
        assert chat_topic(clients, arn).status == "WARN"      # a customer managed key
    calls = {f"{svc}:{op}" for svc, op, _ in clients.calls}
    assert calls == {"sns:GetTopicAttributes", "kms:DescribeKey"}
    assert evaluate(docs, "sns:GetTopicAttributes", topic).allowed
    assert not evaluate(docs, "sns:GetTopicAttributes",
                        f"arn:aws:sns:{REGION}:{STACK_ACCOUNT}:other").allowed
    assert evaluate(docs, "kms:DescribeKey",
                    f"arn:aws:kms:{REGION}:{STACK_ACCOUNT}:key/{key}").allowed
    without = Rendered(cfn, {})
    role = without.value(without.resources()["WatchdogFunctionRole"]["Properties"])
    assert not any(s.get("Sid") == "ReadChatTopic" for p in role["Policies"]
                   for s in p["PolicyDocument"]["Statement"])
