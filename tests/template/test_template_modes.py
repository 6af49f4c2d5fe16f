"""template.yaml per deployment mode (issue 14): the translated CloudFormation, with its conditions
evaluated for each SourceMode, has exactly the expected resources; the destination's trust and
access policy resolve to what AWS documents; monitoring fits the topology; parameters are bounded;
names are unique per stack and Region; checkov is clean."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.template.test_template import TEMPLATE, translate

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
ACCOUNT, REGION, STACK = "999999999999", "us-east-1", "tw-audit"
PLACEHOLDER_KEY = "arn:aws:kms:us-east-1:000000000000:key/none"


@pytest.fixture(scope="module")
def cfn():
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return translate()


# ----------------------------------------------------------------------------- a tiny evaluator

class Env:
    """Evaluates the intrinsic functions the template uses, for given parameter values."""

    def __init__(self, cfn: dict, params: dict[str, str]):
        self.cfn = cfn
        self.params = {k: str(v.get("Default", "")) for k, v in cfn["Parameters"].items()}
        self.params.update(params)
        self.params.update({"AWS::AccountId": ACCOUNT, "AWS::Region": REGION,
                            "AWS::StackName": STACK, "AWS::Partition": "aws",
                            "AWS::NoValue": None})
        self._conds: dict[str, bool] = {}

    def cond(self, name: str) -> bool:
        if name not in self._conds:
            self._conds[name] = bool(self.value(self.cfn["Conditions"][name]))
        return self._conds[name]

    @property
    def conditions(self) -> dict[str, bool]:
        return {n: self.cond(n) for n in self.cfn["Conditions"]}

    def resources(self) -> dict[str, Any]:
        return {k: v for k, v in self.cfn["Resources"].items()
                if "Condition" not in v or self.cond(v["Condition"])}

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not None]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                return self.params.get(arg, f"<{arg}>")
            if fn == "Condition":
                return self.cond(arg)
            if fn == "Fn::Equals":
                a, b = self.value(arg)
                return a == b
            if fn == "Fn::Not":
                return not self.value(arg[0])
            if fn == "Fn::Or":
                return any(self.value(a) for a in arg)
            if fn == "Fn::And":
                return all(self.value(a) for a in arg)
            if fn == "Fn::If":
                return self.value(arg[1] if self.cond(arg[0]) else arg[2])
            if fn == "Fn::Join":
                return arg[0].join(str(x) for x in self.value(arg[1]))
            if fn == "Fn::Split":
                return self.value(arg[1]).split(arg[0])
            if fn == "Fn::GetAtt":
                return f"<{'.'.join(arg) if isinstance(arg, list) else arg}>"
            if fn == "Fn::Sub":
                text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                values = {k: self.value(v) for k, v in extra.items()}
                return re.sub(r"\$\{([^}]+)\}", lambda m: str(
                    values[m.group(1)] if m.group(1) in values else
                    self.params.get(m.group(1), f"<{m.group(1)}>")), text)
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not None}


COMMON = {"ProcessorLogGroup", "ProcessorFunction", "ProcessorFunctionRole",
          "ProcessorFunctionEventInvokeConfig", "AlertKey", "AlertTopic", "AlertBus",
          "FailureQueue", "FailedInvocationsQueue", "FunctionErrorsAlarm",
          "FunctionThrottlesAlarm", "FailureQueueAlarm", "FailedInvocationsAlarm",
          "DestinationDeliveryFailuresAlarm",
          "DeliveryLagAlarm", "ProcessorHeartbeatAlarm", "Dashboard",
          # issue 10: the scheduled watchdog (continuous verify)
          "WatchdogLogGroup", "WatchdogState", "WatchdogFunction", "WatchdogFunctionRole",
          "WatchdogFunctionSchedule", "WatchdogFunctionSchedulePermission",
          # its failed runs and undeliverable ticks land in the on-failure queue
          "WatchdogFunctionEventInvokeConfig", "WatchdogScheduleDeadLetterPolicy",
          # issue 11: the failure archive and the RULES_FILE alarm
          "FailureArchiveBucket", "FailureArchiveBucketPolicy", "RuleErrorsAlarm",
          # issue 24: alerts a sink refuses for good
          "AlertsRejectedAlarm", "ConfigErrorsAlarm",
          # issue 12: the operational alarms' own topic
          "OpsTopic",
          # issue 20: thresholds and dedup windows across invocations (on by default)
          "AlertStateTable", "AlertStateTablePolicy"}
MODES = {
    "direct": ({}, COMMON | {"LogsInvokePermission", "TrailSubscription", "HeartbeatAlarm"}),
    "kinesis": ({"KinesisStreamArn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/trail"},
                COMMON | {"KinesisSource", "KinesisReadPolicy", "IteratorAgeAlarm",
                          "StreamBatchesDiscardedAlarm"}),
    "destination": ({"SourceAccountIds": "111111111111"},
                    COMMON | {"KinesisSource", "KinesisReadPolicy", "IteratorAgeAlarm",
                              "StreamBatchesDiscardedAlarm",
                              "TrailStreamKey", "TrailStream", "DestinationRole",
                              "TrailDestination"}),
}
CONDITIONS = {   # AlertStateEnabled: issue 20, on by default in every mode
    "direct": {"IsDirect", "AlertStateEnabled"},
    "kinesis": {"IsKinesis", "ReadsStream", "AlertStateEnabled"},
    "destination": {"IsDestination", "ReadsStream", "DecryptsStream", "AlertStateEnabled"},
}


def env(cfn, mode: str, **extra: str) -> Env:
    params, _ = MODES[mode]
    return Env(cfn, {"SourceMode": mode, **params, **extra})


@pytest.mark.parametrize("mode", sorted(MODES))
def test_each_mode_has_exactly_its_resources_and_conditions(cfn, mode):
    e = env(cfn, mode)
    assert set(e.resources()) == MODES[mode][1]
    true = {n for n, v in e.conditions.items() if v}
    assert true == CONDITIONS[mode], true


def test_every_resource_and_output_condition_is_declared(cfn):
    declared = set(cfn["Conditions"])
    used = {r["Condition"] for r in cfn["Resources"].values() if "Condition" in r}
    used |= {o["Condition"] for o in cfn["Outputs"].values() if "Condition" in o}
    assert used <= declared
    # nothing unconditional needs a mode-specific resource
    assert {"DestinationArn", "TrailStreamArn"} <= set(cfn["Outputs"])
    assert cfn["Outputs"]["DestinationArn"]["Condition"] == "IsDestination"
    assert cfn["Outputs"]["DestinationArn"]["Value"] == {"Fn::GetAtt": ["TrailDestination", "Arn"]}


def test_monitoring_fits_the_topology(cfn):
    """Observed: in kinesis mode the IncomingLogEvents heartbeat watched a log group of another
    account with missing data = breaching (ALARM forever), and there was no IteratorAge alarm."""
    for mode in MODES:
        res = env(cfn, mode).resources()
        hb = res["ProcessorHeartbeatAlarm"]["Properties"]
        assert (hb["MetricName"], hb["TreatMissingData"], hb["ComparisonOperator"]) == \
            ("LogEvents", "breaching", "LessThanThreshold")
        assert ("HeartbeatAlarm" in res) == (mode == "direct"), mode
        assert ("IteratorAgeAlarm" in res) == (mode != "direct"), mode
    it = cfn["Resources"]["IteratorAgeAlarm"]["Properties"]
    assert (it["Namespace"], it["MetricName"], it["Statistic"]) == \
        ("AWS/Lambda", "IteratorAge", "Maximum")
    assert it["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ProcessorFunction"}}]


def test_heartbeat_window_fits_cloudwatch_limits(cfn):
    """Period x EvaluationPeriods <= 604,800 s, and <= 86,400 s for periods under an hour."""
    params = cfn["Parameters"]
    most = params["HeartbeatPeriods"]["MaxValue"]
    assert params["HeartbeatPeriods"]["MinValue"] >= 1
    for period in params["HeartbeatPeriodSeconds"]["AllowedValues"]:
        limit = 86_400 if period < 3600 else 604_800
        assert period * most <= limit, period


def test_destination_stream_is_on_demand_and_kms_encrypted(cfn):
    res = env(cfn, "destination").resources()
    stream = res["TrailStream"]["Properties"]
    assert stream["StreamModeDetails"] == {"StreamMode": "ON_DEMAND"}
    assert "ShardCount" not in stream
    assert stream["StreamEncryption"] == {"EncryptionType": "KMS",
                                          "KeyId": {"Fn::GetAtt": ["TrailStreamKey", "Arn"]}}
    assert res["TrailStreamKey"]["Properties"]["EnableKeyRotation"] is True


def test_destination_role_trust_is_scoped_as_aws_documents(cfn):
    e = env(cfn, "destination", SourceAccountIds="111111111111,222222222222")
    role = e.value(e.resources()["DestinationRole"]["Properties"])
    (st,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert st["Principal"] == {"Service": "logs.amazonaws.com"}
    assert st["Action"] == "sts:AssumeRole"
    cond = st["Condition"]
    assert cond["ArnLike"] == {"aws:SourceArn": f"arn:aws:logs:{REGION}:*"}
    # the sending accounts, plus this (recipient) account for the creation test message
    assert cond["StringLike"] == {"aws:SourceArn": [f"arn:*:logs:*:{ACCOUNT}:*",
                                                     "arn:*:logs:*:111111111111:*",
                                                     "arn:*:logs:*:222222222222:*"]}
    (policy,) = role["Policies"]
    actions = {a for s in policy["PolicyDocument"]["Statement"] for a in
               (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])}
    assert actions == {"kinesis:PutRecord", "kinesis:PutRecords", "kms:GenerateDataKey"}


def test_destination_access_policy_accounts_or_organization(cfn):
    e = env(cfn, "destination", SourceAccountIds="111111111111,222222222222")
    dest = e.value(e.resources()["TrailDestination"]["Properties"])
    doc = json.loads(dest["DestinationPolicy"])
    (st,) = doc["Statement"]
    assert st["Principal"] == {"AWS": ["111111111111", "222222222222"]}
    assert st["Action"] == "logs:PutSubscriptionFilter"
    assert st["Resource"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:destination:{STACK}-trail-events"
    assert dest["DestinationName"] == f"{STACK}-trail-events"
    e = env(cfn, "destination", SourceOrganizationId="o-a1b2c3d4e5")
    doc = json.loads(e.value(e.resources()["TrailDestination"]["Properties"])["DestinationPolicy"])
    (st,) = doc["Statement"]
    assert st["Principal"] == "*"
    assert st["Condition"] == {"StringEquals": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}


def _read_policy(e: Env) -> list[dict]:
    return e.value(e.resources()["KinesisReadPolicy"]["Properties"])["PolicyDocument"]["Statement"]


def test_kinesis_mode_reads_a_kms_encrypted_stream(cfn):
    """Observed: kinesis mode had no key parameter and no kms:Decrypt."""
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    e = env(cfn, "kinesis", KinesisKmsKeyArn=key)
    assert e.cond("DecryptsStream")
    decrypt = [s for s in _read_policy(e) if s["Action"] == "kms:Decrypt"]
    assert decrypt == [{"Sid": "DecryptTrailStream", "Effect": "Allow", "Action": "kms:Decrypt",
                        "Resource": key}]
    plain = env(cfn, "kinesis", KinesisKmsKeyArn=PLACEHOLDER_KEY)
    assert not [s for s in _read_policy(plain) if s["Action"] == "kms:Decrypt"]
    dest = env(cfn, "destination")
    assert [s["Resource"] for s in _read_policy(dest) if s["Action"] == "kms:Decrypt"] == \
        ["<TrailStreamKey.Arn>"]
    esm = dest.value(dest.resources()["KinesisSource"]["Properties"])
    assert esm["EventSourceArn"] == "<TrailStream.Arn>"
    assert esm["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert esm["BisectBatchOnFunctionError"] is True
    assert esm["DestinationConfig"]["OnFailure"]["Destination"] == "<FailureArchiveBucket.Arn>"


def test_parameters_are_constrained(cfn):
    """Observed: TrailLogGroupName/AlertEmail had no AllowedPattern, HeartbeatPeriods no bound."""
    for name, p in cfn["Parameters"].items():
        if p["Type"] == "String":
            assert "AllowedPattern" in p or "AllowedValues" in p, name
            if "AllowedPattern" in p:
                assert re.fullmatch(p["AllowedPattern"], str(p["Default"])), name
        elif p["Type"] == "Number":
            assert "AllowedValues" in p or {"MinValue", "MaxValue"} <= set(p), name
    pat = {n: p.get("AllowedPattern") for n, p in cfn["Parameters"].items()}
    assert re.fullmatch(pat["TrailLogGroupName"], "aws-controltower/CloudTrailLogs")
    assert not re.fullmatch(pat["TrailLogGroupName"], "bad name with spaces")
    assert re.fullmatch(pat["AlertEmail"], "soc@example.com")
    assert not re.fullmatch(pat["AlertEmail"], "not-an-address")
    assert re.fullmatch(pat["SourceAccountIds"], "111111111111,222222222222")
    assert not re.fullmatch(pat["SourceAccountIds"], "1111,2222")


def test_names_and_metrics_unique_per_stack_and_region(cfn):
    """Observed: the dashboard name was account-global and the metrics dimensioned only by
    service, so two stacks (or Regions) collided."""
    res = cfn["Resources"]
    dash = res["Dashboard"]["Properties"]
    assert dash["DashboardName"] == {"Fn::Sub": "${AWS::StackName}-${AWS::Region}-trailwatch"}
    env_vars = res["ProcessorFunction"]["Properties"]["Environment"]["Variables"]
    namespace = env_vars["POWERTOOLS_METRICS_NAMESPACE"]
    assert namespace == {"Fn::Sub": "Trailwatch/${AWS::StackName}"}
    body = dash["DashboardBody"]["Fn::Sub"]
    assert '"Trailwatch",' not in body and '"Trailwatch/${AWS::StackName}"' in body
    for name, r in res.items():
        if r["Type"] == "AWS::CloudWatch::Alarm":
            ns = r["Properties"]["Namespace"]
            assert ns == namespace or (isinstance(ns, str) and ns.startswith("AWS/")), name
    named = {"FunctionName", "TopicName", "QueueName", "Name", "DestinationName", "LogGroupName"}
    for name, r in res.items():
        for key in named & set(r["Properties"]):
            value = r["Properties"][key]
            if name == "TrailSubscription" or (isinstance(value, dict) and
                                               ("Fn::GetAtt" in value or "Ref" in value)):
                continue   # the trail's own log group (a parameter), or a reference
            assert "${AWS::StackName}" in json.dumps(r["Properties"][key]), (name, key)


def test_serverless_repo_metadata_and_license():
    from samtranslator.yaml_helper import yaml_parse
    doc = yaml_parse(TEMPLATE.read_text())
    app = doc["Metadata"]["AWS::ServerlessRepo::Application"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert app["SemanticVersion"] == project["version"]
    assert app["SpdxLicenseId"] == project["license"] == "Apache-2.0"
    for key in ("LicenseUrl", "ReadmeUrl"):
        assert (ROOT / app[key]).is_file(), key
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert {"Name", "Description", "Author"} <= set(app)


def _checkov(path: Path) -> dict:
    out = subprocess.run([str(CHECKOV), "-f", str(path), "--framework", "cloudformation",
                          "--output", "json", "--quiet", "--skip-download", "--compact"],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "BC_SKIP_MAPPING": "TRUE"})
    assert out.stdout.strip(), out.stderr[-2000:]
    doc = json.loads(out.stdout)
    return doc[0] if isinstance(doc, list) else doc


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov not installed (make checkov-venv)")
@pytest.mark.parametrize("which", ["sam", "translated"])
def test_checkov_clean(cfn, tmp_path, which):
    """Observed: checkov reported 7 findings with no suppression. Every skip carries a reason."""
    path = TEMPLATE
    if which == "translated":
        path = tmp_path / "translated.json"
        path.write_text(json.dumps(cfn))
    doc = _checkov(path)
    if not doc.get("results"):   # nothing failed, nothing skipped: checkov prints a summary
        assert doc.get("failed", 0) == 0, doc
        return
    failed = doc["results"].get("failed_checks", [])
    assert not failed, [(f["check_id"], f["resource"]) for f in failed]
    for skipped in doc["results"].get("skipped_checks", []):
        assert len(skipped.get("suppress_comment", "")) > 20, skipped["check_id"]


@pytest.mark.parametrize("which", ["sam", "translated"])
def test_cfn_lint_serverless_rules_clean(cfn, tmp_path, which):
    """cfn-lint with the Serverless Rules (cfn-lint-serverless); ignores are per resource, each
    with its reason in a comment."""
    import importlib.util
    import sys
    assert importlib.util.find_spec("cfn_lint_serverless"), \
        "pip install cfn-lint-serverless (the sam extra)"
    path = TEMPLATE
    if which == "translated":
        path = tmp_path / "translated.json"
        path.write_text(json.dumps(cfn))
    exe = Path(sys.executable).parent / "cfn-lint"
    out = subprocess.run([str(exe), str(path), "-a", "cfn_lint_serverless.rules"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
