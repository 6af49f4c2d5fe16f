"""The AWS CLI's conventions, command by command: global options before or after any subcommand
(nested ones too), exit codes as the README's table says (2 for every usage error, a declined
prompt is not success), and JSON errors with --output json."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile

import boto3
import pytest
from moto import mock_aws

from setup.cli import GLOBAL_OPTIONS, _subparsers, build_parser, main


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(argv: list[str], stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv, out=out, stdin=stdin or io.StringIO(""))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def aws():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="trail-bucket")
        boto3.client("cloudtrail", region_name="us-east-1").create_trail(
            Name="main", S3BucketName="trail-bucket")
        with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
            yield


# ------------------------------------------------------------------------- global options

def test_every_subcommand_accepts_every_global_option():
    parser = build_parser()
    names = []
    for p in _subparsers(parser):
        names.append(p.prog)
        for flag, _ in GLOBAL_OPTIONS:
            action = p._option_string_actions.get(flag)
            assert action is not None, f"{p.prog} lacks {flag}"
            assert action.default is argparse.SUPPRESS, f"{p.prog} {flag} would overwrite"
    assert {"trailwatch rules list", "trailwatch replay", "trailwatch plan",
            "trailwatch demo", "trailwatch rules backtest"} <= set(names)


@pytest.mark.parametrize("argv", [
    ["--output", "json", "--region", "eu-west-1", "--profile", "p", "--endpoint-url", "http://x",
     "--debug", "--no-progress", "verify", "--trail", "t"],
    ["verify", "--trail", "t", "--output", "json", "--region", "eu-west-1", "--profile", "p",
     "--endpoint-url", "http://x", "--debug", "--no-progress"],
    ["--output", "json", "--region", "eu-west-1", "rules", "--profile", "p", "list",
     "--endpoint-url", "http://x", "--debug", "--no-progress"],
    ["--region", "eu-west-1", "--profile", "p", "replay", "--file", "f", "--local", "--output",
     "json", "--endpoint-url", "http://x", "--debug", "--no-progress"],
])
def test_global_options_before_or_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert (args.output, args.region, args.profile, args.endpoint_url, args.debug,
            args.no_progress) == ("json", "eu-west-1", "p", "http://x", True, True)


def test_global_defaults_when_not_given():
    args = build_parser().parse_args(["rules", "list"])
    assert (args.output, args.region, args.profile, args.endpoint_url, args.debug,
            args.no_progress) == ("text", None, None, None, False, False)


@pytest.mark.parametrize("argv", [["--output", "json", "rules", "list"],
                                  ["rules", "--output", "json", "list"],
                                  ["rules", "list", "--output", "json"]])
def test_output_json_rules_list_prints_json(argv):
    code, out, _ = run(argv)
    assert code == 0 and {r["id"] for r in json.loads(out)} >= {"cis-4.3"}


# ------------------------------------------------------------------------- exit codes

USAGE_ERRORS = [
    [],                                                        # no command
    ["nosuch"],                                                # unknown command
    ["--output", "yaml", "rules", "list"],                     # bad global value
    ["plan"],                                                  # --trail missing
    ["plan", "--trail", "main", "--retention-days", "42"],     # a value CloudWatch refuses
    ["plan", "--trail", "main", "--alarm-topic", "arn:aws:sns:us-east-1:1:t"],  # needs --cis-alarms
    ["apply"],                                                 # neither --trail nor --plan
    ["apply", "--trail", "main"],                              # no --yes, input not a terminal
    ["verify", "--trail", "main", "--retention-days", "30"],   # an option verify does not use
    ["remove", "--trail", "main", "--confirm-log-group", "g"],  # needs --delete-log-group
    ["subscribe", "--trail", "main"],                          # --destination missing
    ["rules"],                                                 # no action
    ["rules", "list", "--source", "nope"],
    ["rules", "export", "--log-group", "g"],                   # --metric-filters missing
    ["rules", "export", "--metric-filters", "--log-group", "g", "--rule", "nope"],
    ["rules", "backtest", "missing.jsonl"],
    ["rules", "backtest", "--batch-size", "0", "."],
    ["replay"],                                                # --queue-url or --file missing
    ["replay", "--file", "f.json"],                            # --function or --local missing
    ["demo", "--nope"],
    ["--endpoint-url", "localhost:5000", "verify", "--trail", "main"],   # no scheme
]


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=lambda a: " ".join(a) or "(none)")
def test_every_usage_error_exits_2(aws, argv):
    code, _, err = run(argv)
    assert code == 2, err
    assert "Traceback" not in err and err.strip()


@pytest.mark.parametrize("argv", [a for a in USAGE_ERRORS
                                  if a and "yaml" not in a and a[0] not in ("rules", "nosuch")],
                         ids=lambda a: " ".join(a))
def test_usage_errors_are_json_on_stdout_with_output_json(aws, argv):
    code, out, _ = run(["--output", "json", *argv])
    err = json.loads(out)["error"]
    assert code == 2 and err["code"] and err["message"] and err["remediation"]


def test_no_region_is_a_usage_error(aws, monkeypatch):
    for key in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    code, _, err = run(["verify", "--trail", "main"])
    assert code == 2 and "no AWS region" in err


@pytest.mark.parametrize("argv,expected", [
    (["--help"], 0), (["plan", "--help"], 0), (["rules", "list", "--help"], 0),
    (["--version"], 0), (["rules", "list"], 0),
    (["plan", "--trail", "main"], 0),
    (["verify", "--trail", "main"], 1),               # an unwired trail FAILs its checks
    (["plan", "--trail", "nosuch-trail"], 1),         # not found: an answer, not a usage error
])
def test_exit_codes_of_ordinary_runs(aws, argv, expected):
    with contextlib.redirect_stdout(io.StringIO()):
        code, _, err = run(argv)
    assert code == expected, err


@pytest.mark.parametrize("verb", ["apply", "remove"])
def test_a_declined_prompt_is_not_success(aws, verb):
    if verb == "remove":
        assert run(["apply", "--trail", "main", "--yes"])[0] in (0, 1)
    code, out, _ = run([verb, "--trail", "main"], stdin=Tty("n\n"))
    assert code == 1 and "not confirmed" in out


def test_refusal_without_a_terminal_prints_the_command_to_run():
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="trail-bucket")
        boto3.client("cloudtrail", region_name="us-east-1").create_trail(
            Name="main", S3BucketName="trail-bucket")
        code, _, err = run(["apply", "--trail", "main", "--region", "us-east-1"])
    assert code == 2
    assert "fix: trailwatch apply --trail main --region us-east-1 --yes" in err


# ------------------------------------------------------------------------- progress

@pytest.mark.parametrize("tty,no_progress,shown", [(True, False, True), (True, True, False),
                                                   (False, False, False)])
def test_waiting_progress_only_on_a_terminal_and_never_with_no_progress(monkeypatch, tty,
                                                                         no_progress, shown):
    from setup.verify import canary
    err = Tty() if tty else io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    canary.progress_for(argparse.Namespace(no_progress=no_progress))("waiting for delivery")
    assert ("waiting for delivery" in err.getvalue()) is shown


def test_a_usage_error_shows_the_subcommand_usage_one_prefix_and_its_help_as_the_fix():
    code, _, err = run(["plan", "--trail", "t", "--retention-days", "42"])
    lines = err.splitlines()
    assert code == 2 and lines[0].startswith("usage: trailwatch plan ")
    assert any(ln.startswith("trailwatch: plan: argument --retention-days:") for ln in lines)
    assert "trailwatch: trailwatch" not in err and lines[-1] == "fix: trailwatch plan --help"
