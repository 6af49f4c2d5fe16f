"""trailwatch against moto (in-process) plus real AWS error codes via botocore Stubber."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from setup.aws import AwsClients
from setup.cli import main
from setup.wiring.executor import Executor, StepFailure, classify_update_trail_error
from setup.wiring.models import TAG_KEY, TAG_VALUE, Target, Trail, stream_policy, trust_policy
from setup.wiring.planner import Plan, Step

ACCT = "123456789012"


def no_sleep_executor(sleeps=None):
    def factory(clients, timeout):
        return Executor(clients, sleep=(sleeps.append if sleeps is not None else lambda s: None),
                        propagation_timeout=timeout, progress=lambda m: None)
    return factory


def run(argv, clients, stdin=None, sleeps=None):
    out = io.StringIO()
    code = main(argv, out=out, clients=clients, stdin=stdin or io.StringIO(""),
                executor_factory=no_sleep_executor(sleeps))
    return code, out.getvalue()


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="trail-bucket")
        yield


def make_trail(name="main", region="us-east-1", org=False, multi=True):
    ct = boto3.client("cloudtrail", region_name=region)
    ct.create_trail(Name=name, S3BucketName="trail-bucket", IsMultiRegionTrail=multi,
                    IsOrganizationTrail=org)
    ct.start_logging(Name=name)
    return ct


def role_policy(name="trailwatch-cwl-main-us-east-1", policy="trailwatch-cloudtrail-delivery"):
    return boto3.client("iam").get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]


def test_single_trail_apply_leaves_exact_documents(aws):
    ct = make_trail()
    code, out = run(["apply", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    assert code == 0, out
    trail = ct.get_trail(Name="main")["Trail"]
    assert trail["CloudWatchLogsLogGroupArn"] == \
        f"arn:aws:logs:us-east-1:{ACCT}:log-group:CloudTrail/main:*"
    assert trail["CloudWatchLogsRoleArn"] == f"arn:aws:iam::{ACCT}:role/trailwatch-cwl-main-us-east-1"
    role = boto3.client("iam").get_role(RoleName="trailwatch-cwl-main-us-east-1")["Role"]
    assert role["AssumeRolePolicyDocument"] == trust_policy()
    doc = role_policy()
    assert [s["Resource"] for s in doc["Statement"]] == [
        [f"arn:aws:logs:us-east-1:{ACCT}:log-group:CloudTrail/main:log-stream:"
         f"{ACCT}_CloudTrail_us-east-1*"]] * 2
    logs = boto3.client("logs", region_name="us-east-1")
    (group,) = logs.describe_log_groups(logGroupNamePrefix="CloudTrail/main")["logGroups"]
    assert group["retentionInDays"] == 365
    tags = logs.list_tags_for_resource(resourceArn=group["arn"].removesuffix(":*"))["tags"]
    # issue 9: ownership per trail beside managed-by=trailwatch
    assert tags == {TAG_KEY: TAG_VALUE,
                    "trailwatch:trail:956536ea": f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/main"}
    assert "0 failed" in out and "11 passed" in out


def test_second_apply_makes_zero_writes(aws):
    make_trail()
    assert run(["apply", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))[0] == 0
    clients = AwsClients(region="us-east-1")
    code, out = run(["apply", "--trail", "main", "--yes"], clients)
    assert code == 0 and "Nothing to do: the setup has converged (0 changes)." in out
    assert clients.calls and clients.mutating_calls() == []
    assert "with 0 write call(s)" in out


def test_multi_region_trail_driven_from_another_region(aws):
    make_trail(region="us-east-1")
    clients = AwsClients(region="eu-west-1")
    code, out = run(["apply", "--trail", "main", "--region", "eu-west-1", "--yes"], clients)
    assert code == 0, out
    regions = {(svc, r) for svc, op, r in clients.mutating_calls()}
    assert regions == {("logs", "us-east-1"), ("iam", "us-east-1"), ("cloudtrail", "us-east-1")}
    assert boto3.client("logs", region_name="us-east-1").describe_log_groups()["logGroups"]
    assert not boto3.client("logs", region_name="eu-west-1").describe_log_groups()["logGroups"]


def test_org_trail_gets_the_o_id_resource(aws):
    org = boto3.client("organizations").create_organization(FeatureSet="ALL")["Organization"]
    make_trail(name="org", org=True)
    code, out = run(["apply", "--trail", "org", "--yes"], AwsClients(region="us-east-1"))
    assert code == 0, out
    res = role_policy("trailwatch-cwl-org-us-east-1")["Statement"][1]["Resource"]
    assert res[-1] == (f"arn:aws:logs:us-east-1:{ACCT}:log-group:CloudTrail/org:log-stream:"
                       f"{org['Id']}_*")
    assert "organization trail" in out


def test_org_trail_without_organization_is_a_clear_error(aws, capsys):
    make_trail(name="org", org=True)
    code, _ = run(["plan", "--trail", "org"], AwsClients(region="us-east-1"))
    assert code == 1
    assert "AWSOrganizationsNotInUseException" in capsys.readouterr().err


def test_brownfield_role_upgraded_for_org_trail_then_verify_passes(aws):
    boto3.client("organizations").create_organization(FeatureSet="ALL")
    make_trail(name="org", org=True)
    iam = boto3.client("iam")
    iam.create_role(RoleName="console-role", AssumeRolePolicyDocument=json.dumps(trust_policy()))
    single = Target(trail=Trail("org", f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/org", "us-east-1", ACCT, False, True), account=ACCT,
                    log_group="CloudTrail/org", role_name="console-role")
    console = stream_policy(single)   # the console's document, with the console's Sids
    for st, sid in zip(console["Statement"], ("AWSCloudTrailCreateLogStream20141101",
                                              "AWSCloudTrailPutLogEvents20141101")):
        st["Sid"] = sid
    iam.put_role_policy(RoleName="console-role", PolicyName="oneClick",
                        PolicyDocument=json.dumps(console))
    clients = AwsClients(region="us-east-1")
    code, out = run(["plan", "--trail", "org", "--role-name", "console-role"], clients)
    assert "iam:PutRolePolicy" in out and "o-" in out and "+" in out
    assert clients.mutating_calls() == []   # plan never writes
    assert run(["apply", "--trail", "org", "--role-name", "console-role", "--yes"],
               AwsClients(region="us-east-1"))[0] == 0
    # issue 9: trailwatch's statements are merged in beside the console's (kept as they were)
    stmts = role_policy("console-role", "oneClick")["Statement"]
    assert stmts[:2] == console["Statement"]
    assert any(r.endswith("_*") for st in stmts for r in st["Resource"])
    code, out = run(["verify", "--trail", "org", "--output", "json"], AwsClients(region="us-east-1"))
    checks = {c["id"]: c["status"] for c in json.loads(out)["checks"]}
    assert code == 0 and checks["role.stream_policy"] == "PASS"


def test_verify_fails_on_single_account_policy_for_org_trail(aws):
    boto3.client("organizations").create_organization(FeatureSet="ALL")
    make_trail(name="org", org=True)
    assert run(["apply", "--trail", "org", "--yes"], AwsClients(region="us-east-1"))[0] == 0
    single = Target(trail=Trail("org", f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/org", "us-east-1", ACCT, False, True), account=ACCT,
                    log_group="CloudTrail/org", role_name="trailwatch-cwl-org-us-east-1")
    boto3.client("iam").put_role_policy(RoleName="trailwatch-cwl-org-us-east-1",
                                        PolicyName="trailwatch-cloudtrail-delivery",
                                        PolicyDocument=json.dumps(stream_policy(single)))
    code, out = run(["verify", "--trail", "org", "--output", "json"], AwsClients(region="us-east-1"))
    doc = json.loads(out)
    (check,) = [c for c in doc["checks"] if c["id"] == "role.stream_policy"]
    assert code == 1 and check["status"] == "FAIL" and "o-" in check["message"]
    assert doc["summary"]["fail"] == 1
    assert set(doc["checks"][0]) == {"id", "status", "message", "remediation"}


def test_plan_json_contract(aws):
    make_trail()
    code, out = run(["plan", "--trail", "main", "--output", "json"], AwsClients(region="us-east-1"))
    doc = json.loads(out)
    assert doc["trail"] == {"name": "main", "arn": f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/main",
                            "home_region": "us-east-1", "owner_account": ACCT,
                            "is_organization_trail": False, "org_id": None,
                            "is_multi_region": True}
    assert doc["trust_policy"] == trust_policy()
    assert [s["api"] for s in doc["steps"]][-1] == "cloudtrail:UpdateTrail"
    assert all({"api", "params", "message"} <= set(s) for s in doc["steps"])


def test_apply_without_yes_refuses_when_not_a_tty(aws, capsys):
    make_trail()
    clients = AwsClients(region="us-east-1")
    code, _ = run(["apply", "--trail", "main"], clients, stdin=io.StringIO("y\n"))
    assert code == 2 and "--yes" in capsys.readouterr().err
    assert clients.mutating_calls() == []


def test_usage_errors_exit_2(capsys):
    assert main(["apply"]) == 2
    assert main(["plan", "--trail", "x", "--retention-days", "42"]) == 2
    assert "one of" in capsys.readouterr().err


def test_remove_detaches_and_deletes_only_tagged_resources(aws):
    ct = make_trail()
    run(["apply", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    code, out = run(["remove", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    trail = ct.get_trail(Name="main")["Trail"]
    assert code == 0 and not trail.get("CloudWatchLogsLogGroupArn") \
        and not trail.get("CloudWatchLogsRoleArn")
    assert boto3.client("iam").get_role(RoleName="trailwatch-cwl-main-us-east-1")   # kept unless asked
    code, out = run(["remove", "--trail", "main", "--yes", "--delete-role", "--delete-log-group",
                     "--role-name", "trailwatch-cwl-main-us-east-1"], AwsClients(region="us-east-1"))
    assert code == 0, out
    with pytest.raises(ClientError):
        boto3.client("iam").get_role(RoleName="trailwatch-cwl-main-us-east-1")
    logs = boto3.client("logs", region_name="us-east-1")
    assert logs.describe_log_groups(logGroupNamePrefix="CloudTrail/main")["logGroups"] == []


def test_remove_keeps_untagged_role(aws):
    ct = make_trail()
    boto3.client("iam").create_role(RoleName="theirs", AssumeRolePolicyDocument=json.dumps(
        trust_policy()))
    run(["apply", "--trail", "main", "--yes", "--role-name", "theirs"], AwsClients(region="us-east-1"))
    code, out = run(["remove", "--trail", "main", "--yes", "--delete-role"],
                    AwsClients(region="us-east-1"))
    assert code == 0 and "role theirs kept: not created by trailwatch" in out
    assert boto3.client("iam").get_role(RoleName="theirs")
    assert not ct.get_trail(Name="main")["Trail"].get("CloudWatchLogsRoleArn")


MUTATIONS = [("logs", "CreateLogGroup"), ("logs", "PutRetentionPolicy"), ("iam", "CreateRole"),
             ("iam", "PutRolePolicy"), ("cloudtrail", "UpdateTrail")]


@pytest.mark.parametrize("service,operation", MUTATIONS)
def test_fault_injection_each_write_fails_once_then_rerun_converges(aws, capsys, service,
                                                                    operation):
    ct = make_trail()
    failed = []

    def fail_once(**kwargs):
        if not failed:
            failed.append(operation)
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": f"not allowed: "
                                         f"{operation}"}}, operation)

    clients = AwsClients(region="us-east-1")
    clients.session.events.register(f"before-call.{service}.{operation}", fail_once)
    code, _ = run(["apply", "--trail", "main", "--yes"], clients)
    err = capsys.readouterr().err
    assert code == 1 and failed == [operation]
    assert f"FAILED   {service}:{operation}" in err and "AccessDenied" in err
    assert "run the same command again, `trailwatch apply --trail main --yes`" in err
    code, out = run(["apply", "--trail", "main", "--yes"], AwsClients(region="us-east-1"))
    assert code == 0, out
    assert ct.get_trail(Name="main")["Trail"]["CloudWatchLogsLogGroupArn"].endswith(":*")
    third = AwsClients(region="us-east-1")
    assert run(["apply", "--trail", "main", "--yes"], third)[0] == 0
    assert third.mutating_calls() == []


# --------------------------------------------------------------------- Stubber: real error codes

def update_trail_plan():
    trail = Trail("main", f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/main", "us-east-1", ACCT,
                  False, True)
    target = Target(trail=trail, account=ACCT, log_group="CloudTrail/main", role_name="r")
    step = Step("cloudtrail", "UpdateTrail", {"Name": trail.arn,
                                              "CloudWatchLogsLogGroupArn": target.log_group_arn,
                                              "CloudWatchLogsRoleArn": target.role_arn},
                "point trail", ("cloudtrail:UpdateTrail",), "us-east-1")
    return Plan(target=target, steps=[step])


def stubbed_executor(errors, ok=True, timeout=120.0):
    client = boto3.client("cloudtrail", region_name="us-east-1")
    stub = Stubber(client)
    for code, msg in errors:
        stub.add_client_error("update_trail", service_error_code=code, service_message=msg,
                              http_status_code=400)
    if ok:
        stub.add_response("update_trail", {"Name": "main"})
    clients = AwsClients(region="us-east-1")
    clients._clients[("cloudtrail", "us-east-1")] = client
    clock = [0.0]
    sleeps: list[float] = []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    progress: list[str] = []
    ex = Executor(clients, sleep=sleep, monotonic=lambda: clock[0], propagation_timeout=timeout,
                  progress=progress.append)
    return ex, stub, sleeps, progress


ACCESS_DENIED = ("InvalidCloudWatchLogsLogGroupArnException",
                 "Access denied. Verify in IAM that the role has adequate permissions.")


def test_access_denied_twice_then_success():
    ex, stub, sleeps, progress = stubbed_executor([ACCESS_DENIED, (
        "InvalidCloudWatchLogsRoleArnException",
        "Access denied. Check the trust relationships for your role.")])
    with stub:
        done = ex.run(update_trail_plan())
    assert [s.operation for s in done] == ["UpdateTrail"]
    assert sleeps == [2.0, 4.0]
    assert sum("attempt" in p for p in progress) == 2
    stub.assert_no_pending_responses()


@pytest.mark.parametrize("message", ["Check the log group ARN: CloudTrail can't validate it.",
                                     "CloudTrail cannot validate the specified log group ARN."])
def test_cannot_validate_fails_immediately_with_explanation(message):
    ex, stub, sleeps, _ = stubbed_executor([("InvalidCloudWatchLogsLogGroupArnException",
                                             message)], ok=False)
    with stub, pytest.raises(StepFailure) as info:
        ex.run(update_trail_plan())
    assert sleeps == []
    assert "':*'" in info.value.explanation and info.value.step.operation == "UpdateTrail"


@pytest.mark.parametrize("code,phrase", [
    ("CloudWatchLogsDeliveryUnavailableException", "Region capability"),
    ("InvalidHomeRegionException", "home region"),
    ("TrailNotFoundException", "full ARN"),
])
def test_non_retryable_codes_are_explained(code, phrase):
    ex, stub, sleeps, _ = stubbed_executor([(code, "nope")], ok=False)
    with stub, pytest.raises(StepFailure) as info:
        ex.run(update_trail_plan())
    assert sleeps == [] and phrase in info.value.explanation and info.value.code == code


@pytest.mark.parametrize("code", ["ThrottlingException", "ConflictException"])
def test_throttling_and_conflict_are_retried(code):
    ex, stub, sleeps, _ = stubbed_executor([(code, "slow down")])
    with stub:
        ex.run(update_trail_plan())
    assert sleeps == [2.0]


def test_propagation_timeout_bounds_the_retries():
    ex, stub, sleeps, _ = stubbed_executor([ACCESS_DENIED] * 5, ok=False, timeout=30)
    with stub, pytest.raises(StepFailure) as info:
        ex.run(update_trail_plan())
    assert sleeps == [2.0, 4.0, 8.0, 16.0][:len(sleeps)] and sum(sleeps) <= 30
    assert "--propagation-timeout" in info.value.explanation


def test_classifier_never_retries_validation_errors():
    assert classify_update_trail_error("InvalidCloudWatchLogsLogGroupArnException",
                                       "Access denied. Check the permissions for your role.")[0]
    assert not classify_update_trail_error("InvalidCloudWatchLogsLogGroupArnException",
                                           "CloudTrail can't validate it")[0]
    assert not classify_update_trail_error("CloudWatchLogsDeliveryUnavailableException", "")[0]


def test_trail_not_found_is_a_clear_error(aws, capsys):
    code, _ = run(["plan", "--trail", "nope"], AwsClients(region="us-east-1"))
    err = capsys.readouterr().err
    assert code == 1 and "TrailNotFoundException" in err and "--region" in err


def test_access_denied_on_create_role_names_the_step(aws, capsys):
    make_trail()
    clients = AwsClients(region="us-east-1")
    iam = clients.client("iam", "us-east-1")
    stub = Stubber(iam)
    stub.add_client_error("get_role", service_error_code="NoSuchEntity", http_status_code=404)
    stub.add_client_error("create_role", service_error_code="AccessDenied",
                          service_message="User: arn:aws:iam::123456789012:user/x is not "
                                          "authorized to perform: iam:CreateRole",
                          http_status_code=403)
    with stub:
        code, _ = run(["apply", "--trail", "main", "--yes"], clients)
    err = capsys.readouterr().err
    assert code == 1 and "FAILED   iam:CreateRole" in err and "iam:CreateRole" in err
    assert "done     logs:CreateLogGroup" in err and "not run  cloudtrail:UpdateTrail" in err


def test_check_permissions_resolves_assumed_role_and_reports_missing(aws):
    """Issue 9 changed the contract: one simulation per resource ARN, PassRole with the
    iam:PassedToService context, and the missing entries name the resource."""
    make_trail()
    clients = AwsClients(region="us-east-1")
    sts = clients.client("sts", "us-east-1")
    iam = clients.client("iam", "us-east-1")
    iam.create_role(RoleName="Deployer", Path="/ops/", AssumeRolePolicyDocument="{}")
    real_sts = Stubber(sts)
    for _ in range(2):
        real_sts.add_response("get_caller_identity", {
            "Account": ACCT, "UserId": "AROA:me",
            "Arn": f"arn:aws:sts::{ACCT}:assumed-role/Deployer/session-1"})
    calls = []

    def simulate(**kw):
        calls.append(kw)
        return {"IsTruncated": False, "EvaluationResults": [
            {"EvalActionName": a, "EvalDecision": "implicitDeny" if a == "iam:PassRole"
             else "allowed"} for a in kw["ActionNames"]]}
    iam.simulate_principal_policy = simulate
    with real_sts:
        code, out = run(["plan", "--trail", "main", "--check-permissions", "--output", "json"],
                        clients)
    role = f"arn:aws:iam::{ACCT}:role/trailwatch-cwl-main-us-east-1"
    assert code == 0 and json.loads(out)["missing_permissions"] == [f"iam:PassRole on {role}"]
    assert {c["PolicySourceArn"] for c in calls} == {f"arn:aws:iam::{ACCT}:role/ops/Deployer"}
    (passrole,) = [c for c in calls if "iam:PassRole" in c["ActionNames"]]
    assert passrole["ResourceArns"] == [role] and passrole["ContextEntries"][0][
        "ContextKeyValues"] == ["cloudtrail.amazonaws.com"]


class FakeTty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("answer,applied", [("y\n", True), ("n\n", False)])
def test_apply_asks_on_a_terminal(aws, answer, applied):
    ct = make_trail()
    code, out = run(["apply", "--trail", "main"], AwsClients(region="us-east-1"),
                    stdin=FakeTty(answer))
    assert code == (0 if applied else 1) and "Apply these 5 change(s)? [y/N]" in out
    assert bool(ct.get_trail(Name="main")["Trail"].get("CloudWatchLogsRoleArn")) is applied
