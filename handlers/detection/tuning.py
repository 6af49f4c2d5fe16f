"""Tuning as data: per-rule overrides and suppressions, in the rules file.

A rules file (``RULES_FILE``, ``trailwatch rules backtest --rules-file``) may carry, beside its
``rules``::

    {"rules": [...],
     "tuning": {"cis-4.10": {"severity": "LOW", "window_minutes": 60},
                "tw-ssm-send-command": {"window_minutes": 1440, "dedup_key": ["principal"]}},
     "suppressions": [
        {"rules": ["tw-ssm-send-command"], "principal_arn": "arn:aws:iam::111122223333:role/patching",
         "expires": "2027-03-31", "reason": "Patch Manager runs SendCommand nightly (CHG-1234)"}]}

``tuning`` changes a rule's ``severity``, ``window_minutes``, ``threshold``, ``dedup_key`` or
``window_group`` (built-in rules included); the filter pattern never changes, so the CIS metric
filters stay exactly as Security Hub checks them.

A suppression drops the matches of the named rules (``rules`` is required; ``"*"``: every rule)
whose record has ALL the
given values, and only fields CloudTrail sets from the caller's credentials or the service, which
the caller cannot write: ``principal_arn`` (``userIdentity.arn``, or the role ARN of an assumed
role's session issuer; an IAM or STS ARN naming its account, where a trailing ``*`` matches a
prefix), ``account`` (``userIdentity.accountId``),
``invoked_by`` (``userIdentity.invokedBy``, an AWS service) and ``recipient_account``
(``recipientAccountId``). User agents, source IPs and request parameters are written by the caller
and are refused. Every suppression needs a ``reason`` and an ``expires`` date (at most
:data:`MAX_DAYS` ahead); after that date it no longer applies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

from handlers.detection.rules import SEVERITIES, window_fields

MAX_DAYS = 366
FIELDS = {
    "principal_arn": ("userIdentity.arn", "userIdentity.sessionContext.sessionIssuer.arn"),
    "account": ("userIdentity.accountId",),
    "invoked_by": ("userIdentity.invokedBy",),
    "recipient_account": ("recipientAccountId",),
}
OVERRIDABLE = ("severity", "window_minutes", "threshold", "dedup_key", "window_group")
_ACCOUNT = re.compile(r"^\d{12}$")
# an IAM or STS ARN with its partition and account, then a resource; '*' only at the end
_PRINCIPAL_ARN = re.compile(r"^arn:aws[-a-z]*:(iam|sts)::\d{12}:[^*]*\*?$")


class TuningError(ValueError):
    pass


def _get(event: Any, dotted: str) -> Any:
    cur = event
    for p in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


@dataclass(frozen=True)
class Suppression:
    rules: tuple[str, ...]          # ("*",) for every rule
    values: tuple[tuple[str, str], ...]   # (field name, value) pairs, all must hold
    expires: float                  # epoch seconds (end of the expiry day, UTC)
    reason: str

    def matches(self, rule_id: str, event: Any, now: float) -> bool:
        if now >= self.expires or (self.rules != ("*",) and rule_id not in self.rules):
            return False
        for name, want in self.values:
            if not any(_value_matches(_get(event, path), want) for path in FIELDS[name]):
                return False
        return True


def _value_matches(got: Any, want: str) -> bool:
    if not isinstance(got, str):
        return False
    if want.endswith("*"):
        return got.startswith(want[:-1])
    return got == want


def parse_suppressions(items: Any, source: str, today: date | None = None) -> list[Suppression]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise TuningError(f"{source}: 'suppressions' must be a list")
    today = today or datetime.now(UTC).date()
    out: list[Suppression] = []
    for n, item in enumerate(items):
        where = f"{source}: suppression #{n + 1}"
        if not isinstance(item, dict):
            raise TuningError(f"{where}: expected an object")
        unknown = sorted(set(item) - set(FIELDS) - {"rules", "expires", "reason"})
        if unknown:
            raise TuningError(
                f"{where}: cannot match on {', '.join(unknown)}: a suppression may only name "
                f"fields the caller cannot forge ({', '.join(FIELDS)}); user agents, source "
                "addresses and request parameters are written by the caller")
        reason = item.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise TuningError(f"{where}: needs a 'reason'")
        try:
            expires = date.fromisoformat(str(item.get("expires")))
        except ValueError:
            raise TuningError(f"{where}: needs 'expires' as YYYY-MM-DD") from None
        if (expires - today).days > MAX_DAYS:
            raise TuningError(f"{where}: expires more than {MAX_DAYS} days from now")
        if "rules" not in item:     # review F8: no silent default to every rule
            raise TuningError(f"{where}: needs 'rules' (a list of rule ids, or \"*\" for every "
                              "rule)")
        rules = item["rules"]
        rules = ("*",) if rules == "*" else rules
        if not isinstance(rules, (list, tuple)) or not rules or \
                not all(isinstance(r, str) and r for r in rules):
            raise TuningError(f"{where}: 'rules' must be \"*\" or a list of rule ids")
        values: list[tuple[str, str]] = []
        for name in FIELDS:
            if name in item:
                v = item[name]
                if not isinstance(v, str) or not v or v == "*":
                    raise TuningError(f"{where}: {name} must be a non-empty value")
                if name != "principal_arn" and "*" in v:
                    raise TuningError(f"{where}: only principal_arn takes a trailing '*'")
                if name == "principal_arn" and not _PRINCIPAL_ARN.match(v):
                    raise TuningError(
                        f"{where}: principal_arn must be an IAM or STS ARN naming its account "
                        "(arn:aws:iam::123456789012:... or arn:aws:sts::123456789012:...) "
                        "before any trailing '*'")
                if name in ("account", "recipient_account") and not _ACCOUNT.match(v):
                    raise TuningError(f"{where}: {name} must be a 12-digit account id")
                values.append((name, v))
        if not values:
            raise TuningError(f"{where}: names no field (principal_arn, account, invoked_by or "
                              "recipient_account); a suppression of everything is not allowed")
        end = datetime(expires.year, expires.month, expires.day, tzinfo=UTC).timestamp()
        out.append(Suppression(tuple(rules), tuple(values), end + 86400, reason.strip()))
    return out


def apply_overrides(rules: list[Any], tuning: Any, source: str) -> list[Any]:
    """The rules with the ``tuning`` section's per-rule changes (unknown rule ids are errors)."""
    if not tuning:
        return rules
    if not isinstance(tuning, dict):
        raise TuningError(f"{source}: 'tuning' must be an object of rule id -> changes")
    by_id = {r.id: r for r in rules}
    unknown = sorted(set(tuning) - set(by_id))
    if unknown:
        raise TuningError(f"{source}: tuning names unknown rule(s): {', '.join(unknown)}")
    changed: dict[str, Any] = {}
    for rid, changes in tuning.items():
        where = f"{source}: tuning for {rid!r}"
        if not isinstance(changes, dict) or set(changes) - set(OVERRIDABLE):
            raise TuningError(f"{where}: may change only {', '.join(OVERRIDABLE)}")
        kw: dict[str, Any] = {}
        if "severity" in changes:
            sev = str(changes["severity"]).upper()
            if sev not in SEVERITIES:
                raise TuningError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
            kw["severity"] = sev
        merged = {k: changes.get(k, getattr(by_id[rid], k)) for k in
                  ("window_minutes", "threshold", "dedup_key", "window_group")}
        merged["dedup_key"] = list(merged["dedup_key"]) if isinstance(
            merged["dedup_key"], tuple) else merged["dedup_key"]
        try:
            kw.update(window_fields(merged, where))
        except ValueError as e:
            raise TuningError(str(e)) from None
        changed[rid] = replace(by_id[rid], **kw)
    return [changed.get(r.id, r) for r in rules]


def load_tuning(rules: list[Any], tuning: dict[str, Any], errors: list[str] | None = None,
                today: date | None = None) -> tuple[list[Any], list[Suppression]]:
    """(rules with the overrides, suppressions) from what :func:`load_rules_file` put in
    ``tuning``. Strict unless ``errors`` is a list: then a bad section is recorded and skipped
    (the rules stay as they were, no suppression from that section applies)."""
    source = str(tuning.get("source") or "rules file")
    out_rules, suppressions = rules, []
    try:
        out_rules = apply_overrides(rules, tuning.get("tuning"), source)
    except TuningError as e:
        if errors is None:
            raise
        errors.append(str(e))
    try:
        suppressions = parse_suppressions(tuning.get("suppressions"), source, today)
    except TuningError as e:
        if errors is None:
            raise
        errors.append(str(e))
    return out_rules, suppressions
