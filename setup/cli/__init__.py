"""The ``trailwatch`` command line: plan, apply, verify, remove (and demo).

    trailwatch plan   --trail NAME|ARN [options] [--out plan.json]       # no writes
    trailwatch apply  --trail NAME|ARN [options] [--yes]                  # executes the plan
    trailwatch apply  --plan plan.json [--yes]                            # executes a saved plan
    trailwatch verify --trail NAME|ARN                                    # read-only checks
    trailwatch remove --trail NAME|ARN [--yes] [--delete-log-group [--confirm-log-group NAME]]
                      [--delete-role]

The global options (:data:`GLOBAL_OPTIONS`: --region, --profile, --output text|json,
--endpoint-url, --debug, --no-progress) go before or after any subcommand. Exit codes (see
:mod:`setup.errors`): 0 success, 1 a FAIL, a failed apply, a refusal, a stale plan, a declined
prompt or an AWS error, 2 usage error, 130 interrupted, 141 stdout closed. :func:`main` has the
one exception handler: every error is ``trailwatch: <what>`` + ``fix: <command>`` on stderr
(:mod:`setup.cli.failures`), and with --output json also ``{"error": {"code", "message",
"remediation"}}`` on stdout; a traceback only with --debug.

Other modules add subcommands through :data:`REGISTRARS`: each is ``register(subparsers,
parents)``; it sets ``handler=fn`` with ``parser.set_defaults``, and ``fn(inv)`` gets an
:class:`Invocation` (args, out, stdin, lazily created clients) and returns the exit code. Every
subcommand parser then gets the global options it lacks and the help of :mod:`setup.cli.help`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import textwrap
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from setup import __version__
from setup.aws import AwsClients, check_region
from setup.cli import failures
from setup.cli import help as help_mod
from setup.cli import rules as rules_cmd
from setup.cli import subscribe
from setup.cli.commands import cmd_apply, cmd_plan, cmd_remove, cmd_verify
from setup.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)
from setup.verify import canary as canary_mod
from setup.wiring.executor import Executor
from setup.wiring.models import (
    RETENTION_DAYS,
    STREAM_SCOPES,
    TAG_KEY,
    TAG_VALUE,
    ModelError,
    validate_log_group_name,
    validate_retention,
    validate_role_name,
)

DESCRIPTION = """\
Wire an AWS CloudTrail trail into CloudWatch Logs the way AWS documents it, and prove it works.

For a single-account or an AWS Organizations trail, trailwatch creates (or adopts) the log group,
the IAM role CloudTrail assumes and its stream policy ({account}_CloudTrail_{region}* plus
o-{orgid}_* for organization trails), then calls UpdateTrail in the trail's home region, retrying
only while IAM propagates, and checks GetTrailStatus for delivery errors.

Safe in a shared account: everything it writes is tagged with the trail it serves and merged
(never blindly replaced), nothing is deleted unless no other trail uses it, nothing is shortened or
widened implicitly, and Control Tower resources are never touched.

Start with `trailwatch plan --trail NAME`: it shows every API call apply would make."""

EPILOG = help_mod.TASKS + """
examples:
  trailwatch plan   --trail management-events --region us-east-1
  trailwatch apply  --trail org-trail --retention-days 400 --kms-key alias/audit-logs
  trailwatch --output json verify --trail org-trail
  trailwatch remove --trail org-trail --yes --delete-role

exit codes: 0 success; 1 a verify FAIL (apply's too), a failed apply, a refusal, a stale plan, a
declined confirmation or an AWS error; 2 usage error (also: unknown profile, no region); 130
interrupted; 141 stdout closed by its reader. An error is one line, `trailwatch: <what>`, then
`fix: <command>`; with --output json also {"error": {"code", "message", "remediation"}} on stdout.

Credentials and endpoints come from the usual AWS chain (--profile, AWS_PROFILE, AWS_REGION,
--endpoint-url or AWS_ENDPOINT_URL for a local emulator). Every call carries the user agent
trailwatch/VERSION so trailwatch's own changes are recognisable in CloudTrail."""


def _retention(value: str) -> int:
    try:
        return validate_retention(int(value))
    except (ValueError, ModelError) as e:
        raise argparse.ArgumentTypeError(
            str(e) if isinstance(e, ModelError) else f"not a number: {value!r}") from None


def _org_id(value: str) -> str:
    if not value.startswith("o-") or len(value) < 12:
        raise argparse.ArgumentTypeError(f"an organization id looks like o-a1b2c3d4e5, not {value!r}")
    return value


def _name(validate: Callable[[str], str]) -> Callable[[str], str]:
    def check(value: str) -> str:
        try:
            return validate(value)
        except ModelError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return check


def _endpoint_url(value: str) -> str:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"an endpoint URL looks like http://localhost:5000 or "
                                         f"https://host, not {value!r}")
    return value


