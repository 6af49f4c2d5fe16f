"""A small, local evaluator for IAM policy documents (identity and trust policies).

Enough to answer the questions trailwatch asks before AWS would tell it the hard way: "may this
role write this exact stream ARN?" and "may cloudtrail.amazonaws.com assume this role?". It honours
Allow/Deny (an explicit Deny wins), Action/NotAction, Resource/NotResource, Principal, and the
``*`` and ``?`` wildcards (actions case-insensitively). Statements with a ``Condition`` cannot be
judged without a request context: an Allow with conditions does not count as allowing, a Deny with
conditions counts as denying (both conservative), and the result says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=512)
def _glob(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{rx}$", (re.IGNORECASE if ignore_case else 0) | re.DOTALL)


def as_list(value: Any) -> list[str]:
    """A policy field that may be a string or a list of strings, as a list."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def matches_any(patterns: list[str], value: str, ignore_case: bool = False) -> bool:
    """Does ``value`` match one of the IAM wildcard patterns (``*`` and ``?``)?"""
    return any(_glob(p, ignore_case).match(value) for p in patterns)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str            # "allow" | "explicit-deny" | "implicit-deny" | "boundary-*-deny"
    conditional: bool = False  # a statement with a Condition was involved


def _principal_matches(stmt: dict[str, Any], service: str | None) -> bool:
    if service is None:
        return True
    principal = stmt.get("Principal")
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return matches_any(as_list(principal.get("Service")), service, True) or \
            principal.get("AWS") == "*"
    return False


def _statement_applies(stmt: dict[str, Any], action: str, resource: str | None,
                       principal_service: str | None) -> bool:
    if "Action" in stmt and not matches_any(as_list(stmt["Action"]), action, True):
        return False
    if "NotAction" in stmt and matches_any(as_list(stmt["NotAction"]), action, True):
        return False
    if resource is not None:
        if "Resource" in stmt and not matches_any(as_list(stmt["Resource"]), resource, False):
            return False
        if "NotResource" in stmt and matches_any(as_list(stmt["NotResource"]), resource, False):
            return False
    if principal_service is not None and not _principal_matches(stmt, principal_service):
        return False
    return True


def evaluate(documents: list[Any], action: str, resource: str | None = None,
             principal_service: str | None = None) -> Decision:
    allowed = False
    conditional = False
    for doc in documents:
        statements = doc.get("Statement", []) if isinstance(doc, dict) else []
        if isinstance(statements, dict):
            statements = [statements]
        for stmt in statements:
            if not isinstance(stmt, dict) or not _statement_applies(stmt, action, resource,
                                                                    principal_service):
                continue
            has_cond = bool(stmt.get("Condition"))
            if stmt.get("Effect") == "Deny":
                return Decision(False, "explicit-deny", has_cond)
            if stmt.get("Effect") == "Allow":
                if has_cond:
                    conditional = True
                else:
                    allowed = True
    return Decision(allowed, "allow" if allowed else "implicit-deny", conditional)


def evaluate_role(identity: list[Any], action: str, resource: str,
                  boundary: Any = None) -> Decision:
    """IAM's answer for a role: its identity policies (inline and attached managed) must allow the
    action and, when the role has a permissions boundary, the boundary must allow it too. An
    explicit Deny in either wins.
    """
    ident = evaluate(identity, action, resource)
    if ident.reason == "explicit-deny":
        return ident
    if boundary is not None:
        bound = evaluate([boundary], action, resource)
        if bound.reason == "explicit-deny":
            return Decision(False, "boundary-explicit-deny", bound.conditional)
        if not bound.allowed:
            return Decision(False, "boundary-implicit-deny", bound.conditional or ident.conditional)
    return ident
