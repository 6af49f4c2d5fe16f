"""Help that teaches and hints that can be pasted: every subcommand's --help has a description,
its required options shown as required and examples that parse; every ``fix:`` names a complete
command for the run at hand; a misspelt trail gets the visible trails and the closest name."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex

import boto3
import pytest
from moto import mock_aws

from setup.cli import _subparsers, build_parser, main

INTERNAL = ("``", "**", "aws-facts", ":data:", ":class:", "../shared")


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv, out=out, stdin=io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


def examples(parser) -> list[str]:
    """The lines of the "examples:" block (in the epilog, or at the end of the description)."""
    text = f"{parser.description or ''}\n{parser.epilog or ''}"
    block = text.split("examples:", 1)[1] if "examples:" in text else ""
    return [ln.strip() for ln in block.splitlines() if ln.strip().startswith("trailwatch ")]


def parses(command: str) -> None:
    """The command line (comment stripped) is accepted by the parser."""
    words = shlex.split(command.split("  #")[0])
    assert words[0] == "trailwatch"
    build_parser().parse_args(words[1:])


SUBPARSERS = list(_subparsers(build_parser()))


@pytest.mark.parametrize("parser", SUBPARSERS, ids=lambda p: p.prog)
def test_every_subcommand_help_has_a_description_and_examples_that_parse(parser):
    text = parser.format_help()
    assert parser.description and len(parser.description) > 20, parser.prog
    found = examples(parser)
    assert 2 <= len(found) <= 3, (parser.prog, found)
    for example in found:
        parses(example)
    assert not [m for m in INTERNAL if m in text], text
    assert not re.search(r"\bissue \d+", text)
    assert "[global options]" in text.split("\n\n")[0]     # the usage line sums them up


@pytest.mark.parametrize("command,required", [
    ("plan", ["--trail NAME|ARN"]), ("verify", ["--trail NAME|ARN"]),
    ("remove", ["--trail NAME|ARN"]), ("subscribe", ["--trail NAME|ARN", "--destination ARN"]),
    ("rules export", ["--metric-filters", "--log-group NAME"])])
def test_required_options_are_shown_as_required(command, required):
    parser = next(p for p in SUBPARSERS if p.prog == f"trailwatch {command}")
    usage = " ".join(parser.format_usage().split())
    for option in required:
        assert option in usage and f"[{option}" not in usage, usage


def test_top_level_help_lists_the_commands_by_task():
    text = build_parser().format_help()
    tasks = text.split("commands by task:")[1].split("\n\n")[0]
    for command in ("plan", "apply", "verify", "remove", "subscribe", "rules", "replay", "demo",
                    "flow-logs", "readiness", "hunt"):
        assert re.search(rf"\b{command}\b", tasks), command
    for example in re.findall(r"^  (trailwatch .*)$", text, re.M):
        parses(example)


# ------------------------------------------------------------------------- hints

@pytest.fixture
def trails():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="trail-bucket")
        ct = boto3.client("cloudtrail", region_name="us-east-1")
        for name in ("nc-trail", "org-trail"):
            ct.create_trail(Name=name, S3BucketName="trail-bucket")
        yield


def test_a_misspelt_trail_lists_the_visible_trails_and_the_closest_name(trails):
    code, _, err = run(["plan", "--trail", "nc-trial", "--region", "us-east-1"])
    assert code == 1
    assert ("no trail 'nc-trial' is visible from us-east-1; trails visible there: nc-trail, "
            "org-trail (did you mean 'nc-trail'?)") in err
    fix = err.split("fix: ", 1)[1].strip()
    assert fix == "trailwatch plan --trail nc-trail --region us-east-1"
    with contextlib.redirect_stdout(io.StringIO()):
        assert run(shlex.split(fix)[1:])[0] == 0          # the fix works as printed


def test_no_close_name_still_lists_what_is_visible(trails):
    code, out, _ = run(["--output", "json", "verify", "--trail", "zzz"])
    assert code == 1
    assert "trails visible there: nc-trail, org-trail" in json.loads(out)["error"]["message"]


def test_every_fix_of_verify_is_a_command_for_this_trail(trails):
    code, out, _ = run(["verify", "--trail", "nc-trail", "--region", "us-east-1"])
    commands = re.findall(r"fix: .*?`?(trailwatch [^`\n(]*)", out)
    assert code == 1 and commands, out
    for command in commands:
        assert "--trail nc-trail --region us-east-1" in command, command
        parses(command.strip())
    code, out, _ = run(["verify", "--trail", "nc-trail", "--region", "us-east-1", "--output",
                        "json"])
    hints = [c["remediation"] for c in json.loads(out)["checks"] if "trailwatch " in
             c["remediation"]]
    assert hints and all("--trail nc-trail --region us-east-1" in h for h in hints)


def test_runnable_fills_what_a_hint_lacks_and_keeps_what_it_has():
    import argparse
    from setup.cli.failures import rerun, runnable
    args = argparse.Namespace(trail="org trail", region="eu-west-1", profile=None,
                              endpoint_url=None)
    assert runnable("run `trailwatch apply` (it adds the statement)", args) == \
        "run `trailwatch apply --trail 'org trail' --region eu-west-1` (it adds the statement)"
    assert runnable("trailwatch apply --trail other --retention-days 365", args) == \
        "trailwatch apply --region eu-west-1 --trail other --retention-days 365"
    assert runnable("trailwatch rules list", args) == "trailwatch rules --region eu-west-1 list"
    assert runnable("aws sns subscribe --topic-arn T", args) == "aws sns subscribe --topic-arn T"
    assert rerun(["apply", "--trail=x", "--region", "r"], {"--trail": "y", "--yes": None}) == \
        "trailwatch apply --trail y --region r --yes"