def _wrap(text: str) -> str:
    return textwrap.fill(text, 78)


class Parser(argparse.ArgumentParser):
    """Usage errors raise :class:`UsageError` so ``--output json`` can report them as JSON."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("trailwatch").strip()
        err = UsageError(f"{command}: {message}" if command else message, f"{self.prog} --help")
        err.usage = self.format_usage()      # the usage of the (sub)command that failed
        raise err


# Subcommands contributed by other modules: ``register(subparsers, parents)`` where ``parents``
# maps "globals", "trail", "wiring" to parent parsers. Append here (one line per module).
REGISTRARS: list[Callable[[Any, dict[str, argparse.ArgumentParser]], None]] = []


# The AWS CLI's global options, accepted before or after every subcommand (nested ones too).
GLOBAL_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--region", dict(metavar="REGION",
                      help="where to look the trail up (default: AWS_REGION, AWS_DEFAULT_REGION, "
                           "the profile's region); calls go to the trail's home region")),
    ("--allow-unknown-region", dict(action="store_true", default=False,
                                    help="accept a --region the installed botocore does not list "
                                         "(a Region newer than it); otherwise such a --region is "
                                         "a usage error")),
    ("--profile", dict(metavar="NAME", help="AWS profile to use (default: AWS_PROFILE)")),
    ("--output", dict(choices=("text", "json"), default="text",
                      help="output format (errors too: a JSON object on stdout)")),
    ("--endpoint-url", dict(metavar="URL", type=_endpoint_url,
                            help="send every AWS call to this endpoint (a local emulator; "
                                 "default: AWS, or AWS_ENDPOINT_URL)")),
    ("--debug", dict(action="store_true", default=False,
                     help="on stderr: botocore's log of every request, and the traceback of an "
                          "error")),
    ("--no-progress", dict(action="store_true", default=False,
                           help="no progress lines on stderr while waiting")),
]
_GLOBALS_TITLE = "global options (before or after the subcommand)"


def _add_global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Add the global options ``parser`` does not have yet. A subcommand's copies default to
    SUPPRESS so they never overwrite a value given before the subcommand; an option a subcommand
    defined itself (``rules list --output``) gets the same SUPPRESS default."""
    grp = None
    for flag, kw in GLOBAL_OPTIONS:
        if flag in parser._option_string_actions:
            if suppress:
                parser._option_string_actions[flag].default = argparse.SUPPRESS
            continue
        grp = grp or parser.add_argument_group(_GLOBALS_TITLE)
        grp.add_argument(flag, **dict(kw, **({"default": argparse.SUPPRESS} if suppress else {})))


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """A parent parser with the global options (see :func:`_add_global_options`)."""
    g = Parser(add_help=False)
    _add_global_options(g, suppress)
    return g


