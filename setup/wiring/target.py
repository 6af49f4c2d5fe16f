"""Resolve a run's :class:`~setup.wiring.models.Target`: the trail, the caller, the log group and
role names (adopted or defaulted), and the ownership rules for a trail that delivers elsewhere.
"""

from __future__ import annotations

import argparse

from setup.aws import AwsClients
from setup.errors import SetupError, UsageError
from setup.wiring.models import Target, default_log_group, default_role_name
from setup.wiring.state import caller, find_trail, organization_id, resolve_kms_key


def resolve_target(clients: AwsClients, args: argparse.Namespace, *, need_org_id: bool = True
                   ) -> tuple[Target, dict, list[str]]:
    if not getattr(args, "trail", None):
        raise UsageError("--trail is required", "pass --trail NAME|ARN")
    trail = find_trail(clients, args.trail)
    who = caller(clients, trail.home_region)
    notes: list[str] = []
    org_id = getattr(args, "org_id", None)
    if trail.is_org and not org_id and need_org_id:
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
