"""Resource policies that admit AWS's log delivery service, built and compared without AWS calls.

Vended logs (VPC flow logs, WAF, Route 53 resolver, ...) reach S3 and CloudWatch Logs through
``delivery.logs.amazonaws.com`` ("log-delivery-permissions-and-confused-deputy.md" in
``../shared/reference/seeds/``). The resource policies that admit it are usually shared: a bucket
policy or a Region's CloudWatch Logs resource policies hold other teams' statements too. So:

- statements are MERGED, compared without Sids (string-or-list, order and key order do not matter
  either, :func:`~setup.wiring.models.canonical`); a statement that differs from a wanted one only
  in its ``Resource`` gains the wanted resources (the seeds' way of adding an account or a prefix);
- every statement trailwatch writes carries ``aws:SourceAccount`` and ``aws:SourceArn`` (confused
  deputy), and :func:`admits` evaluates conditions against the request context the service sends,
  so a policy is judged as AWS would judge it, not by its shape;
- documents are sent compact (:func:`compact`), the form their size limits are checked on.
"""

from __future__ import annotations

import json
from typing import Any

from setup.errors import SetupError
from setup.policy_eval import as_list, matches_any
from setup.wiring.models import canonical, short_id
from setup.wiring.planner import Step

DELIVERY_SERVICE = "delivery.logs.amazonaws.com"
# S3 User Guide, "Bucket policies and user policies": "Bucket policies are limited to 20 KB".
BUCKET_POLICY_LIMIT = 20 * 1024
# log-delivery-permissions-and-confused-deputy.md: "CloudWatch Logs resource policies are limited
# to 5120 characters".
RESOURCE_POLICY_CHARS = 5120


def statements(doc: Any) -> list[dict[str, Any]]:
    if isinstance(doc, str):
        doc = json.loads(doc) if doc.strip() else {}
    st = (doc or {}).get("Statement", []) if isinstance(doc, dict) else []
    return [st] if isinstance(st, dict) else [s for s in st if isinstance(s, dict)]


def shape(stmt: dict[str, Any]) -> Any:
    """A statement without Sid and Resource, normalised (string-or-list, order, key order)."""
    return canonical({k: v for k, v in stmt.items() if k not in ("Sid", "Resource")})


def compact(doc: Any) -> str:
    """A policy as sent: no whitespace (what the size limits are checked against)."""
    return json.dumps(doc, separators=(",", ":"))


def policy_bytes(doc: Any) -> int:
    return len(compact(doc).encode("utf-8"))


def merge_statements(current: Any, wanted: list[dict[str, Any]]) -> dict[str, Any]:
    """``current`` with each wanted statement present, compared without Sids: a statement that
    differs from a wanted one only in its Resource gains the wanted resource (the seeds' way of
    adding an account or a prefix); otherwise the wanted statement is appended, under its seed Sid
    or, when another statement holds that Sid, a suffixed one. Nothing else changes."""
    doc = dict(current) if isinstance(current, dict) else {}
    doc = {"Version": doc.get("Version", "2012-10-17"), **doc}
    stmts = [dict(s) for s in statements(current)]
    for want in wanted:
        res = as_list(want.get("Resource"))
        hit = next((s for s in stmts if shape(s) == shape(want)), None)
        if hit is not None:
            have = as_list(hit.get("Resource"))
            missing = [r for r in res if not matches_any(have, r)]
            if missing:
                hit["Resource"] = have + missing
            continue
        sid = want.get("Sid")
        taken = {s.get("Sid") for s in stmts}
        if sid and sid in taken:
            sid = f"{sid}{short_id(json.dumps(canonical(want), sort_keys=True)).upper()}"
        stmts.append(dict(want, Sid=sid))
    doc["Statement"] = stmts
    return doc


