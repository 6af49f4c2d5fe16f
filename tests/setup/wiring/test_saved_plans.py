"""Saved plans as a new user meets them (issue 24 item 8): `apply --plan FILE` runs exactly the
steps it displays, which are the steps trailwatch plans for the file's options against the
account as it is now. An edited plan is refused (exit 1, PlanEdited) before any write; a file
that is not a complete plan is a clear usage error (exit 2, PlanFileInvalid), never a traceback."""

from __future__ import annotations

import json

import pytest

from setup.aws import AwsClients
from setup.wiring.plans import plan_file_digest
from tests.setup.wiring.test_shared_account import (  # noqa: F401
    REGION,
    client,
    make_trail,
    moto_server,
    server,
    tw,
)


@pytest.fixture
def saved(server, tmp_path):  # noqa: F811 - the imported fixture
    make_trail("team-a")
    path = tmp_path / "plan.json"
    code, _, err = tw("plan", "--trail", "team-a", "--out", str(path))
    assert code == 0, err
    return path


def groups() -> list[str]:
    return [g["logGroupName"] for g in client("logs").describe_log_groups()["logGroups"]]


def apply(path):
    clients = AwsClients(region=REGION)
    code, out, err = tw("apply", "--plan", str(path), "--yes", "--output", "json",
                        clients=clients)
    return code, json.loads(out) if out.strip().startswith("{") else out, err, clients


def hijack(doc):
    (step,) = [s for s in doc["plan"]["steps"] if s["api"] == "logs:CreateLogGroup"]
    step["params"]["logGroupName"] = "Hijacked"
    return doc


def test_the_saved_plan_carries_a_digest_of_its_steps_and_options(saved):
    doc = json.loads(saved.read_text())
    assert doc["plan_digest"] == plan_file_digest(doc)
    assert plan_file_digest(hijack(json.loads(saved.read_text()))) != doc["plan_digest"]


def test_an_edited_step_is_refused_before_any_write(saved):
    """Observed on 5bb8a96: a plan file that displayed "create log group CloudTrail/team-a"
    created `Hijacked` (the digest covered the account's state, not the steps)."""
    saved.write_text(json.dumps(hijack(json.loads(saved.read_text()))))
    code, doc, _, clients = apply(saved)
    assert code == 1 and doc["error"]["code"] == "PlanEdited", doc
    assert clients.mutating_calls() == [] and "Hijacked" not in groups()


def test_an_edited_step_with_a_recomputed_digest_is_still_refused(saved):
    """The digest is not a secret: what runs must also be what trailwatch plans now."""
    doc = hijack(json.loads(saved.read_text()))
    doc["plan_digest"] = plan_file_digest(doc)
    saved.write_text(json.dumps(doc))
    code, doc, _, clients = apply(saved)
    assert code == 1 and doc["error"]["code"] == "PlanEdited", doc
    assert clients.mutating_calls() == [] and "Hijacked" not in groups()


def test_an_edited_option_is_refused(saved):
    doc = json.loads(saved.read_text())
    doc["options"]["log_group"] = "Hijacked"
    saved.write_text(json.dumps(doc))
    code, doc, _, clients = apply(saved)
    assert code == 1 and doc["error"]["code"] == "PlanEdited", doc
    assert clients.mutating_calls() == []


def test_the_unedited_plan_still_applies(saved):
    code, doc, err, _ = apply(saved)
    assert code == 0, (doc, err)
    assert "CloudTrail/team-a" in groups()


@pytest.mark.parametrize("edit", [
    lambda d: d.pop("options"),
    lambda d: d.pop("plan"),
    lambda d: d["plan"].pop("steps"),
    lambda d: d["options"].pop("trail"),
    lambda d: d["options"].update(trail=7),
    lambda d: d.update(options=[]),
    lambda d: d["plan"].update(steps={"a": 1}),
    lambda d: d["plan"]["steps"][0].pop("api"),
    lambda d: d["plan"]["steps"][0].update(api="nocolon"),
    lambda d: d["plan"]["steps"][0].update(params="x"),
    lambda d: d["options"].update(yes=True),            # not an option a plan carries
    lambda d: d.pop("plan_digest"),
], ids=["no-options", "no-plan", "no-steps", "no-trail", "trail-not-str", "options-list",
        "steps-dict", "step-no-api", "step-bad-api", "params-str", "foreign-option",
        "no-digest"])
def test_an_incomplete_or_malformed_plan_is_a_clear_usage_error(saved, edit):
    doc = json.loads(saved.read_text())
    edit(doc)
    saved.write_text(json.dumps(doc))
    code, doc, err, clients = apply(saved)
    assert code == 2 and doc["error"]["code"] == "PlanFileInvalid", doc
    assert "Traceback" not in err and clients.mutating_calls() == []
