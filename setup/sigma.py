"""Convert Sigma rules for AWS CloudTrail into trailwatch rules (CloudWatch Logs filter patterns).

pySigma (``pip install 'trailwatch[sigma]'``) parses the rules and their conditions; this module
walks the parsed condition tree and writes the equivalent JSON filter pattern, or refuses the rule
with the reason. There is no pySigma backend for CloudWatch Logs filter patterns, and a pattern
cannot express everything Sigma can, so the conversion is deliberately conservative:

* converted: field equality, value lists (OR), ``contains`` / ``startswith`` / ``endswith`` (a
  ``*`` at the start and/or end of the value), numbers, booleans, null, ``exists``, ``lt``/``gt``...
  comparisons, and ``and`` / ``or`` / ``not`` / ``1 of`` / ``all of``;
* ``not`` is pushed down to the fields (De Morgan). Sigma's ``not field = v`` also matches events
  *without* the field, while a filter pattern's ``!=`` never matches a missing field, so a negated
  equality becomes ``($.f != v || $.f NOT EXISTS || $.f IS NULL)``: the same events match;
* refused (with the reason): keywords (values without a field), regular expressions, CIDR, field
  references, ``?`` or mid-value wildcards (a ``*`` in the middle is literal for CloudWatch Logs),
  negated comparisons / null tests, field names a selector cannot address, and rules whose
  logsource is not AWS CloudTrail.

Kept from the Sigma rule: title, level (as severity), ATT&CK tags (tactics and techniques), the
Sigma id (``sigma.id``), description, references and false positives.

Case: Sigma compares strings case-insensitively (unless ``|cased``); filter patterns compare
case-sensitively. A value is written so that the pattern matches what Sigma would match:

* no letters (numbers, IP addresses), or ``|cased``: as written;
* a field CloudTrail writes in a fixed spelling: every canonical spelling that Sigma's value
  matches, e.g. ``additionalEventData.MFAUsed: 'NO'`` -> ``"No"`` (closed sets: MFAUsed,
  ``responseElements.ConsoleLogin``, ``userIdentity.type``, ``eventType``, ``eventCategory``;
  ``eventSource`` and ``awsRegion`` are always lower case; ``eventName`` is an API operation name,
  taken from botocore's service models, or a sign-in event name);
* any other field: every upper/lower-case spelling of the value (``"kali"`` -> 16 alternatives),
  up to :data:`MAX_CASE_VARIANTS`; a value with more letters than that allows is refused with
  the reason (mark it ``|cased`` in the Sigma rule to match it exactly as written).

This is CLI-side tooling: the Lambda artifact never imports it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from handlers.detection.patterns import compile_pattern, lint_pattern

LEVELS = {"informational": "INFO", "low": "LOW", "medium": "MEDIUM", "high": "HIGH",
          "critical": "CRITICAL"}
TACTICS = {
    "reconnaissance": "TA0043", "resource-development": "TA0042", "initial-access": "TA0001",
    "execution": "TA0002", "persistence": "TA0003", "privilege-escalation": "TA0004",
    "defense-evasion": "TA0005", "credential-access": "TA0006", "discovery": "TA0007",
    "lateral-movement": "TA0008", "collection": "TA0009", "command-and-control": "TA0011",
    "exfiltration": "TA0010", "impact": "TA0040",
}
_TECHNIQUE = re.compile(r"^t\d{4}(\.\d{3})?$")
_TACTIC_ID = re.compile(r"^ta\d{4}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]+$")
CASE_NOTE = ("Converted from Sigma: values match case-insensitively as in Sigma (canonical "
             "CloudTrail spellings, or every upper/lower-case spelling).")
MAX_CASE_VARIANTS = 64          # 2**6: a value with up to 6 cased letters outside known fields
# Fields CloudTrail writes from a closed set of spellings (CloudTrail record contents reference).
CLOSED_VALUES: dict[str, tuple[str, ...]] = {
    "additionalEventData.MFAUsed": ("Yes", "No"),
    "responseElements.ConsoleLogin": ("Success", "Failure"),
    "userIdentity.type": ("Root", "IAMUser", "AssumedRole", "Role", "FederatedUser", "AWSAccount",
                          "AWSService", "SAMLUser", "WebIdentityUser", "IdentityCenterUser",
                          "Directory", "Unknown"),
    "eventType": ("AwsApiCall", "AwsServiceEvent", "AwsConsoleAction", "AwsConsoleSignIn",
                  "AwsConsoleSignin", "AwsCloudTrailInsight", "AwsVpceEvent"),
    "eventCategory": ("Management", "Data", "Insight", "NetworkActivity"),
}
LOWER_CASE_FIELDS = frozenset(("eventSource", "awsRegion"))
# Sign-in and other event names that are not API operations in botocore's models.
EXTRA_EVENT_NAMES = ("ConsoleLogin", "CheckMfa", "SwitchRole", "ExitRole", "RenewRole",
                     "GetSigninToken", "CredentialVerification", "CredentialChallenge",
                     "UserAuthentication", "PasswordUpdated", "ConsoleSignin")


class Unconvertible(Exception):
    """A rule or condition the conversion refuses; the message says why."""


@dataclass
class Result:
    source: str                         # file path
    title: str
    sigma_id: str | None
    rule: dict[str, Any] | None = None  # the trailwatch rule, when converted
    reason: str | None = None           # why not, when refused
    notes: list[str] = field(default_factory=list)


def _sigma():
    try:
        import sigma.conditions as cond
        import sigma.types as types
        from sigma.collection import SigmaCollection
        from sigma.exceptions import SigmaError
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("Sigma import needs pySigma: pip install 'trailwatch[sigma]' "
                           "(or pip install pysigma)") from e
    return SigmaCollection, SigmaError, cond, types


# ----------------------------------------------------------------------------------- values

def _selector(name: str) -> str:
    parts = name.split(".")
    if not name or not all(_SEGMENT.match(p) for p in parts):
        raise Unconvertible(f"field {name!r} cannot be written as a filter-pattern selector "
                            "(property names are letters, digits, '_' and '-')")
    return "$." + name


def _string_literals(field: str, value: Any, types: Any) -> list[str]:
    """A SigmaString as the quoted filter-pattern value(s) that match what Sigma matches
    (wildcards only at the ends; several values are OR-ed, see the module doc on case)."""
    parts = list(value.s)
    lead = trail = False
    text_parts: list[str] = []
    for i, part in enumerate(parts):
        if isinstance(part, str):
            text_parts.append(part)
        elif part == types.SpecialChars.WILDCARD_MULTI:
            if 0 < i < len(parts) - 1:
                raise Unconvertible("a '*' wildcard in the middle of a value (CloudWatch Logs "
                                    "only has wildcards at the start or end)")
            if i == 0:
                lead = True
            else:
                trail = True
        elif part == types.SpecialChars.WILDCARD_SINGLE:
            raise Unconvertible("a '?' single-character wildcard (no CloudWatch Logs "
                                "equivalent)")
        else:  # placeholders and anything newer
            raise Unconvertible(f"unsupported value part {part!r}")
    text = "".join(text_parts)
    cased = hasattr(types, "SigmaCasedString") and isinstance(value, types.SigmaCasedString)
    return [_quote(sp, lead, trail) for sp in _spellings(field, text, lead, trail, cased)]


def _quote(text: str, lead: bool, trail: bool) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("*", "\\*")
    if not escaped:
        return '"*"' if lead or trail else '""'
    return '"' + ("*" if lead else "") + escaped + ("*" if trail else "") + '"'


def _spellings(field: str, text: str, lead: bool, trail: bool, cased: bool) -> list[str]:
    """The spellings of ``text`` a case-sensitive pattern needs to match what Sigma's
    case-insensitive comparison matches on CloudTrail records."""
    if cased or text.lower() == text.upper():
        return [text]
    if field in LOWER_CASE_FIELDS:
        return [text.lower()]
    vocab = CLOSED_VALUES.get(field) or (_event_names() if field == "eventName" else None)
    if vocab:
        found = _canonical(vocab, text, lead, trail)
        if found:
            return found
        if field in CLOSED_VALUES:      # no value CloudTrail writes: matches nothing either way
            return [text]
    letters = [c for c in text if c.lower() != c.upper()]
    if any(len(c.lower()) != 1 or len(c.upper()) != 1 for c in letters) \
            or 2 ** len(letters) > MAX_CASE_VARIANTS:
        raise Unconvertible(
            f"case-insensitive value {text!r} on {field} (Sigma ignores case; filter patterns do "
            f"not, and its {len(letters)} letters have {2 ** len(letters)} spellings, more than "
            f"the {MAX_CASE_VARIANTS} written out): mark the value |cased in the Sigma rule to "
            "match it exactly as written")
    out = [""]
    for c in text:
        alts = (c.lower(), c.upper()) if c.lower() != c.upper() else (c,)
        out = [o + a for o in out for a in alts]
    return out


def _canonical(vocab: Any, text: str, lead: bool, trail: bool) -> list[str]:
    """Every spelling of ``text`` that Sigma's value matches inside the canonical values."""
    t, n = text.lower(), len(text)
    out: dict[str, None] = {}
    for v in vocab:
        lv = v.lower()
        if lead and trail:
            i = lv.find(t)
            while i >= 0:
                out[v[i:i + n]] = None
                i = lv.find(t, i + 1)
        elif trail:
            if lv.startswith(t):
                out[v[:n]] = None
        elif lead:
            if lv.endswith(t):
                out[v[len(v) - n:]] = None
        elif lv == t:
            out[v] = None
    return list(out)


