"""Help that teaches: every subcommand's ``--help`` has a description, its required options shown
as required in the usage line (the global options are summed up as ``[global options]``), and two
or three examples to paste. :func:`teach` applies this to a finished parser, so a subcommand
another module registers gets the same treatment; its own epilog, if it has one, is kept.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterable, Iterator

# Examples per subcommand (``prog`` without the leading "trailwatch ").
EXAMPLES: dict[str, list[str]] = {
    "plan": [
        "trailwatch plan --trail management-events --region us-east-1",
        "trailwatch plan --trail org-trail --cis-alarms --check-permissions",
        "trailwatch plan --trail org-trail --out plan.json      # then: apply --plan plan.json",
    ],
    "apply": [
        "trailwatch apply --trail org-trail                     # shows the plan, asks first",
        "trailwatch apply --trail org-trail --retention-days 400 --kms-key alias/audit --yes",
        "trailwatch apply --plan plan.json --yes                # exactly a saved plan",
    ],
    "verify": [
        "trailwatch verify --trail org-trail",
        "trailwatch verify --trail org-trail --canary           # a real event, end to end",
        "trailwatch --output json verify --trail arn:aws:cloudtrail:us-east-1:111122223333:trail/org",
    ],
    "remove": [
        "trailwatch remove --trail org-trail                    # detach only; asks first",
        "trailwatch remove --trail org-trail --delete-role --yes",
        "trailwatch remove --trail org-trail --delete-log-group --confirm-log-group CloudTrail/org-trail",
    ],
    "subscribe": [
        "trailwatch subscribe --trail org-trail --destination arn:aws:logs:us-east-1:999999999999:destination:tw-trail-events",
        "trailwatch plan --trail org-trail --destination ARN    # shows the step only",
    ],
    "demo": [
        "trailwatch demo",
        "trailwatch demo --broken-policy                        # verify catches a bad policy",
    ],
    "rules": [
        "trailwatch rules list --source pack",
        "trailwatch rules test --require-samples",
        "trailwatch rules backtest cloudtrail-logs/",
    ],
    "rules list": [
        "trailwatch rules list",
        "trailwatch rules list --source pack --output json",
        "trailwatch rules list my-rules.json",
    ],
    "rules test": [
        "trailwatch rules test",
        "trailwatch rules test my-rules.json --require-samples",
    ],
    "rules backtest": [
        "trailwatch rules backtest events.jsonl",
        "trailwatch rules backtest s3-export/ --rules-file my-rules.json --only-rules-file",
        "trailwatch rules backtest big.json.gz --batch-size 500 --output json",
    ],
    "rules lint": [
        "trailwatch rules lint",
        "trailwatch rules lint my-rules.json --output json",
    ],
    "rules export": [
        "trailwatch rules export --metric-filters --log-group CloudTrail/org-trail",
        "trailwatch rules export --metric-filters --log-group CloudTrail/org-trail --rule tw-root-console-login",
    ],
    "rules import-sigma": [
        "trailwatch rules import-sigma sigma/rules/cloud/aws/cloudtrail -o sigma-rules.json",
        "trailwatch rules import-sigma one-rule.yml",
    ],
    "flow-logs": [
        "trailwatch flow-logs plan --vpc vpc-0a1b2c3d --to s3://flow-logs-bucket",
        "trailwatch flow-logs apply --all-vpcs --to s3://flow-logs-bucket --yes",
        "trailwatch flow-logs verify --all-vpcs",
    ],
    "flow-logs plan": [
        "trailwatch flow-logs plan --vpc vpc-0a1b2c3d --to s3://flow-logs-bucket/vpc",
        "trailwatch flow-logs plan --all-vpcs --to s3://flow-logs-bucket --out flow-plan.json",
    ],
    "flow-logs apply": [
        "trailwatch flow-logs apply --vpc vpc-0a1b2c3d --to s3://flow-logs-bucket",
        "trailwatch flow-logs apply --plan flow-plan.json --yes",
    ],
    "flow-logs verify": [
        "trailwatch flow-logs verify --vpc vpc-0a1b2c3d",
        "trailwatch flow-logs verify --all-vpcs --output json",
    ],
    "flow-logs remove": [
        "trailwatch flow-logs remove --vpc vpc-0a1b2c3d        # asks first",
        "trailwatch flow-logs remove --all-vpcs --yes",
    ],
    "readiness": [
        "trailwatch readiness --region us-east-1",
        "trailwatch readiness --regions all --output json",
    ],
    "replay": [
        "trailwatch replay --queue-url https://sqs.us-east-1.amazonaws.com/111122223333/tw-failures --function tw-processor --dry-run",
        "trailwatch replay --bucket tw-failure-archive --function tw-processor  # discarded stream batches",
        "trailwatch replay --file failures.jsonl --local",
    ],
}

# What `trailwatch --help` lists, by task.
TASKS = """\
commands by task:
  wire a trail into CloudWatch Logs   plan, apply, verify, remove
  send its events to an audit account subscribe
  detection rules (offline)           rules list | test | backtest | lint | export | import-sigma
  after a processor failure           replay
  other log sources                   flow-logs plan | apply | verify | remove, readiness
  hunt through the trail's history    hunt
  try everything without AWS          demo
"""


class TeachingFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; the usage line shows the command's own options
    (required ones without brackets) and ``[global options]`` for the rest."""

    global_flags: frozenset[str] = frozenset()

    def _format_usage(self, usage, actions: Iterable[argparse.Action], groups, prefix):  # type: ignore[override]
        own = [a for a in actions if not set(a.option_strings) & self.global_flags]
        text = super()._format_usage(usage, own, groups, prefix)
        if len(own) == len(list(actions)):
            return text
        return text.rstrip("\n") + " [global options]\n\n"


def _wrap(text: str) -> str:
    """One-paragraph descriptions are wrapped; ones with their own layout are kept."""
    return text if "\n" in text.strip() else textwrap.fill(text.strip(), 78)


def subparsers(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """Every subcommand's parser, nested ones (``rules list``) included, each once, with its
    one-line summary (the ``help=`` it was registered with)."""
    seen: set[int] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {a.dest: a.help or "" for a in action._choices_actions}
            for name, p in action.choices.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p, summaries.get(name, "")
                    yield from subparsers(p)


def teach(parser: argparse.ArgumentParser, global_flags: Iterable[str]) -> None:
    """Give every subcommand parser the teaching formatter, a description (its one-line summary
    when it has none) and its examples."""
    formatter = type("Formatter", (TeachingFormatter,), {"global_flags": frozenset(global_flags)})
    for p, summary in subparsers(parser):
        name = p.prog.removeprefix("trailwatch ").strip()
        p.formatter_class = formatter
        p.description = _wrap(p.description or summary)
        examples = EXAMPLES.get(name)
        if examples and not p.epilog:
            p.epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)