def unmerge_statements(current: Any, wanted: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The inverse: drop the wanted resources from statements of the wanted shape (a statement
    left without resources goes); other statements are kept as they are. ``None`` when nothing
    is left at all (DeleteBucketPolicy)."""
    doc = dict(current) if isinstance(current, dict) else {"Version": "2012-10-17"}
    out = []
    for s in statements(current):
        want = next((w for w in wanted if shape(w) == shape(s)), None)
        if want is None:
            out.append(s)
            continue
        left = [r for r in as_list(s.get("Resource")) if r not in as_list(want["Resource"])]
        if left or "Resource" not in s:
            out.append(dict(s, Resource=left if len(left) > 1 or isinstance(
                s.get("Resource"), list) else left[0]))
    if not out:
        return None
    doc["Statement"] = out
    return doc


def has_statements(current: Any, wanted: list[dict[str, Any]]) -> bool:
    """Every wanted statement present (Sid-insensitive; resource lists may hold more)."""
    return canonical(merge_statements(current, wanted)["Statement"]) == \
        canonical([dict(s) for s in statements(current)])


def condition_holds(cond: dict[str, Any] | None, ctx: dict[str, str]) -> bool:
    """Evaluate a Condition block against a request context (the operators delivery policies
    use: String/Arn Equals/Like, and their IfExists forms). A key missing from the context fails
    the operator (IfExists passes)."""
    for op, block in (cond or {}).items():
        base, if_exists = (op[:-8], True) if op.endswith("IfExists") else (op, False)
        for key, values in (block or {}).items():
            have = next((v for k, v in ctx.items() if k.lower() == key.lower()), None)
            if have is None:
                if if_exists:
                    continue
                return False
            vals = as_list(values)
            if base in ("StringEquals", "ArnEquals"):
                ok = have in vals
            elif base in ("StringLike", "ArnLike"):
                ok = matches_any(vals, have)
            elif base == "StringEqualsIgnoreCase":
                ok = have.lower() in [v.lower() for v in vals]
            elif base == "StringNotEquals":
                ok = have not in vals
            elif base in ("StringNotLike", "ArnNotLike"):
                ok = not matches_any(vals, have)
            else:
                return False        # an operator we cannot judge: not admitted (conservative)
            if not ok:
                return False
    return True


def admits(policy: Any, service: str, action: str, resource: str, ctx: dict[str, str]) -> bool:
    """Does a resource policy let ``service`` call ``action`` on ``resource`` in context ``ctx``?
    An explicit Deny that applies wins."""
    allowed = False
    for s in statements(policy):
        principal = s.get("Principal")
        services = as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if not (principal == "*" or service in services or
                (isinstance(principal, dict) and principal.get("AWS") == "*")):
            continue
        if "Action" in s and not matches_any(as_list(s["Action"]), action, True):
            continue
        if "NotAction" in s and matches_any(as_list(s["NotAction"]), action, True):
            continue
        if "Resource" in s and not matches_any(as_list(s["Resource"]), resource):
            continue
        if not condition_holds(s.get("Condition"), ctx):
            continue
        if s.get("Effect") == "Deny":
            return False
        if s.get("Effect") == "Allow":
            allowed = True
    return allowed


def unconditioned_grants(policy: Any) -> list[str]:
    """Sids (or indexes) of Allow statements for delivery.logs without both confused-deputy keys."""
    out = []
    for i, s in enumerate(statements(policy)):
        principal = s.get("Principal")
        services = as_list(principal.get("Service")) if isinstance(principal, dict) else []
        if s.get("Effect") != "Allow" or DELIVERY_SERVICE not in services:
            continue
        keys = {k.lower() for block in (s.get("Condition") or {}).values() for k in (block or {})}
        if not {"aws:sourceaccount", "aws:sourcearn"} <= keys:
            out.append(s.get("Sid") or f"#{i}")
    return out


# ----------------------------------------------------------------------------------- CloudWatch Logs

# CloudWatch Logs quotas: "Up to 10 CloudWatch Logs resource policies per Region per account. This
# quota can't be changed" (moto enforces the same count).
RESOURCE_POLICIES_PER_REGION = 10
CWL_POLICY_NAME = "trailwatch-log-delivery"
CWL_SID = "AWSLogDeliveryWrite20150319"


def cwl_delivery_statement(account: str, region: str, partition: str,
                           log_groups: list[str]) -> dict[str, Any]:
    """The seed's log-group resource-policy statement ("Logs sent to CloudWatch Logs"), with both
    confused-deputy conditions, for these log groups' streams."""
    base = f"arn:{partition}:logs:{region}:{account}:log-group:"
    return {"Sid": CWL_SID, "Effect": "Allow", "Principal": {"Service": [DELIVERY_SERVICE]},
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [f"{base}{g}:log-stream:*" for g in log_groups],
            "Condition": {"StringEquals": {"aws:SourceAccount": [account]},
                          "ArnLike": {"aws:SourceArn": [f"arn:{partition}:logs:{region}:{account}:*"]}}}


def cwl_admits(policies: dict[str, Any], account: str, region: str, partition: str,
               log_group: str) -> str | None:
    """The name of a resource policy that lets the delivery service write ``log_group`` in the
    context it sends (None: none does)."""
    stream = f"arn:{partition}:logs:{region}:{account}:log-group:{log_group}:log-stream:x"
    ctx = {"aws:SourceAccount": account,
           "aws:SourceArn": f"arn:{partition}:logs:{region}:{account}:delivery-source/x"}
    for name, doc in policies.items():
        if all(admits(doc, DELIVERY_SERVICE, a, stream, ctx)
               for a in ("logs:CreateLogStream", "logs:PutLogEvents")):
            return name
    return None


class ResourcePolicyLimit(ValueError):
    """Writing would pass a documented CloudWatch Logs limit; the message says which."""


def plan_cwl_resource_policy(policies: dict[str, Any], account: str, region: str,
                             partition: str, log_groups: list[str]
                             ) -> tuple[str | None, dict[str, Any] | None, list[str]]:
    """(policy name, document to put, notes) that makes delivery to ``log_groups`` possible,
    or (None, None, notes) when the Region's policies already admit it.

    Merged, never replacing anyone's: a policy already holding a statement of the same shape
    (service, actions, conditions) gains the groups' streams in its Resource; otherwise
    trailwatch's own policy is extended or created. Every candidate document is checked against
    5120 characters and a new policy against 10 per Region; when neither fits,
    :class:`ResourcePolicyLimit` names the limit (the seed's way out: log groups named
    ``/aws/vendedlogs/...``)."""
    notes: list[str] = []
    missing = []
    for g in log_groups:
        name = cwl_admits(policies, account, region, partition, g)
        if name:
            notes.append(f"resource policy {name} already admits {DELIVERY_SERVICE} for {g}")
        else:
            missing.append(g)
    if not missing:
        return None, None, notes
    wanted = cwl_delivery_statement(account, region, partition, missing)
    tried: list[str] = []
    order = [n for n, d in policies.items()
             if any(shape(s) == shape(wanted) for s in statements(d))]
    order += [n for n in (CWL_POLICY_NAME,) if n in policies and n not in order]
    for name in order:
        merged = merge_statements(policies[name], [wanted])
        size = len(compact(merged))
        if size <= RESOURCE_POLICY_CHARS:
            return name, merged, notes
        tried.append(f"{name} would be {size} characters")
    fresh = {"Version": "2012-10-17", "Statement": [wanted]}
    if len(compact(fresh)) > RESOURCE_POLICY_CHARS:
        raise ResourcePolicyLimit(
            f"one statement for {len(missing)} log group(s) is {len(compact(fresh))} characters; "
            f"CloudWatch Logs resource policies are limited to {RESOURCE_POLICY_CHARS}")
    name = CWL_POLICY_NAME if CWL_POLICY_NAME not in policies else next(
        f"{CWL_POLICY_NAME}-{i}" for i in range(2, RESOURCE_POLICIES_PER_REGION + 2)
        if f"{CWL_POLICY_NAME}-{i}" not in policies)
    if len(policies) >= RESOURCE_POLICIES_PER_REGION:
        raise ResourcePolicyLimit(
            f"the Region already has {len(policies)} CloudWatch Logs resource policies (the "
            f"limit is {RESOURCE_POLICIES_PER_REGION} per Region and cannot be raised) and "
            + (f"no existing one can take the statement ({'; '.join(tried)}; the limit is "
               f"{RESOURCE_POLICY_CHARS} characters per policy)" if tried else
               "none of them holds a log-delivery statement to extend")
            + "; send the logs to log groups named /aws/vendedlogs/..., which CloudWatch Logs "
              "admits for the delivering service once its policy nears the size limit")
    return name, fresh, notes + [f"new resource policy {name}" + (
        f" ({'; '.join(tried)})" if tried else "")]


def cwl_resource_policy_step(policies: dict[str, Any], account: str, region: str,
                             partition: str, log_groups: list[str]
                             ) -> tuple[Step | None, list[str]]:
    """The PutResourcePolicy step (None when nothing is missing), or a refusal naming the limit."""
    try:
        name, doc, notes = plan_cwl_resource_policy(policies, account, region, partition,
                                                    log_groups)
    except ResourcePolicyLimit as e:
        raise SetupError(f"cannot admit {DELIVERY_SERVICE} for {', '.join(log_groups)}: {e}",
                         "delete an unused CloudWatch Logs resource policy (aws logs "
                         "describe-resource-policies), or deliver to /aws/vendedlogs/... log "
                         "groups", code="ResourcePolicyLimit") from None
    if name is None or doc is None:
        return None, notes
    verb = "merge into" if name in policies else "create"
    return Step("logs", "PutResourcePolicy", {"policyName": name, "policyDocument": compact(doc)},
                f"{verb} CloudWatch Logs resource policy {name}: {DELIVERY_SERVICE} may "
                f"CreateLogStream/PutLogEvents on {', '.join(log_groups)} (aws:SourceAccount + "
                f"aws:SourceArn; {len(compact(doc))} of {RESOURCE_POLICY_CHARS} characters; other "
                "statements and policies kept)",
                ("logs:PutResourcePolicy", "logs:DescribeResourcePolicies"), region), notes
