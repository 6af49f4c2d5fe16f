"""Inputs checked against the account before any write (issue 24 item 8): `--org-id` against
organizations:DescribeOrganization (`--region`: tests/setup/cli/test_checked_region.py)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from setup.aws import AwsClients
from tests.setup.wiring.test_setup_integration import (  # noqa: F401
    ACCT,
    aws,
    make_trail,
    role_policy,
    run,
)

REGION = "us-east-1"


@pytest.fixture
def org(aws):  # noqa: F811
    org_id = boto3.client("organizations").create_organization(FeatureSet="ALL")[
        "Organization"]["Id"]
    make_trail(name="org", org=True)
    return org_id


def denied(clients: AwsClients) -> AwsClients:
    stub = Stubber(clients.client("organizations", REGION))
    stub.add_client_error("describe_organization", "AccessDeniedException",
                          "not authorized to perform: organizations:DescribeOrganization")
    stub.activate()
    return clients


def json_run(argv, clients):
    code, out = run([*argv, "--output", "json"], clients)
    return code, json.loads(out)


def test_a_wrong_org_id_is_refused_before_any_write(org):
    """Observed on 5bb8a96: apply --org-id o-<wrong> replaced the real o-<id>_* stream resource
    and reported success (its own verify passed); member accounts' events stopped."""
    clients = AwsClients(region=REGION)
    code, doc = json_run(["apply", "--trail", "org", "--org-id", "o-wrong12345", "--yes"],
                         clients)
    assert code == 1 and doc["error"]["code"] == "OrgIdMismatch", doc
    assert org in doc["error"]["message"] and "o-wrong12345" in doc["error"]["message"]
    assert clients.mutating_calls() == []


def test_the_right_org_id_is_accepted(org):
    code, out = run(["apply", "--trail", "org", "--org-id", org, "--yes"],
                    AwsClients(region=REGION))
    assert code == 0, out
    assert role_policy("trailwatch-cwl-org-us-east-1")["Statement"][1]["Resource"][-1] \
        .endswith(f"log-stream:{org}_*")


def test_an_org_id_that_cannot_be_checked_needs_the_flag(org):
    clients = denied(AwsClients(region=REGION))
    code, doc = json_run(["apply", "--trail", "org", "--org-id", org, "--yes"], clients)
    assert code == 1 and doc["error"]["code"] == "OrgIdUnverified", doc
    assert "--trust-org-id" in doc["error"]["remediation"]
    assert clients.mutating_calls() == []
    clients = denied(AwsClients(region=REGION))
    code, text = run(["plan", "--trail", "org", "--org-id", org, "--trust-org-id"], clients)
    assert code == 0, text
    assert "WARN" in text and "organizations:DescribeOrganization" in text