@lru_cache(maxsize=1)
def _event_names() -> frozenset[str]:
    """API operation names from botocore's service models (CloudTrail's eventName for an API
    call), plus sign-in event names. A few seconds, once per process."""
    names = set(EXTRA_EVENT_NAMES)
    try:
        from botocore.loaders import create_loader
    except ImportError:  # pragma: no cover - botocore ships with the CLI
        return frozenset(names)
    loader = create_loader()
    for service in loader.list_available_services("service-2"):
        try:
            names.update(loader.load_service_model(service, "service-2").get("operations", {}))
        except Exception:  # noqa: BLE001,S112 - a broken model only narrows the vocabulary
            continue
    return frozenset(names)


def _leaf(node: Any, negated: bool, types: Any) -> str:
    sel = _selector(node.field)
    v = node.value
    if isinstance(v, types.SigmaExists):
        # EXISTS is a processor-only extension (lint flags the rule); NOT EXISTS is documented.
        return f"{sel} EXISTS" if v.exists != negated else f"{sel} NOT EXISTS"
    if isinstance(v, types.SigmaRegularExpression):
        raise Unconvertible(f"regular expression on {node.field} (|re has no CloudWatch Logs "
                            "equivalent)")
    if hasattr(types, "SigmaCIDRExpression") and isinstance(v, types.SigmaCIDRExpression):
        raise Unconvertible(f"CIDR match on {node.field} (|cidr has no CloudWatch Logs "
                            "equivalent)")
    if hasattr(types, "SigmaFieldReference") and isinstance(v, types.SigmaFieldReference):
        raise Unconvertible(f"field reference on {node.field} (filter patterns compare with "
                            "constants only)")
    if isinstance(v, types.SigmaNull):
        if negated:
            raise Unconvertible(f"negated null test on {node.field} (Sigma treats a missing "
                                "field as null; a filter pattern cannot say 'present and not "
                                "null' for every type)")
        return f"({sel} IS NULL || {sel} NOT EXISTS)"
    if isinstance(v, types.SigmaBool):
        if negated:
            raise Unconvertible(f"negated boolean on {node.field} (missing-field semantics "
                                "differ)")
        return f"{sel} IS {'TRUE' if v.boolean else 'FALSE'}"
    if isinstance(v, types.SigmaCompareExpression):
        if negated:
            raise Unconvertible(f"negated comparison on {node.field} (missing-field semantics "
                                "differ)")
        ops = {"LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
        op = ops.get(v.op.name)
        if op is None:  # pragma: no cover - future operators
            raise Unconvertible(f"comparison {v.op.name} on {node.field}")
        return f"{sel} {op} {v.number.number}"
    if isinstance(v, types.SigmaNumber):
        lits = [str(v.number)]
    elif isinstance(v, types.SigmaString):
        lits = _string_literals(node.field, v, types)
    else:
        raise Unconvertible(f"unsupported value type {type(v).__name__} on {node.field}")
    if negated:
        # Sigma: "not f = v" is also true when f is missing; '!=' alone never matches a
        # missing field, so say it explicitly.
        differs = " && ".join(f"{sel} != {lit}" for lit in lits)
        if len(lits) > 1:
            differs = f"({differs})"
        return f"({differs} || {sel} NOT EXISTS || {sel} IS NULL)"
    if len(lits) == 1:
        return f"{sel} = {lits[0]}"
    return "(" + " || ".join(f"{sel} = {lit}" for lit in lits) + ")"


def _convert(node: Any, negated: bool, cond: Any, types: Any) -> str:
    if isinstance(node, cond.ConditionNOT):
        return _convert(node.args[0], not negated, cond, types)
    if isinstance(node, (cond.ConditionAND, cond.ConditionOR)):
        is_and = isinstance(node, cond.ConditionAND) != negated   # De Morgan
        parts = [_convert(a, negated, cond, types) for a in node.args]
        if len(parts) == 1:
            return parts[0]
        return "(" + (" && " if is_and else " || ").join(parts) + ")"
    if isinstance(node, cond.ConditionFieldEqualsValueExpression):
        return _leaf(node, negated, types)
    if isinstance(node, cond.ConditionValueExpression):
        raise Unconvertible(f"keyword search {str(getattr(node.value, 'original', node.value))!r}"
                            " (a value without a field: filter patterns need a selector)")
    raise Unconvertible(f"unsupported condition element {type(node).__name__}")


# ----------------------------------------------------------------------------------- rules

def _attack(tags: list[Any]) -> tuple[list[str], list[str]]:
    tactics: list[str] = []
    techniques: list[str] = []
    for tag in tags:
        if getattr(tag, "namespace", None) != "attack":
            continue
        name = str(tag.name).lower()
        if _TECHNIQUE.match(name):
            techniques.append(name.upper())
        elif _TACTIC_ID.match(name):
            tactics.append(name.upper())
        elif name.replace("_", "-") in TACTICS:
            tactics.append(TACTICS[name.replace("_", "-")])
    return list(dict.fromkeys(tactics)), list(dict.fromkeys(techniques))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "rule"


def convert_rule(rule: Any, source: str) -> Result:
    SigmaCollection, SigmaError, cond, types = _sigma()
    sid = str(rule.id) if getattr(rule, "id", None) else None
    res = Result(source=source, title=str(rule.title), sigma_id=sid)
    ls = rule.logsource
    if (ls.product or "").lower() != "aws" or (ls.service or "").lower() != "cloudtrail":
        res.reason = (f"logsource is product={ls.product} service={ls.service} "
                      f"category={ls.category}, not AWS CloudTrail")
        return res
    try:
        conds = rule.detection.parsed_condition
        parts = [_convert(c.parse(), False, cond, types) for c in conds]
    except Unconvertible as e:
        res.reason = str(e)
        return res
    except SigmaError as e:
        res.reason = f"pySigma could not parse the condition: {e}"
        return res
    body = parts[0] if len(parts) == 1 else " || ".join(f"({p})" for p in parts)
    pattern = "{ " + body + " }"
    compile_pattern(pattern)   # our own output must parse; a failure here is a bug
    tactics, techniques = _attack(list(rule.tags or []))
    findings = lint_pattern(pattern)
    level = getattr(rule.level, "name", None) or "medium"
    description = str(rule.description or "").strip()
    out: dict[str, Any] = {
        "id": f"sigma-{sid}" if sid else f"sigma-{_slug(res.title)}",
        "title": res.title,
        "severity": LEVELS.get(level.lower(), "MEDIUM"),
        "description": (description + " " if description else "") + CASE_NOTE,
        "attack": {"tactics": tactics, "techniques": techniques},
        "pattern": pattern,
        "sigma": {"id": sid, "level": level.lower(), "status": getattr(rule.status, "name", None)
                  and rule.status.name.lower(),
                  "references": [str(r) for r in (rule.references or [])],
                  "falsepositives": [str(f) for f in (rule.falsepositives or [])]},
    }
    if rule.falsepositives:
        out["remediation"] = "Known false positives: " + "; ".join(map(str, rule.falsepositives))
    if findings:
        out["processor_only"] = True
        res.notes.extend(f"processor-only: {f.message}" for f in findings)
    res.rule = out
    return res


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix in (".yml", ".yaml")))
        else:
            out.append(p)
    return out


