"""What the local AWS (moto) needs to behave like AWS for cross-account subscriptions.

moto's PutSubscriptionFilter treats any ``logs`` ARN as a log group, so a CloudWatch Logs
*destination* ARN (``arn:aws:logs:R:A:destination:NAME``) is refused, and it counts an update of
an existing filter against the 2-filter limit. :func:`strict_destinations` makes it do what AWS
does (aws-facts 4.2, 4.5), more strictly than moto would:

- the destination must exist in its account, in the log group's Region;
- a caller from another account must be admitted by the destination's access policy (its account
  in ``Principal.AWS``, or ``Principal: "*"`` with ``aws:PrincipalOrgID`` equal to the caller's
  organization); no access policy means no cross-account subscription (AccessDeniedException);
- replacing a filter by name is an update, not a third filter.

Used by the demo and the tests (moto runs in-process, so patching its backend also covers the
ThreadedMotoServer). It forwards nothing: moto does not deliver to destinations.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from setup.policy_eval import as_list, matches_any


def _caller_org(account: str) -> str | None:
    from moto.organizations.models import organizations_backends
    for backend in _all_backends(organizations_backends):
        org = getattr(backend, "org", None)
        if org is None:
            continue
        members = {a.id for a in getattr(backend, "accounts", [])}
        if account == org.master_account_id or account in members:
            return org.id
    return None


def _all_backends(backends: Any) -> Iterator[Any]:
    for per_account in backends.values():
        yield from per_account.values()


def admits(policy_text: str | None, account: str) -> bool:
    """Does a destination access policy let ``account`` call PutSubscriptionFilter?"""
    if not policy_text:
        return False
    org = _caller_org(account)
    for st in as_list_of_dicts(json.loads(policy_text).get("Statement")):
        if st.get("Effect") != "Allow" or not matches_any(as_list(st.get("Action")),
                                                          "logs:PutSubscriptionFilter", True):
            continue
        principal = st.get("Principal")
        cond = st.get("Condition") or {}
        org_ids = [v for block in cond.values() for k, vals in (block or {}).items()
                   if k.lower() == "aws:principalorgid" for v in as_list(vals)]
        if principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*"):
            if org_ids and org in org_ids:
                return True
            continue
        aws = as_list(principal.get("AWS")) if isinstance(principal, dict) else []
        if any(p in (account, f"arn:aws:iam::{account}:root") for p in aws) and not cond:
            return True
    return False


def as_list_of_dicts(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    return [v for v in value or [] if isinstance(v, dict)]


@contextlib.contextmanager
def strict_destinations() -> Iterator[None]:
    from moto.core.exceptions import JsonRESTError
    from moto.logs.exceptions import (
        InvalidParameterException,
        ResourceNotFoundException,
    )
    from moto.logs.models import LogsBackend, logs_backends

    original = LogsBackend.put_subscription_filter

    def put_subscription_filter(self: Any, log_group_name: str, filter_name: str,
                                filter_pattern: str, destination_arn: str, role_arn: str) -> None:
        group = self.groups.get(log_group_name)
        if not group:
            raise ResourceNotFoundException()
        parts = destination_arn.split(":", 5)
        if len(parts) == 6 and parts[2] == "logs" and parts[5].startswith("destination:"):
            region, account, name = parts[3], parts[4], parts[5].split(":", 1)[1]
            if region != self.region_name:
                raise InvalidParameterException(
                    "The destination must be in the same Region as the log group")
            dests = logs_backends[account][region].destinations
            dest = next((d for d in dests.values() if d.destination_name == name), None)
            if dest is None:
                raise ResourceNotFoundException("The specified destination does not exist.")
            if account != self.account_id and not admits(dest.access_policy, self.account_id):
                raise JsonRESTError("AccessDeniedException",
                                    f"User with accountId: {self.account_id} is not authorized "
                                    f"to perform: logs:PutSubscriptionFilter on resource: "
                                    f"{destination_arn}")
        elif filter_name not in group.subscription_filters:
            return original(self, log_group_name, filter_name, filter_pattern, destination_arn,
                            role_arn)
        filters = group.subscription_filters
        if filter_name in filters:
            filters[filter_name].update(filter_pattern, destination_arn, role_arn)
            return None
        return group.put_subscription_filter(filter_name, filter_pattern, destination_arn,
                                             role_arn)

    LogsBackend.put_subscription_filter = put_subscription_filter  # type: ignore[method-assign]
    try:
        yield
    finally:
        LogsBackend.put_subscription_filter = original  # type: ignore[method-assign]
