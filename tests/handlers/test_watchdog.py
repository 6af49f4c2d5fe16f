"""The scheduled watchdog (handlers/watchdog.py): the CLI's verify checks, one metric per check,
an alert on a change to FAIL and a recovery on the way back, nothing when unchanged."""

from __future__ import annotations

import io
import json

import boto3
import pytest
from moto import mock_aws

from handlers.watchdog import MemoryState, SsmState, Watchdog, run_verify
from setup.aws import AwsClients
from setup.cli import main
from setup.verify import CheckResult

ACCT = "123456789012"
REGION = "us-east-1"


def fake_verify(*statuses):
    seq = iter(statuses)

    def verify(env):
        return "arn:trail", [CheckResult("delivery.recent", s, "m") for s in next(seq)] + \
            [CheckResult("trail.logging", "PASS", "ok")]
    return verify


def make(verify, state=None):
    published, emitted = [], []
    dog = Watchdog({}, state or MemoryState(), published.append,
                   lambda line: emitted.append(json.loads(line)), verify=verify,
                   clock=lambda: 1_768_000_000.0)
    return dog, published, emitted


def test_change_to_fail_alerts_once_unchanged_none_recovery_once():
    dog, published, emitted = make(fake_verify(["PASS"], ["FAIL"], ["FAIL"], ["PASS"], ["PASS"]))
    assert dog.run({"time": "t1"})["alerts"] == 0
    assert dog.run({"time": "t2"})["alerts"] == 1
    assert published[-1]["kind"] == "verify_check_failed"
    # an ops-topic notice, never mistaken for a detection (trailwatch.alert/N)
    assert published[-1]["schema"] == "trailwatch.watchdog/1"
    assert published[-1]["rule"]["id"] == "trailwatch-verify-delivery.recent"
    assert published[-1]["event"]["previous_status"] == "PASS"
    assert dog.run({"time": "t3"})["alerts"] == 0
    assert dog.run({"time": "t4"})["alerts"] == 1
    assert published[-1]["kind"] == "verify_check_recovered"
    assert dog.run({"time": "t5"})["alerts"] == 0
    assert len(published) == 2


def test_first_run_failing_alerts_and_warn_does_not():
    dog, published, _ = make(fake_verify(["FAIL"]))
    assert dog.run()["alerts"] == 1
    dog, published, _ = make(fake_verify(["WARN"], ["PASS"]))
    assert dog.run()["alerts"] == 0 and dog.run()["alerts"] == 0


def test_one_metric_per_check_status_and_totals():
    dog, _, emitted = make(fake_verify(["FAIL"]))
    dog.run()
    per_check = {d["check"]: d["CheckStatus"] for d in emitted if "check" in d}
    assert per_check == {"delivery.recent": 2, "trail.logging": 0}
    (total,) = [d for d in emitted if "ChecksRun" in d]
    assert total["ChecksFailed"] == 1 and total["ChecksRun"] == 2
    for d in emitted:
        assert d["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Trailwatch"


def test_publish_failure_keeps_state_so_the_retry_alerts_again():
    state = MemoryState({"delivery.recent": "PASS"})

    def boom(alert):
        raise RuntimeError("SNS down")
    dog = Watchdog({}, state, boom, lambda line: None, verify=fake_verify(["FAIL"], ["FAIL"]))
    with pytest.raises(RuntimeError):
        dog.run({"time": "t"})
    assert state.load() == {"delivery.recent": "PASS"}
    dog2, published, _ = make(fake_verify(["FAIL"]), state)
    dog2.run({"time": "t"})
    assert len(published) == 1


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket="trail-bucket")
        ct = boto3.client("cloudtrail", region_name=REGION)
        ct.create_trail(Name="main", S3BucketName="trail-bucket", IsMultiRegionTrail=True)
        ct.start_logging(Name="main")
        yield ct


def test_same_checks_as_the_cli(aws):
    out = io.StringIO()
    assert main(["apply", "--trail", "main", "--yes", "--output", "json"], out=out,
                clients=AwsClients(region=REGION)) == 0
    out = io.StringIO()
    main(["verify", "--trail", "main", "--output", "json"], out=out,
         clients=AwsClients(region=REGION))
    cli = [(c["id"], c["status"]) for c in json.loads(out.getvalue())["checks"]]
    trail, results = run_verify({"TRAIL_NAME": "main", "AWS_REGION": REGION})
    assert trail.endswith(":trail/main")
    assert [(r.id, r.status) for r in results] == cli


def test_log_group_in_another_account_without_role_says_so(aws):
    aws.update_trail(Name="main",
                     CloudWatchLogsLogGroupArn=f"arn:aws:logs:{REGION}:999999999999:log-group:"
                                               "CloudTrail/main:*",
                     CloudWatchLogsRoleArn="arn:aws:iam::999999999999:role/r")
    _, results = run_verify({"TRAIL_NAME": "main", "AWS_REGION": REGION})
    ids = [r.id for r in results]
    assert results[0].id == "watchdog.scope" and results[0].status == "WARN"
    assert "VerifyRoleArn" in results[0].remediation
    assert "role.stream_policy" not in ids and "trail.logging" in ids


