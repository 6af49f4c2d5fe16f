"""Resolve a run's :class:`~setup.wiring.models.Target`: the trail, the caller, the log group and
role names (adopted or defaulted), and the ownership rules for a trail that delivers elsewhere.
"""

from __future__ import annotations

import argparse

from setup.aws import AwsClients
from setup.errors import SetupError, UsageError
from setup.wiring.models import Target, default_log_group, default_role_name
from setup.wiring.state import caller, find_trail, organization_id, resolve_kms_key


def checked_org_id(clients: AwsClients, region: str, given: str, trust: bool) -> list[str]:
    """``--org-id`` against organizations:DescribeOrganization, before anything is planned.

    The id becomes the ``o-<id>_*`` stream resource of the delivery policy: a wrong one keeps
    the management account's events flowing (so apply's own verify passes) and stops every member
    account's. A different id is refused; an id that cannot be checked (the call is denied, or
    the caller is not in the organization) is used only with ``--trust-org-id``, with a WARN."""
    try:
        actual = organization_id(clients, region)
    except SetupError as e:
        if not trust:
            raise SetupError(
                f"--org-id {given} cannot be checked against the organization ({e.message})",
                "grant organizations:DescribeOrganization so trailwatch can check it, or pass "
                "--trust-org-id to use it as given (a wrong id stops member accounts' events)",
                code="OrgIdUnverified") from None
        return [f"WARN: --org-id {given} was not checked ({e.message}); it is used as given "
                "(--trust-org-id): a wrong id stops member accounts' events"]
    if actual != given:
        raise SetupError(
            f"--org-id {given} is not this account's organization ({actual}, from "
            "organizations:DescribeOrganization): the delivery policy would grant "
            f"{given}_* and member accounts' events would stop reaching the log group",
            f"omit --org-id (trailwatch reads it) or pass --org-id {actual}",
            code="OrgIdMismatch")
    return []


def resolve_target(clients: AwsClients, args: argparse.Namespace, *, need_org_id: bool = True
                   ) -> tuple[Target, dict, list[str]]:
    if not getattr(args, "trail", None):
        raise UsageError("--trail is required", "pass --trail NAME|ARN")
    trail = find_trail(clients, args.trail)
    who = caller(clients, trail.home_region)
    notes: list[str] = []
    org_id = getattr(args, "org_id", None)
    if trail.is_org and need_org_id:
        if org_id:
            notes += checked_org_id(clients, trail.home_region, org_id,
                                    bool(getattr(args, "trust_org_id", False)))
        else:
            org_id = organization_id(clients, trail.home_region)
    log_group, role_name = args.log_group, args.role_name
    parts = trail.log_group_arn.split(":") if trail.log_group_arn else []
    current_group = parts[6] if len(parts) >= 7 else None
    same_place = bool(parts) and parts[3:5] == [trail.home_region, who["account"]]
    if parts and parts[4] != who["account"] and getattr(args, "command", "") in ("plan", "apply"):
        if not getattr(args, "take_over_delivery", False):
            raise SetupError(
                f"CHANGE OF OWNER: organization trail {trail.name} already delivers to log group "
                f"{current_group} in account {parts[4]} (the management account); applying "
                f"would re-point it to a group in this account ({who['account']}), and the "
                f"filters and subscriptions on {current_group} would stop receiving events",
                "run trailwatch from the account that owns the log group, or pass "
                "--take-over-delivery to move delivery here knowingly",
                code="DeliveryOwnedElsewhere")
        notes.append(f"CHANGE OF OWNER: delivery moves from {trail.log_group_arn} (account "
                     f"{parts[4]}) to this account (--take-over-delivery)")
    if not log_group:
        log_group = current_group if same_place and current_group else default_log_group(trail.name)
        if same_place and current_group:
            notes.append(f"the trail already delivers to {current_group}: adopting it")
    role_path = "/"
    if not role_name:
        if trail.role_arn and f":{who['account']}:role/" in trail.role_arn:
            path_name = trail.role_arn.split(":role", 1)[1]          # "/path/name"
            role_name = path_name.rsplit("/", 1)[1]
            role_path = path_name.rsplit("/", 1)[0] + "/"
            notes.append(f"the trail already uses role {trail.role_arn}: adopting it")
        else:
            role_name = default_role_name(trail.name, trail.home_region)
    kms_key = getattr(args, "kms_key", None)
    if kms_key:
        kms_key = resolve_kms_key(clients, kms_key, trail.home_region)
    target = Target(trail=trail, account=who["account"], log_group=log_group, role_name=role_name,
                    retention_days=getattr(args, "retention_days", None), kms_key=kms_key,
                    stream_scope=getattr(args, "stream_scope", "documented"), org_id=org_id,
                    role_path=role_path,
                    accepted_services=tuple(getattr(args, "accept_trusted_service", []) or ()),
                    take_over_delivery=bool(getattr(args, "take_over_delivery", False)))
    return target, who, notes
