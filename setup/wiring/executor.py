"""Run a plan's steps in order. UpdateTrail is retried only while IAM propagates.

Retry policy (aws-facts §2.4, as the Terraform provider does): retry
``InvalidCloudWatchLogs{Role,LogGroup}ArnException`` whose message contains "Access denied", plus
``ConflictException`` and throttling, with exponential backoff until ``propagation_timeout``.
Never retry "can't validate"/"cannot validate" (a bad ARN) or
``CloudWatchLogsDeliveryUnavailableException`` (a Region capability): explain them instead.
Clock and sleep are injected so tests run instantly and exactly.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from setup.aws import AwsClients
from setup.errors import error_code, error_message
from setup.wiring.planner import Plan, Step

THROTTLING = {"ThrottlingException", "Throttling", "TooManyRequestsException",
              "RequestLimitExceeded"}
ARN_ERRORS = {"InvalidCloudWatchLogsRoleArnException", "InvalidCloudWatchLogsLogGroupArnException"}


def snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


def classify_update_trail_error(code: str, message: str) -> tuple[bool, str]:
    """(retryable, explanation) for an UpdateTrail error."""
    low = message.lower()
    if code in ARN_ERRORS and "access denied" in low:
        return True, ("IAM has not propagated the new role or policy yet (CloudTrail could not "
                      "use the role): retrying")
    if code == "ConflictException":
        return True, "CloudTrail is still loading or modifying the trail: retrying"
    if code in THROTTLING:
        return True, "throttled: retrying"
    if code in ARN_ERRORS and ("can't validate" in low or "cannot validate" in low):
        return False, ("CloudTrail cannot validate the log group ARN. It must be the ARN ending "
                       "in ':*' of a log group that exists in this account and in the trail's "
                       "home region. trailwatch passes that form, so check that the log group "
                       "was not deleted meanwhile and that --region/--profile point at the "
                       "account that owns it.")
    if code == "CloudWatchLogsDeliveryUnavailableException":
        return False, ("CloudTrail cannot deliver to CloudWatch Logs in this Region (a Region "
                       "capability, not an IAM problem). Use a trail whose home region supports "
                       "CloudWatch Logs delivery.")
    if code == "InvalidHomeRegionException":
        return False, ("UpdateTrail must be called in the trail's home region. trailwatch reads "
                       "HomeRegion from DescribeTrails; pass the trail ARN to be explicit.")
    if code == "TrailNotFoundException":
        return False, ("the trail does not exist or is not visible to these credentials; for an "
                       "organization trail from a delegated administrator, pass its full ARN.")
    if code == "InvalidCloudWatchLogsRoleArnException":
        return False, ("CloudTrail rejected the role: its trust policy must allow "
                       "cloudtrail.amazonaws.com to sts:AssumeRole, and it must be in this account.")
    if code in ("AccessDenied", "AccessDeniedException"):
        return False, "your credentials are not allowed this call (see `plan --check-permissions`)"
    return False, "AWS refused the call"


@dataclass
class StepFailure(Exception):
    step: Step
    code: str
    message: str
    explanation: str
    done: list[Step] = field(default_factory=list)
    remaining: list[Step] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.step.api} failed: {self.code}: {self.message}"

    title = "apply stopped."
    mark = "FAILED  "
    advice = "Fix the cause and run the same `trailwatch apply` again"

    def details(self) -> list[str]:
        return [f"{self.code}: {self.message}", self.explanation]

    def report(self) -> str:
        """What was done, what failed (or was in flight), what did not run, and how to resume."""
        lines = [self.title, ""]
        lines += [f"  done     {s.api}: {s.message}" for s in self.done] or ["  done     (nothing)"]
        lines.append(f"  {self.mark} {self.step.api}: {self.step.message}")
        lines += [f"           {d}" for d in self.details()]
        lines += [f"  not run  {s.api}: {s.message}" for s in self.remaining]
        lines += ["", f"Nothing was rolled back. {self.advice}: it re-reads the account and does "
                      "only what is still missing."]
        return "\n".join(lines)


class StepInterrupted(StepFailure):
    """Ctrl-C during apply: the same done / in flight / not-run report, exit 130."""

    title = "apply interrupted (Ctrl-C)."
    mark = "INTERRUPTED"
    advice = "Run the same `trailwatch apply` again"

    def details(self) -> list[str]:
        return [self.message]


@dataclass
class Executor:
    clients: AwsClients
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    propagation_timeout: float = 120.0
    progress: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr))
    backoff: tuple[float, float] = (2.0, 20.0)   # first delay, cap

    def run(self, plan: Plan) -> list[Step]:
        done: list[Step] = []
        for i, step in enumerate(plan.steps):
            try:
                self.progress(f"-> {step.message}")
                self._call(step)
            except KeyboardInterrupt:
                raise StepInterrupted(step, "Interrupted", "interrupted (Ctrl-C) while this call "
                                      "was in flight: it may or may not have taken effect",
                                      "apply was interrupted", done,
                                      plan.steps[i + 1:]) from None
            except ClientError as e:
                code, msg = error_code(e), error_message(e)
                retryable, why = classify_update_trail_error(code, msg) \
                    if step.operation == "UpdateTrail" else (False, _explain(step, code))
                if step.operation == "UpdateTrail" and retryable:
                    why = (f"IAM did not let CloudTrail use the role within "
                           f"{self.propagation_timeout:.0f} s (--propagation-timeout). It usually "
                           "settles within two minutes: re-run apply.")
                raise StepFailure(step, code, msg, why, done, plan.steps[i + 1:]) from None
            done.append(step)
        return done

    def _call(self, step: Step) -> Any:
        client = self.clients.client(step.service, step.region)
        fn = getattr(client, snake(step.operation))
        if step.operation != "UpdateTrail":
            return fn(**step.params)
        start = self.monotonic()
        delay, cap = self.backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn(**step.params)
            except ClientError as e:
                code, msg = error_code(e), error_message(e)
                retryable, why = classify_update_trail_error(code, msg)
                elapsed = self.monotonic() - start
                if not retryable or elapsed + delay > self.propagation_timeout:
                    raise
                self.progress(f"   UpdateTrail attempt {attempt}: {code}: {msg} -- {why} in "
                              f"{delay:.0f} s ({elapsed:.0f}/{self.propagation_timeout:.0f} s)")
                self.sleep(delay)
                delay = min(cap, delay * 2)


def _explain(step: Step, code: str) -> str:
    if code in ("AccessDenied", "AccessDeniedException", "AccessDeniedFault"):
        return (f"your credentials may not call {step.api} (needs "
                f"{', '.join(step.iam_actions)}); `trailwatch plan --check-permissions` lists "
                "every action apply needs")
    if code in ("EntityAlreadyExists", "ResourceAlreadyExistsException"):
        return "it was created meanwhile (another run?); re-run apply to adopt it"
    if code in THROTTLING:
        return "throttled after the SDK's own retries; re-run apply"
    return "AWS refused the call"