def test_missing_trail_is_a_fail_result(aws):
    _, results = run_verify({"TRAIL_NAME": "nope", "AWS_REGION": REGION})
    assert [(r.id, r.status) for r in results] == [("watchdog.trail", "FAIL")]


def test_ssm_state_roundtrip(aws):
    ssm = boto3.client("ssm", region_name=REGION)
    state = SsmState("/trailwatch/watchdog", ssm)
    assert state.load() == {}
    state.save({"a": "FAIL"})
    assert SsmState("/trailwatch/watchdog", ssm).load() == {"a": "FAIL"}


def test_before_apply_the_watchdog_looks_for_the_role_the_cli_creates(aws):
    """Issue 24 item 5: the watchdog defaulted to trailwatch-cwl-<trail> (no home Region), the
    CLI creates trailwatch-cwl-<trail>-<home region>: the two disagreed on an unwired trail."""
    out = io.StringIO()
    main(["verify", "--trail", "main", "--output", "json"], out=out,
         clients=AwsClients(region=REGION))
    cli = [(c["id"], c["status"], c["message"]) for c in json.loads(out.getvalue())["checks"]]
    _, results = run_verify({"TRAIL_NAME": "main", "AWS_REGION": REGION})
    assert [(r.id, r.status, r.message) for r in results] == cli
    assert any(f"trailwatch-cwl-main-{REGION}" in m for _, _, m in cli)


def test_watchdog_in_the_audit_account_finds_the_org_trail_by_its_default_name(aws):
    """Issue 24 item 2. Observed on 5bb8a96: with the template's default TrailName=org-trail,
    the watchdog in the audit account FAILed watchdog.trail on every run (DescribeTrails matches
    a name only in the caller's account and Region; tests/strict_fakes.StrictCloudTrail)."""
    from types import SimpleNamespace

    from tests.setup.wiring.test_find_trail import AUDIT, HOME, MGMT, world
    from tests.strict_fakes import FakeAwsClients
    w = world()
    sts = SimpleNamespace(get_caller_identity=lambda: {
        "Account": AUDIT, "Arn": f"arn:aws:sts::{AUDIT}:assumed-role/watchdog/fn"})
    org = SimpleNamespace(describe_organization=lambda: {"Organization": {"Id": "o-abc1234567"}})
    clients = FakeAwsClients(HOME, cloudtrail=lambda r: w.client(AUDIT, r), sts=lambda r: sts,
                             organizations=lambda r: org,
                             logs=lambda r: boto3.client("logs", region_name=r))  # moto: no group
    trail, results = run_verify({"TRAIL_NAME": "org-trail", "AWS_REGION": HOME}, clients)
    assert trail == f"arn:aws:cloudtrail:{HOME}:{MGMT}:trail/org-trail"
    status = {r.id: r.status for r in results}
    assert "watchdog.trail" not in status
    assert status["watchdog.scope"] == "WARN"        # log group in the management account
    assert status["trail.logging"] == "PASS"


def test_a_malformed_max_delivery_age_is_a_config_result_not_a_crash(aws):
    """Issue 24: float(MAX_DELIVERY_AGE_SECONDS) raised on every scheduled run (5bb8a96)."""
    _, results = run_verify({"TRAIL_NAME": "main", "AWS_REGION": REGION,
                             "MAX_DELIVERY_AGE_SECONDS": "2h"})
    (cfg,) = [r for r in results if r.id == "watchdog.config"]
    assert cfg.status == "FAIL" and "MAX_DELIVERY_AGE_SECONDS" in cfg.message
    assert "trail.logging" in {r.id for r in results}


@pytest.mark.parametrize("value", ["1e14", "1e300"])
def test_a_huge_max_delivery_age_is_capped_and_reported_not_an_overflow(aws, value):
    """Review F7: 1e14 passed 0 < x < inf, then timedelta raised OverflowError on every run."""
    from handlers.watchdog import MAX_DELIVERY_AGE_LIMIT
    _, results = run_verify({"TRAIL_NAME": "main", "AWS_REGION": REGION,
                             "MAX_DELIVERY_AGE_SECONDS": value})
    (cfg,) = [r for r in results if r.id == "watchdog.config"]
    assert cfg.status == "FAIL" and f"using {MAX_DELIVERY_AGE_LIMIT:.0f}" in cfg.message
    assert "trail.logging" in {r.id for r in results}


def test_an_empty_trail_name_says_so():
    """TrailName's AllowedPattern accepts an empty value: the watchdog says what is missing
    instead of looking up a trail named ''."""
    _, results = run_verify({"TRAIL_NAME": "", "AWS_REGION": REGION}, clients=object())
    (r,) = results
    assert (r.id, r.status) == ("watchdog.trail", "FAIL")
    assert "TRAIL_NAME" in r.message and "TrailName" in r.remediation
