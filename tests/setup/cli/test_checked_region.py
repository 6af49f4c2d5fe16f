"""`--region` checked against the Regions botocore knows (issue 24 item 8), before any call;
`--allow-unknown-region` for a Region newer than the installed botocore."""

from __future__ import annotations

import json

import pytest

from setup.aws import AwsClients, known_regions
from tests.setup.wiring.test_setup_integration import ACCT, aws, make_trail, run  # noqa: F401

REGION = "us-east-1"


def json_run(argv, clients):
    code, out = run([*argv, "--output", "json"], clients)
    return code, json.loads(out)


@pytest.mark.parametrize("region", ["us-est-1", "eu-west-99", "useast1"])
def test_a_typo_region_is_a_usage_error_before_any_call(aws, region):  # noqa: F811
    """Observed on 5bb8a96: --region us-est-1 reached an endpoint that does not exist and
    printed an HTML page with a permissions hint."""
    make_trail()
    clients = AwsClients(region=region)
    code, doc = json_run(["--region", region, "plan", "--trail", "main"], clients)
    assert code == 2 and doc["error"]["code"] == "UnknownRegion", doc
    assert region in doc["error"]["message"]
    assert "--allow-unknown-region" in doc["error"]["remediation"]
    assert clients.calls == []


def test_a_typo_region_suggests_the_known_one(aws):  # noqa: F811
    _, doc = json_run(["--region", "us-est-1", "plan", "--trail", "main"],
                         AwsClients(region="us-est-1"))
    assert "us-east-1" in doc["error"]["message"]


def test_a_region_newer_than_botocore_is_allowed_with_the_flag(aws):  # noqa: F811
    make_trail()
    code, doc = json_run(["--region", "us-east-1", "--allow-unknown-region", "plan",
                          "--trail", "main"], AwsClients(region=REGION))
    assert code == 0, doc
    code, doc = json_run(["--region", "xx-newplace-1", "--allow-unknown-region", "plan",
                          "--trail", f"arn:aws:cloudtrail:{REGION}:{ACCT}:trail/main"],
                         AwsClients(region=REGION))
    assert doc.get("error", {}).get("code") != "UnknownRegion", doc


def test_known_regions_of_every_partition_are_accepted():
    regions = known_regions()
    for r in ("us-east-1", "eu-west-1", "cn-north-1", "us-gov-west-1", "ap-southeast-2"):
        assert r in regions
    assert "us-est-1" not in regions
