"""Saved flow-logs plans (`flow-logs plan --out FILE`, `flow-logs apply --plan FILE`) get the
trail commands' protection (setup.wiring.plans): apply runs the steps trailwatch recomputes for
the file's options against the account as it is now, and only when they are the file's steps. An
edited plan is refused (exit 1, PlanEdited) before any write; a file that is not a complete plan
is a clear usage error (exit 2, PlanFileInvalid), never a traceback.

Observed before the fix: a file whose PutBucketPolicy step had another team's statement removed,
with an extra s3:DeleteBucketTagging step, was applied as it was (exit 0, the statement gone);
`{"format": "trailwatch-flowlogs-plan/1"}` was a KeyError traceback out of main()."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from setup.cli.flowlogs import PLAN_FORMAT
from setup.wiring.plans import plan_file_digest
from tests.setup.cli.test_flowlogs_cli import (  # noqa: F401 - the imported fixture
    BUCKET,
    OTHER_TEAM,
    REGION,
    aws,
    flow_logs,
    policy,
    put_policy,
    sids,
    tw,
    vpc,
    writes,
)


@pytest.fixture
def saved(aws, tmp_path):  # noqa: F811 - the imported fixture
    put_policy(OTHER_TEAM)
    path = tmp_path / "plan.json"
    code, out, err, _ = tw("flow-logs", "plan", "--vpc", vpc(), "--to", f"s3://{BUCKET}",
                           "--out", str(path))
    assert code == 0, out + err
    return path


def apply(path):
    code, out, err, clients = tw("flow-logs", "apply", "--plan", str(path), "--yes",
                                 "--output", "json")
    return code, json.loads(out) if out.strip().startswith("{") else out, err, clients


def drop_other_team(doc: dict) -> dict:
    (step,) = [s for s in doc["plan"]["steps"] if s["api"] == "s3:PutBucketPolicy"]
    pol = json.loads(step["params"]["Policy"])
    pol["Statement"] = [s for s in pol["Statement"] if s.get("Sid") != OTHER_TEAM["Sid"]]
    step["params"]["Policy"] = json.dumps(pol)
    return doc


def add_step(doc: dict) -> dict:
    doc["plan"]["steps"].append({"api": "s3:DeleteBucketTagging", "region": REGION,
                                 "params": {"Bucket": BUCKET}, "message": "harmless",
                                 "iam_actions": []})
    return doc


def refused(path, code_expected: str = "PlanEdited") -> None:
    before = policy()
    code, doc, err, clients = apply(path)
    assert code == 1 and doc["error"]["code"] == code_expected, (doc, err)
    assert writes(clients) == [] and flow_logs() == []
    assert policy() == before and OTHER_TEAM["Sid"] in sids(policy())


def test_the_saved_plan_carries_a_digest_of_its_steps_and_options(saved):
    doc = json.loads(saved.read_text())
    assert doc["plan_digest"] == plan_file_digest(doc)
    assert plan_file_digest(drop_other_team(json.loads(saved.read_text()))) != doc["plan_digest"]


@pytest.mark.parametrize("edit", [drop_other_team, add_step,
                                  lambda d: add_step(drop_other_team(d))],
                         ids=["edited-policy", "added-step", "both"])
def test_an_edited_plan_is_refused_before_any_write(saved, edit):
    saved.write_text(json.dumps(edit(json.loads(saved.read_text()))))
    refused(saved)


@pytest.mark.parametrize("edit", [drop_other_team, add_step], ids=["edited-policy", "added-step"])
def test_a_recomputed_digest_does_not_help(saved, edit):
    """The digest is not a secret: what runs must also be what trailwatch plans now."""
    doc = edit(json.loads(saved.read_text()))
    doc["plan_digest"] = plan_file_digest(doc)
    saved.write_text(json.dumps(doc))
    refused(saved)


def test_a_removed_step_is_refused(saved):
    doc = json.loads(saved.read_text())
    doc["plan"]["steps"] = [s for s in doc["plan"]["steps"] if s["api"] != "s3:PutBucketPolicy"]
    doc["plan_digest"] = plan_file_digest(doc)
    saved.write_text(json.dumps(doc))
    refused(saved)


def test_an_edited_option_is_refused(saved):
    doc = json.loads(saved.read_text())
    doc["options"]["traffic_type"] = "REJECT"
    saved.write_text(json.dumps(doc))
    refused(saved)


def test_the_unedited_plan_still_applies_and_keeps_the_other_teams_statement(saved):
    code, doc, err, clients = apply(saved)
    assert code == 0, (doc, err)
    assert writes(clients) == ["PutBucketPolicy", "CreateFlowLogs"]
    assert [s["api"] for s in doc["plan"]["steps"]] == ["s3:PutBucketPolicy", "ec2:CreateFlowLogs"]
    assert OTHER_TEAM["Sid"] in sids(policy()) and len(flow_logs()) == 1


def test_a_stale_plan_is_still_refused(saved):
    put_policy(OTHER_TEAM, dict(OTHER_TEAM, Sid="Another"))
    refused(saved, "PlanStale")


def test_a_plan_for_another_region_is_a_usage_error(saved):
    doc = json.loads(saved.read_text())
    doc["options"]["region"] = "eu-west-1"
    doc["plan_digest"] = plan_file_digest(doc)
    saved.write_text(json.dumps(doc))
    code, doc, _, clients = apply(saved)
    assert code == 2 and writes(clients) == []


@pytest.mark.parametrize("edit", [
    lambda d: d.clear() or d.update(format=PLAN_FORMAT),
    lambda d: d.pop("options"),
    lambda d: d.update(options=[]),
    lambda d: d.update(options="x"),
    lambda d: d.pop("plan"),
    lambda d: d["plan"].pop("steps"),
    lambda d: d["plan"].update(steps={"a": 1}),
    lambda d: d["plan"]["steps"].append("x"),
    lambda d: d["plan"]["steps"][0].pop("api"),
    lambda d: d["plan"]["steps"][0].update(api="nocolon"),
    lambda d: d["plan"]["steps"][0].update(params="x"),
    lambda d: d["options"].pop("to"),
    lambda d: d["options"].pop("region"),
    lambda d: d["options"].update(to=7),
    lambda d: d["options"].update(vpc="vpc-1"),
    lambda d: d["options"].update(vpc=[1]),
    lambda d: d["options"].update(max_aggregation_interval=True),
    lambda d: d["options"].update(traffic_type="EVERYTHING"),
    lambda d: d["options"].update(yes=True),            # not an option a plan carries
    lambda d: d.pop("state_digest"),
    lambda d: d.pop("plan_digest"),
], ids=["format-only", "no-options", "options-list", "options-str", "no-plan", "no-steps",
        "steps-dict", "step-str", "step-no-api", "step-bad-api", "params-str", "no-to",
        "no-region", "to-int", "vpc-str", "vpc-int-item", "interval-bool", "traffic-choice",
        "foreign-option", "no-state-digest", "no-digest"])
def test_an_incomplete_or_malformed_plan_is_a_clear_usage_error(saved, edit):
    doc = json.loads(saved.read_text())
    edit(doc)
    saved.write_text(json.dumps(doc))
    code, out, err, clients = apply(saved)
    assert code == 2 and out["error"]["code"] == "PlanFileInvalid", (out, err)
    assert "Traceback" not in err and writes(clients) == []


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
_KEYS = ("format", "options", "plan", "state_digest", "plan_digest")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(_json, st.fixed_dictionaries(
           {"format": st.just(PLAN_FORMAT)},
           optional={k: _json for k in _KEYS[1:]}),
       st.fixed_dictionaries({"format": st.just(PLAN_FORMAT),
                              "options": st.dictionaries(st.sampled_from(
                                  ["vpc", "to", "region", "traffic_type", "all_vpcs"]), _json),
                              "plan": st.fixed_dictionaries({"steps": st.lists(_json, max_size=2)}),
                              "state_digest": st.text(max_size=4)})),
       redigest=st.booleans())
def test_no_json_shape_is_a_traceback(aws, tmp_path, doc, redigest):  # noqa: F811
    if redigest and isinstance(doc, dict) and isinstance(doc.get("plan", {}), dict):
        doc["plan_digest"] = plan_file_digest(doc)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    code, out, err, clients = apply(path)
    assert code in (1, 2) and "Traceback" not in err, (out, err)
    assert isinstance(out, dict) and out["error"]["code"] in ("PlanFileInvalid", "PlanEdited",
                                                              "PlanStale"), (out, err)
    assert writes(clients) == []
