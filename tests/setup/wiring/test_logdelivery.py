"""Issue 21: CloudWatch Logs resource policies for vended logs (setup.wiring.logdelivery): the
seed's delivery.logs.amazonaws.com statement with both conditions, merged into the Region's
existing policies without replacing anyone's, within 10 policies per Region and 5120 characters
per policy, refused with the limit named. Pure cases, then the same on moto made strict
(setup.demo.logdelivery refuses 5120+ characters; moto itself refuses an 11th policy)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from setup.aws import AwsClients
from setup.demo.logdelivery import strict_log_delivery
from setup.errors import SetupError
from setup.wiring import logdelivery as ld
from setup.wiring.flowlogs_aws import FlowExecutor, read_resource_policies

ACCT, REGION, P = "123456789012", "us-east-1", "aws"
OTHER = {"Version": "2012-10-17", "Statement": [
    {"Sid": "Route53Query", "Effect": "Allow", "Principal": {"Service": "route53.amazonaws.com"},
     "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
     "Resource": f"arn:aws:logs:{REGION}:{ACCT}:log-group:/aws/route53/*"}]}


def test_statement_is_the_seeds_with_both_conditions():
    st = ld.cwl_delivery_statement(ACCT, REGION, P, ["waf-logs"])
    assert st["Principal"] == {"Service": ["delivery.logs.amazonaws.com"]}
    assert st["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert st["Resource"] == [f"arn:aws:logs:{REGION}:{ACCT}:log-group:waf-logs:log-stream:*"]
    assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": [ACCT]},
                               "ArnLike": {"aws:SourceArn": [f"arn:aws:logs:{REGION}:{ACCT}:*"]}}


def test_a_new_policy_of_its_own_when_nothing_matches_and_others_are_untouched():
    name, doc, _ = ld.plan_cwl_resource_policy({"r53": OTHER}, ACCT, REGION, P, ["waf-logs"])
    assert name == ld.CWL_POLICY_NAME
    assert doc["Statement"] == [ld.cwl_delivery_statement(ACCT, REGION, P, ["waf-logs"])]


def test_an_existing_delivery_statement_is_extended_not_replaced():
    aws_made = {"Version": "2012-10-17", "Statement": [
        dict(ld.cwl_delivery_statement(ACCT, REGION, P, ["fw-logs"])), OTHER["Statement"][0]]}
    name, doc, _ = ld.plan_cwl_resource_policy({"AWSLogDeliveryWrite20150319": aws_made},
                                               ACCT, REGION, P, ["waf-logs"])
    assert name == "AWSLogDeliveryWrite20150319"
    assert doc["Statement"][1] == OTHER["Statement"][0]
    assert doc["Statement"][0]["Resource"] == [
        f"arn:aws:logs:{REGION}:{ACCT}:log-group:{g}:log-stream:*" for g in ("fw-logs", "waf-logs")]


def test_nothing_to_do_when_a_policy_admits_it_under_any_sid():
    st = dict(ld.cwl_delivery_statement(ACCT, REGION, P, ["waf-logs"]), Sid="Whatever")
    st["Resource"] = f"arn:aws:logs:{REGION}:{ACCT}:log-group:waf-*"
    name, doc, notes = ld.plan_cwl_resource_policy({"x": {"Statement": [st]}}, ACCT, REGION, P,
                                                   ["waf-logs"])
    assert (name, doc) == (None, None) and "already admits" in notes[0]


def test_an_unconditioned_or_other_account_grant_does_not_count():
    st = ld.cwl_delivery_statement(ACCT, REGION, P, ["waf-logs"])
    other_acct = dict(st, Condition={"StringEquals": {"aws:SourceAccount": ["999999999999"]}})
    name, _, _ = ld.plan_cwl_resource_policy({"x": {"Statement": [other_acct]}}, ACCT, REGION, P,
                                             ["waf-logs"])
    assert name == ld.CWL_POLICY_NAME


def full_policy(i: int) -> dict:
    """A delivery policy within 40 characters of 5120: one more stream ARN does not fit."""
    groups = [f"team-{i}-group-{n:03d}" for n in range(200)]
    doc = {"Version": "2012-10-17",
           "Statement": [ld.cwl_delivery_statement(ACCT, REGION, P, groups)]}
    res = doc["Statement"][0]["Resource"]
    while len(ld.compact(doc)) > ld.RESOURCE_POLICY_CHARS - 100:
        res.pop()
    pad = ld.RESOURCE_POLICY_CHARS - 20 - len(ld.compact(doc)) - len(',""') - len(res[-1])
    res.append(res[-1].replace(":log-stream:", "x" * pad + ":log-stream:"))
    assert ld.RESOURCE_POLICY_CHARS - 40 < len(ld.compact(doc)) <= ld.RESOURCE_POLICY_CHARS
    return doc


def test_a_full_policy_moves_the_statement_to_a_new_one():
    name, doc, notes = ld.plan_cwl_resource_policy({"full": full_policy(0)}, ACCT, REGION, P,
                                                   ["waf-logs"])
    assert name == ld.CWL_POLICY_NAME
    assert doc["Statement"] == [ld.cwl_delivery_statement(ACCT, REGION, P, ["waf-logs"])]
    assert "full would be" in notes[-1]


def test_ten_policies_and_no_room_is_refused_with_both_limits_named():
    policies = {f"p{i}": full_policy(i) for i in range(10)}
    with pytest.raises(SetupError) as e:
        ld.cwl_resource_policy_step(policies, ACCT, REGION, P, ["waf-logs"])
    assert e.value.code == "ResourcePolicyLimit"
    assert "10 CloudWatch Logs resource policies" in e.value.message
    assert "5120 characters" in e.value.message and "/aws/vendedlogs/" in e.value.message


def test_ten_unrelated_policies_are_refused_too():
    with pytest.raises(SetupError, match="none of them holds a log-delivery statement"):
        ld.cwl_resource_policy_step({f"p{i}": OTHER for i in range(10)}, ACCT, REGION, P,
                                    ["waf-logs"])


@pytest.fixture
def aws():
    with mock_aws(), strict_log_delivery():
        yield boto3.client("logs", region_name=REGION)


def quiet_run(clients, step):
    FlowExecutor(clients, progress=lambda m: None).run(type("P", (), {"steps": [step]})())


def test_on_moto_the_step_merges_and_a_rerun_writes_nothing(aws):
    aws.put_resource_policy(policyName="r53", policyDocument=json.dumps(OTHER))
    clients = AwsClients(region=REGION)
    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    step, _ = ld.cwl_resource_policy_step(read_resource_policies(clients, REGION), account,
                                          REGION, P, ["waf-logs"])
    quiet_run(clients, step)
    have = read_resource_policies(clients, REGION)
    assert have["r53"] == OTHER
    assert ld.cwl_admits(have, account, REGION, P, "waf-logs") == ld.CWL_POLICY_NAME
    step, _ = ld.cwl_resource_policy_step(have, account, REGION, P, ["waf-logs"])
    assert step is None


def test_strict_layer_refuses_a_resource_policy_over_5120_characters(aws):
    doc = full_policy(0)
    doc["Statement"][0]["Resource"] += [f"arn:aws:logs:{REGION}:{ACCT}:log-group:x{'y' * 200}"]
    assert len(ld.compact(doc)) > ld.RESOURCE_POLICY_CHARS
    with pytest.raises(aws.exceptions.InvalidParameterException):
        aws.put_resource_policy(policyName="big", policyDocument=ld.compact(doc))
