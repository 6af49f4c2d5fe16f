"""Is a CloudTrail record one of trailwatch's own, expected changes?

An alert is marked ``expected_change`` only when all three hold:

1. its principal is one the operator configured (``EXPECTED_CHANGE_PRINCIPALS``, contract name: a
   comma-separated list of role ARNs that run trailwatch, read and checked by
   :mod:`handlers.settings`: an entry that is not a role ARN could never match and is reported
   as a ``ConfigErrors`` setting). The principal is CloudTrail's own
   ``userIdentity`` (for an assumed role, ``sessionContext.sessionIssuer.arn``, else ``arn``),
   never a request field;
2. its user agent carries ``trailwatch/`` (what ``setup/aws.py`` sends);
3. it touches a resource trailwatch manages: the CloudTrail delivery role ``trailwatch-cwl-*`` and
   its inline policy ``trailwatch-cloudtrail-delivery`` (IAM calls), or a trail whose CloudWatch
   Logs role is such a role (CreateTrail/UpdateTrail).

With no principals configured nothing is marked. A user agent alone is attacker-controlled and
proves nothing; StopLogging, DeleteTrail, console logins and the like are never trailwatch's
changes. Marked alerts are still published (consumers decide what to do with the flag).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

USER_AGENT_MARKER = "trailwatch/"
ROLE_PREFIX = "trailwatch-cwl-"
POLICY_NAME = "trailwatch-cloudtrail-delivery"
IAM_CALLS = frozenset({"CreateRole", "UpdateAssumeRolePolicy", "PutRolePolicy", "TagRole",
                       "UpdateRole", "UpdateRoleDescription"})
TRAIL_CALLS = frozenset({"CreateTrail", "UpdateTrail"})


def _principal(record: Mapping[str, Any]) -> str | None:
    ui = record.get("userIdentity")
    if ui.__class__ is not dict:
        return None
    if ui.get("type") == "AssumedRole":
        ctx = ui.get("sessionContext")
        issuer = ctx.get("sessionIssuer") if ctx.__class__ is dict else None
        arn = issuer.get("arn") if issuer.__class__ is dict else None
        return arn if arn.__class__ is str else None
    arn = ui.get("arn")
    return arn if arn.__class__ is str else None


def _role_name(value: Any) -> str | None:
    """A role name from a name or an ARN (``arn:aws:iam::1:role/path/name``)."""
    if value.__class__ is not str:
        return None
    return value.rsplit("/", 1)[-1] if ":role/" in value else value


def touches_managed_resource(record: Mapping[str, Any]) -> bool:
    name = record.get("eventName")
    params = record.get("requestParameters")
    if params.__class__ is not dict or name.__class__ is not str:   # any JSON value in a record
        return False
    if name in IAM_CALLS and record.get("eventSource") == "iam.amazonaws.com":
        role = _role_name(params.get("roleName"))
        if role is None or not role.startswith(ROLE_PREFIX):
            return False
        return name != "PutRolePolicy" or params.get("policyName") == POLICY_NAME
    if name in TRAIL_CALLS and record.get("eventSource") == "cloudtrail.amazonaws.com":
        role = _role_name(params.get("cloudWatchLogsRoleArn"))
        return role is not None and role.startswith(ROLE_PREFIX)
    return False


def is_expected_change(record: Mapping[str, Any], principals: frozenset[str]) -> bool:
    if not principals:
        return False
    ua = record.get("userAgent")
    if ua.__class__ is not str or USER_AGENT_MARKER not in ua:
        return False
    if _principal(record) not in principals:
        return False
    return touches_managed_resource(record)
