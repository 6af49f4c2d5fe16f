"""Every way a ``trailwatch`` run can end badly, as one line the user can act on.

:func:`describe` turns any exception into a :class:`Failure`: what happened (one line), a ``fix:``
that is a command to paste (the trail, Region, profile and endpoint of this run filled in by
:func:`runnable`), the exit code and, for JSON output, the error object. The CLI's ``main`` has one
handler that calls it, so no exception reaches the user as a traceback unless ``--debug`` asks.
"""

from __future__ import annotations

import argparse
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    InvalidRegionError,
    NoCredentialsError,
    NoRegionError,
    ProfileNotFound,
    ProxyConnectionError,
    ReadTimeoutError,
)
from botocore.exceptions import SSLError as BotoSSLError
from botocore.parsers import ResponseParserError

from setup.errors import (
    EXIT_FAIL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    SetupError,
    error_code,
    error_message,
)
from setup.wiring.executor import StepFailure, StepInterrupted

# Commands that take --trail: a hint naming one of them gets this run's --trail filled in.
TRAIL_COMMANDS = ("plan", "apply", "verify", "remove", "subscribe")
# Global options carried into every hint when this run gave them on the command line.
_CARRIED = (("region", "--region"), ("profile", "--profile"), ("endpoint_url", "--endpoint-url"))

CREDENTIAL_CODES = {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
                    "UnrecognizedClientException", "SignatureDoesNotMatch", "AuthFailure",
                    "InvalidAccessKeyId", "InvalidSignatureException", "RequestExpired"}
DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation",
                "AuthorizationError"}


@dataclass
class Failure:
    code: str
    message: str
    remediation: str = ""
    exit_code: int = EXIT_FAIL
    extra: dict[str, Any] = field(default_factory=dict)
    text: str | None = None      # a multi-line report printed instead of the message


def _given(args: argparse.Namespace | None, name: str) -> Any:
    return getattr(args, name, None) if args is not None else None


def runnable(hint: str, args: argparse.Namespace | None) -> str:
    """``hint`` with every ``trailwatch <command>`` in it completed with this run's --trail (for
    the commands that take one) and the global options the run was given, so it can be pasted."""
    if not hint or args is None:
        return hint

    def fill(m: re.Match[str]) -> str:
        command, rest = m.group(1), m.group(2)
        add: list[str] = []
        trail = _given(args, "trail")
        if command in TRAIL_COMMANDS and trail and "--trail" not in rest and "--plan" not in rest:
            add += ["--trail", trail]
        for dest, flag in _CARRIED:
            value = _given(args, dest)
            if value and flag not in rest:
                add += [flag, value]
        return f"trailwatch {command}" + (" " + shlex.join(add) if add else "") + rest

    return re.sub(r"trailwatch (\w[\w-]*)((?: -[-\w]+(?:[ =](?!-)[^\s`;,()]+)?)*)", fill, hint)


def rerun(argv: list[str], replace: dict[str, str | None] | None = None) -> str:
    """This very command line again, with the options in ``replace`` set to their new values
    (added when absent; ``None`` means a flag without a value): ``trailwatch apply --trail main
    --yes``."""
    out: list[str] = []
    todo = dict(replace or {})
    i = 0
    while i < len(argv):
        a = argv[i]
        flag = a.split("=", 1)[0]
        if flag in todo:
            value = todo.pop(flag)
            if value is None:
                out.append(flag)
                i += 1
            else:
                out += [flag, value]
                i += 1 if "=" in a else 2
            continue
        out.append(a)
        i += 1
    for flag, value in todo.items():
        out += [flag] if value is None else [flag, value]
    return "trailwatch " + shlex.join(out)


def _step_report(e: StepFailure) -> dict[str, Any]:
    return {"done": [s.api for s in e.done], "failed": e.step.api,
            "not_run": [s.api for s in e.remaining]}