def _subparsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every subcommand's parser, nested ones (``rules list``) included, each once."""
    return (p for p, _ in help_mod.subparsers(parser))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="trailwatch", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter,
                    parents=[_global_options(False)])
    parser.add_argument("--version", action="version", version=f"trailwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    glob = _global_options(True)

    def trail_option(required: bool) -> argparse.ArgumentParser:
        p = Parser(add_help=False)
        p.add_argument_group("trail").add_argument(
            "--trail", metavar="NAME|ARN", required=required,
            help="the trail, by name or ARN (an ARN finds it from any region; the partition "
                 "comes from it)" + ("" if required else "; required unless --plan is given"))
        return p
    common, the_trail = trail_option(False), trail_option(True)
    org = Parser(add_help=False)
    org.add_argument("--org-id", type=_org_id, metavar="o-...",
                     help="organization id for org trails (default: "
                          "organizations:DescribeOrganization; a given id is checked against "
                          "it and refused if it differs)")
    org.add_argument("--trust-org-id", action="store_true",
                     help="use --org-id as given when organizations:DescribeOrganization is "
                          "denied (a WARN says so; a wrong id stops member accounts' events)")

    names = Parser(add_help=False)
    n = names.add_argument_group("which log group and role")
    n.add_argument("--log-group", metavar="NAME", type=_name(validate_log_group_name),
                   help="log group (default: the trail's current one, else CloudTrail/<trail>)")
    n.add_argument("--role-name", metavar="NAME", type=_name(validate_role_name),
                   help="IAM role CloudTrail assumes (default: the trail's current one, with its "
                        "path, else trailwatch-cwl-<trail>-<home region>, at most 64 characters)")

    trust = Parser(add_help=False)
    trust.add_argument("--accept-trusted-service", action="append", default=[], metavar="SERVICE",
                       help="knowingly accept another AWS service (e.g. ec2.amazonaws.com) in "
                            "the role's trust policy; reported as WARN. '*' and other accounts "
                            "are never accepted")

    wiring = Parser(add_help=False)
    w = wiring.add_argument_group("what to create or adopt")
    w.add_argument("--retention-days", type=_retention, default=None, metavar="N",
                   help="log retention. Default: new groups 365 days, an adopted group keeps "
                        "its own (never-expire included); a shorter value is a destructive "
                        f"step. One of {', '.join(map(str, RETENTION_DAYS))}")
    w.add_argument("--kms-key", metavar="KEY",
                   help="KMS key for the log group: key id, key ARN, alias/NAME or alias ARN, "
                        "resolved with DescribeKey (enabled, SYMMETRIC_DEFAULT, home region); "
                        "its policy must allow logs.<region>.amazonaws.com (the statement to "
                        "add is printed)")
    w.add_argument("--stream-scope", choices=STREAM_SCOPES, default="documented",
                   help="documented: only the stream prefixes CloudTrail uses (default); "
                        "group: every stream of the log group")
    w.add_argument("--cis-alarms", action="store_true",
                   help="also deploy the 15 CIS monitoring controls as metric filters (exact "
                        "Security Hub strings, namespace CISBenchmark) and alarms, named per "
                        "log group")
    w.add_argument("--alarm-topic", metavar="ARN",
                   help="SNS topic for the CIS alarms: must exist in this account and the "
                        "trail's home region (default: create trailwatch-cis-<log group id>)")
    w.add_argument("--take-over-delivery", action="store_true",
                   help="from a delegated administrator: re-point an organization trail that "
                        "delivers to a log group in another account (the management account's "
                        "filters and subscriptions stop receiving events)")
    subscribe.add_arguments(w)   # --destination, --subscription-role

    parents = {"globals": glob, "trail": common, "trail_required": the_trail, "org": org,
               "names": names, "wiring": wiring, "trust": trust}
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("plan", parents=[glob, the_trail, org, names, trust, wiring], formatter_class=fmt,
                       help="show what apply would do (no writes)",
                       description=_wrap("Read the account and print the ordered API calls apply would "
                                   "make, the full policy documents and the IAM actions needed. "
                                   "Destructive steps are marked."))
    p.add_argument("--check-permissions", action="store_true",
                   help="ask IAM (SimulatePrincipalPolicy, with resource ARNs and "
                        "iam:PassedToService) whether your principal may make every call of "
                        "plan, apply and its verify")
    p.add_argument("--out", metavar="FILE",
                   help="save the plan with a digest of the state it was computed from; "
                        "`apply --plan FILE` executes exactly it, or refuses if the state changed")
    p.set_defaults(handler=lambda inv: cmd_plan(inv.clients, inv.args, inv.out))

    a = sub.add_parser("apply", parents=[glob, common, org, names, trust, wiring], formatter_class=fmt,
                       help="execute the plan, then verify (exit 1 on a verify FAIL)",
                       description=_wrap("Execute the plan. Without --yes it asks on a terminal and "
                                   "refuses (exit 2) when input is not a terminal. A re-run "
                                   "converges: it only does what is still missing. Ctrl-C "
                                   "prints what was done and exits 130."))
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    a.add_argument("--propagation-timeout", type=float, default=120.0, metavar="SECONDS",
                   help="how long to retry UpdateTrail while IAM propagates (default 120)")
    a.add_argument("--plan", metavar="FILE", dest="plan_file",
                   help="execute a plan saved by `plan --out` (exit 1 if the account changed "
                        "since; the other wiring options come from the file)")
    canary_mod.add_arguments(a, apply=True)   # --canary, --wait, ...
    a.set_defaults(handler=lambda inv: cmd_apply(inv.clients, inv.args, inv.out, inv.stdin,
                                                 inv.executor_factory))

    v = sub.add_parser("verify", parents=[glob, the_trail, org, names, trust], formatter_class=fmt,
                       help="read-only checks: PASS / WARN / FAIL with remediation",
                       description=_wrap("Check the trail, log group, role, trust and stream policy "
                                   "(evaluated locally against the exact stream names) and "
                                   "GetTrailStatus delivery. Exit 1 when any check FAILs."))
    canary_mod.add_arguments(v)   # --canary, --canary-timeout, --max-delivery-age
    v.add_argument("--chat-topic", metavar="ARN",
                   help="also check the template's ChatTopicArn (check chat.topic): a FIFO topic "
                        "or one under a customer managed KMS key cannot reach a chat channel")
    v.set_defaults(handler=lambda inv: cmd_verify(inv.clients, inv.args, inv.out))

    r = sub.add_parser("remove", parents=[glob, the_trail, names], formatter_class=fmt,
                       help="detach the trail; delete only what is provably unused",
                       description=_wrap("Detach the trail (both CloudWatch Logs fields set to empty) "
                                   "and its CIS filters/alarms/topic. Deletes the role and the "
                                   "log group only when asked, only when tagged "
                                   f"{TAG_KEY}={TAG_VALUE}, and only when no other trail in any "
                                   "region uses them (DescribeTrails); whatever is kept is "
                                   "listed with the reason. Control Tower resources are refused."))
    r.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    r.add_argument("--delete-log-group", action="store_true",
                   help="also delete the log group if trailwatch created it and no other trail "
                        "uses it; one that still holds events also needs --confirm-log-group")
    r.add_argument("--confirm-log-group", metavar="NAME",
                   help="name the log group to confirm deleting it with all its events")
    r.add_argument("--delete-role", action="store_true",
                   help="also delete the role if trailwatch created it and no other trail uses it")
    r.set_defaults(handler=lambda inv: cmd_remove(inv.clients, inv.args, inv.out, inv.stdin,
                                                  inv.executor_factory))

    d = sub.add_parser("demo", parents=[glob], formatter_class=fmt,
                       help="run the whole path on an embedded local AWS (needs trailwatch[demo])",
                       description=_wrap("Start a local moto server, create an organization trail, "
                                   "run plan/apply/verify, simulate CloudTrail delivery, process "
                                   "the events and read the alerts back. Needs the demo extra: "
                                   "pip install 'trailwatch[demo]'."))
    d.add_argument("--broken-policy", action="store_true",
                   help="scenario: a single-account stream policy on an org trail; verify "
                        "catches the member-account delivery failure")
    d.set_defaults(handler=_run_demo, needs_aws=False)

    for register in REGISTRARS:
        register(sub, parents)
    for p in _subparsers(parser):   # whatever a registrar added: the globals work there too
        _add_global_options(p, suppress=True)
    help_mod.teach(parser, [flag for flag, _ in GLOBAL_OPTIONS])
    return parser


def _register_subscribe(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch subscribe`."""
    wiring = Parser(add_help=False)
    subscribe.add_arguments(wiring.add_argument_group("subscription"), required=True)
    s = subscribe.register(sub, [parents["globals"], parents["trail_required"], parents["names"],
                                 wiring])
    s.set_defaults(handler=lambda inv: subscribe.cmd_subscribe(
        inv.clients, inv.args, inv.out, inv.stdin, inv.executor_factory))


def _register_rules(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch rules list|test|backtest|lint|export|import-sigma`: no AWS calls."""
    rules_cmd.register(sub)
    sub.choices["rules"].set_defaults(handler=lambda inv: rules_cmd.run(inv.args, inv.out),
                                      needs_aws=False)


def _register_replay(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch replay`: re-drive failure records into the processor."""
    from setup.cli import replay
    replay.register(sub, [parents["globals"]])

    def run(inv: Invocation) -> int:
        def client(service: str) -> Any:   # --profile, --region, --endpoint-url of this run
            return inv.clients.session.client(service, region_name=inv.args.region,
                                              endpoint_url=inv.args.endpoint_url)
        return replay.cmd_replay(inv.args, inv.out, client)
    sub.choices["replay"].set_defaults(handler=run)


def _register_hunt(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch hunt`: a rule over the trail's log group history (read-only)."""
    from setup.cli import hunt
    h = hunt.register(sub, [parents["globals"], parents["trail"]])
    h.set_defaults(handler=lambda inv: hunt.cmd_hunt(inv.clients, inv.args, inv.out))


REGISTRARS += [_register_subscribe, _register_rules, _register_replay, _register_hunt]


def _register_log_sources(sub: Any, parents: dict[str, argparse.ArgumentParser]) -> None:
    """`trailwatch flow-logs plan|apply|verify|remove` and `trailwatch readiness`."""
    from setup.cli import flowlogs, readiness
    flowlogs.register(sub, parents)
    readiness.register(sub, parents)


REGISTRARS.append(_register_log_sources)


def _run_demo(inv: Invocation) -> int:
    """The demo sits beside the product: imported only here, and it drives the CLI through the
    function it is handed (it never imports this module)."""
    try:
        import moto.server  # noqa: F401

        from setup.demo.run import run_demo
    except ImportError as e:
        raise UsageError(f"`trailwatch demo` needs the demo dependencies ({e.name} is missing)",
                         "pip install 'trailwatch[demo]'", code="DemoDependenciesMissing") from None
    return run_demo(output=inv.args.output, broken_policy=inv.args.broken_policy, out=inv.out,
                    cli=main)


# ----------------------------------------------------------------------------------- main

@dataclass
class Invocation:
    """What a subcommand handler gets: parsed args, streams, and AWS clients created on use."""

    args: argparse.Namespace
    out: TextIO
    stdin: TextIO
    executor_factory: Callable[[AwsClients, float], Executor]
    _clients: AwsClients | None = None

    @property
    def clients(self) -> AwsClients:
        if self._clients is None:
            self._clients = AwsClients(profile=self.args.profile, region=self.args.region,
                                       endpoint_url=self.args.endpoint_url)
        return self._clients


def _wants_json(argv: list[str]) -> bool:
    for i, a in enumerate(argv):
        if a == "--output=json" or (a == "--output" and argv[i + 1:i + 2] == ["json"]):
            return True
    return False


def _error(out: TextIO, as_json: bool, f: failures.Failure) -> None:
    print(f.text if f.text is not None else f"trailwatch: {f.message}", file=sys.stderr)
    if f.remediation and f.text is None:
        print(f"fix: {f.remediation}", file=sys.stderr)
    if as_json:
        err: dict[str, Any] = {"code": f.code, "message": f.message, "remediation": f.remediation}
        err.update(f.extra)
        print(json.dumps({"error": err}, indent=2), file=out)


@contextlib.contextmanager
def _debug_log(on: bool) -> Iterator[None]:
    """--debug: botocore's and boto3's DEBUG log on stderr (each request and response)."""
    if not on:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    loggers = [logging.getLogger(n) for n in ("botocore", "boto3", "urllib3")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)


def _quiet_stdout(out: TextIO) -> None:
    """The reader of our stdout went away (``| head``): send what is left to /dev/null, so the
    interpreter's last flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):   # not a real file (a test's StringIO)
        pass


def main(argv: list[str] | None = None, *, out: TextIO | None = None, stdin: TextIO | None = None,
         clients: AwsClients | None = None,
         executor_factory: Callable[[AwsClients, float], Executor] | None = None) -> int:
    """Run one ``trailwatch`` command line and return its exit code. Every exception ends here
    as ``trailwatch: <what>`` + ``fix: <command>`` (a traceback only with --debug); a closed
    stdout pipe ends quietly with 141, as a process killed by SIGPIPE does."""
    out = out or sys.stdout
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with _debug_log(debug):
            code = _run(argv, out, stdin or sys.stdin, clients, executor_factory, debug)
            out.flush()
        return code
    except BrokenPipeError:
        _quiet_stdout(out)
        return EXIT_BROKEN_PIPE


def _run(argv: list[str], out: TextIO, stdin: TextIO, clients: AwsClients | None,
         executor_factory: Callable[[AwsClients, float], Executor] | None, debug: bool) -> int:
    as_json = _wants_json(argv)
    args: argparse.Namespace | None = None
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as e:   # --help / --version
            return EXIT_USAGE if e.code not in (0, None) else EXIT_OK
        except UsageError as e:
            print(getattr(e, "usage", None) or parser.format_usage(), end="", file=sys.stderr)
            raise
        as_json = args.output == "json"
        if executor_factory is None:
            quiet = {"progress": lambda message: None} if args.no_progress else {}

            def executor_factory(c: AwsClients, timeout: float) -> Executor:
                return Executor(c, sleep=time.sleep, propagation_timeout=timeout, **quiet)
        inv = Invocation(args, out, stdin, executor_factory, clients)
        check_region(getattr(args, "region", None), getattr(args, "allow_unknown_region", False))
        return args.handler(inv)
    except BrokenPipeError:
        raise
    except (Exception, KeyboardInterrupt) as e:
        if debug:
            traceback.print_exc(file=sys.stderr)
        failure = failures.describe(e, args, argv)
        _error(out, as_json, failure)
        return failure.exit_code