def convert_paths(paths: list[str]) -> list[Result]:
    """Every Sigma rule in the files / directories, converted or refused (one Result each)."""
    SigmaCollection, SigmaError, cond, types = _sigma()
    results: list[Result] = []
    for path in _files(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            results.append(Result(str(path), path.name, None, reason=f"cannot read: {e}"))
            continue
        try:
            collection = SigmaCollection.from_yaml(text, collect_errors=True)
        except Exception as e:  # pySigma raises several error types for broken YAML
            results.append(Result(str(path), path.name, None,
                                  reason=f"not a Sigma rule file: {e}"))
            continue
        for rule in collection.rules:
            errors = getattr(rule, "errors", None)
            if errors:
                results.append(Result(str(path), str(getattr(rule, "title", path.name)),
                                      str(rule.id) if getattr(rule, "id", None) else None,
                                      reason="pySigma: " + "; ".join(map(str, errors))))
                continue
            if not hasattr(rule, "detection"):   # correlation / filter documents
                results.append(Result(str(path), str(getattr(rule, "title", path.name)),
                                      None, reason=f"{type(rule).__name__} is not a "
                                      "detection rule"))
                continue
            results.append(convert_rule(rule, str(path)))
        for err in getattr(collection, "errors", []) or []:
            results.append(Result(str(path), path.name, None, reason=f"pySigma: {err}"))
    return results