def _client_error(e: ClientError, args: argparse.Namespace | None) -> Failure:
    code, message = error_code(e), error_message(e)
    op = getattr(e, "operation_name", "") or "the call"
    if code in CREDENTIAL_CODES:
        profile = _given(args, "profile")
        who = f" --profile {shlex.quote(profile)}" if profile else ""
        return Failure(code, f"{code}: the credentials were refused ({message})",
                       f"aws sts get-caller-identity{who} must work first (for IAM Identity "
                       f"Center: aws sso login{who})")
    if code in DENIED_CODES:
        return Failure(code, f"{code}: {op}: {message}",
                       runnable("trailwatch plan --check-permissions", args)
                       if _given(args, "trail") else
                       "allow the action named above to these credentials")
    return Failure(code, f"{code}: {op}: {message}",
                   "re-run with --debug to see the request and AWS's answer")


def describe(e: BaseException, args: argparse.Namespace | None = None,
             argv: list[str] | None = None) -> Failure:
    """The one-line account of ``e`` (with a runnable fix) and the exit code it means."""
    argv = argv or []
    if isinstance(e, StepInterrupted):
        e.advice = f"Run `{rerun(argv)}` again"
        return Failure("Interrupted", "apply interrupted (Ctrl-C)", rerun(argv),
                       EXIT_INTERRUPTED, _step_report(e), text=e.report())
    if isinstance(e, StepFailure):
        e.advice = f"Fix the cause and run the same command again, `{rerun(argv)}`"
        return Failure(e.code, str(e), runnable(e.explanation, args), EXIT_FAIL,
                       _step_report(e), text=e.report())
    if isinstance(e, KeyboardInterrupt):
        return Failure("Interrupted", "interrupted (Ctrl-C) before any change was made",
                       rerun(argv), EXIT_INTERRUPTED)
    if isinstance(e, SetupError):
        retry = getattr(e, "retry_with", None)
        fix = rerun(argv, replace=retry) if retry and argv else runnable(e.remediation, args)
        return Failure(e.code, e.message, fix, e.exit_code)
    if isinstance(e, ClientError):
        return _client_error(e, args)
    if isinstance(e, ProfileNotFound):
        name = e.kwargs.get("profile") or _given(args, "profile") or "?"
        return Failure("ProfileNotFound", f"no AWS profile named {name!r} in the AWS config",
                       f"aws configure list-profiles (shows the profiles); aws configure "
                       f"--profile {shlex.quote(name)} (creates it)", EXIT_USAGE)
    if isinstance(e, NoCredentialsError):
        return Failure("NoCredentialsError", "no AWS credentials found",
                       "aws configure (or --profile NAME, or AWS_PROFILE); then "
                       "aws sts get-caller-identity must work", EXIT_USAGE)
    if isinstance(e, (NoRegionError, InvalidRegionError)):
        return Failure(type(e).__name__, str(e), "pass --region with a Region code such as "
                       "us-east-1 (aws ec2 describe-regions lists them)", EXIT_USAGE)
    if isinstance(e, (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError,
                      ReadTimeoutError, ProxyConnectionError, BotoSSLError)):
        return Failure("EndpointUnreachable", f"cannot reach AWS: {e}",
                       "check --region and --endpoint-url (or AWS_ENDPOINT_URL), the network "
                       "and any proxy (HTTPS_PROXY); --debug shows each request")
    if isinstance(e, ResponseParserError):
        return Failure("ResponseNotAws", "the endpoint's answer is not an AWS API response "
                       f"({str(e).splitlines()[0][:200]})",
                       "check --endpoint-url / AWS_ENDPOINT_URL (unset both to use AWS) and any "
                       "proxy between you and AWS")
    if isinstance(e, BotoCoreError):
        return Failure(type(e).__name__, str(e), "re-run with --debug for botocore's log")
    if isinstance(e, OSError) and e.filename:
        return Failure(type(e).__name__, f"{e.strerror or e}: {e.filename}",
                       "check the path and its permissions")
    return Failure("InternalError", f"unexpected error: {type(e).__name__}: {e}",
                   "re-run with --debug for the traceback, and report it with that output")
