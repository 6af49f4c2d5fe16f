"""Detection rules: data (a filter pattern plus metadata), compiled once at cold start.

The CIS catalog (:mod:`handlers.detection.cis`) and the detection pack (``handlers/detection/pack.json``, ATT&CK-mapped,
see :func:`pack_rules`) provide the built-in rules. Users add their own rules in the same
filter-pattern language through a JSON file (``RULES_FILE``)::

    {"rules": [{"id": "console-login-from-tor", "title": "...", "severity": "HIGH",
                "pattern": "{ $.eventName = ConsoleLogin && $.sourceIPAddress = 185.220.* }",
                "tests": {"match": [{...record...}], "no_match": [{...}]}}]}

A rule's optional ``tests`` hold records it must and must not match, beside the rule (as Panther's
rules carry theirs); ``trailwatch rules test`` runs them, and the test suite runs it for the
built-in rules. Optional ``threshold: N`` alerts once per principal with N matches in a batch
(:mod:`handlers.detection.thresholds`); ``processor_only: true`` acknowledges syntax a metric filter may not
accept (``trailwatch rules lint``).

Windows (:mod:`handlers.alert_state`): ``window_minutes: W`` makes ``threshold`` count
across invocations within W minutes, and without a threshold alerts once per ``dedup_key`` per W
minutes, then counts. ``dedup_key`` is ``"principal"`` (default) or record fields (a string or a
list: ``["recipientAccountId"]``); rules with the same ``window_group`` share one window per key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from handlers.alerts import rule_static_texts
from handlers.detection.patterns import (
    CompiledPattern,
    PatternError,
    PatternIndex,
    compile_pattern,
)

SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")


MAX_WINDOW_MINUTES = 7 * 24 * 60
_KEY_FIELD = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")


class RuleLoadError(ValueError):
    pass


def window_fields(item: dict[str, Any], where: str) -> dict[str, Any]:
    """``threshold``, ``window_minutes``, ``dedup_key`` and ``window_group`` of a rule document,
    checked, as :class:`Rule` keyword arguments (absent ones: the defaults)."""
    threshold = item.get("threshold") or 0
    if type(threshold) is not int or threshold < 0:
        raise RuleLoadError(f"{where}: threshold must be a whole number of matches per "
                            "principal and batch")
    minutes = item.get("window_minutes") or 0
    if type(minutes) is not int or not 0 <= minutes <= MAX_WINDOW_MINUTES:
        raise RuleLoadError(f"{where}: window_minutes must be a whole number from 0 to "
                            f"{MAX_WINDOW_MINUTES} (7 days)")
    key = item.get("dedup_key") or ("principal",)
    if isinstance(key, str):
        key = (key,)
    if not isinstance(key, list | tuple) or not key or len(key) > 4 or not all(
            isinstance(k, str) and (k == "principal" or _KEY_FIELD.match(k)) for k in key):
        raise RuleLoadError(f"{where}: dedup_key must be \"principal\" or record field paths "
                            "(\"recipientAccountId\", \"userIdentity.arn\"), at most 4")
    group = item.get("window_group") or ""
    if not isinstance(group, str) or len(group) > 64:
        raise RuleLoadError(f"{where}: window_group must be a short name")
    return {"threshold": threshold, "window_minutes": minutes, "dedup_key": tuple(key),
            "window_group": group}


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    severity: str
    pattern: CompiledPattern
    cis: str | None = None
    securityhub: str | None = None
    tests: dict[str, list[dict[str, Any]]] = field(default_factory=dict, compare=False, hash=False)
    # Analyst-facing metadata, carried in every alert's ``rule`` object.
    description: str = ""
    remediation: str = ""                # remediation text or a runbook link
    tactics: tuple[str, ...] = ()        # MITRE ATT&CK tactic ids, e.g. "TA0005"
    techniques: tuple[str, ...] = ()     # MITRE ATT&CK technique ids, e.g. "T1562.008"
    source: str = "user"                 # "cis", "pack", "tamper" (built in) or "user" (RULES_FILE)
    # Alert only when one principal matches at least this many times in a batch (0: every match).
    threshold: int = 0
    # The pattern uses processor-only syntax (see patterns.lint_pattern): never a metric filter.
    processor_only: bool = False
    # Windows across invocations (handlers/alert_state.py): 0 = none (per batch, as before).
    window_minutes: int = 0
    dedup_key: tuple[str, ...] = ("principal",)
    window_group: str = ""

    @cached_property
    def doc(self) -> dict[str, Any]:
        """The alert's ``rule`` object (built once; alerts share it and never modify it)."""
        out: dict[str, Any] = {"id": self.id, "title": self.title, "severity": self.severity}
        if self.cis:
            out["cis"] = self.cis
        if self.securityhub:
            out["securityhub"] = self.securityhub
        if self.description:
            out["description"] = self.description
        if self.remediation:
            out["remediation"] = self.remediation
        if self.tactics or self.techniques:
            out["attack"] = {"tactics": list(self.tactics), "techniques": list(self.techniques)}
        out["source"] = self.source
        return out

    @cached_property
    def alert_texts(self) -> tuple[str, str, str | None]:
        """What this rule puts in every alert's title, description and remediation
        (:func:`handlers.alerts.rule_static_texts`), worked out once."""
        return rule_static_texts(self.doc)


def _id_list(value: Any, where: str, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleLoadError(f"{where}: {what} must be a list of strings")
    return tuple(value)


def parse_rules(doc: Any, source: str = "rules file", errors: list[str] | None = None,
                taken: set[str] | frozenset[str] = frozenset()) -> list[Rule]:
    """Rules from a parsed rules document.

    Strict by default (the first problem raises :class:`RuleLoadError`). With ``errors`` (a list),
    a bad rule or an id that repeats one before it or one in ``taken`` (the built-in ids) is
    skipped and its message appended, and the good rules are returned.
    """
    items = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise RuleLoadError(f"{source}: expected a list of rules or {{\"rules\": [...]}}")
    if errors is None:
        return _parse_rules(items, source, set(taken))
    rules: list[Rule] = []
    seen = set(taken)
    for n, item in enumerate(items):
        try:
            (rule,) = _parse_rules([item], source, seen, n)
        except RuleLoadError as e:
            errors.append(str(e))
            continue
        except Exception as e:  # noqa: BLE001 - any other surprise in one rule skips that rule
            errors.append(f"{source}: rule #{n + 1}: {type(e).__name__}: {e}")
            continue
        rules.append(rule)
    return rules


def _parse_rules(items: list[Any], source: str, seen: set[str], first: int = 0) -> list[Rule]:
    rules: list[Rule] = []
    for n, item in enumerate(items, first):
        where = f"{source}: rule #{n + 1}"
        if not isinstance(item, dict):
            raise RuleLoadError(f"{where}: expected an object")
        rid = item.get("id")
        if not isinstance(rid, str) or not rid:
            raise RuleLoadError(f"{where}: missing 'id'")
        where = f"{source}: rule {rid!r}"
        if rid in seen:
            raise RuleLoadError(f"{where}: duplicate id (another rule, or a built-in rule, "
                                f"already uses it)")
        seen.add(rid)
        severity = str(item.get("severity", "MEDIUM")).upper()
        if severity not in SEVERITIES:
            raise RuleLoadError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")
        text = item.get("pattern")
        try:
            pattern = compile_pattern(text)
        except PatternError as e:
            raise RuleLoadError(f"{where}: bad pattern: {e.reason} at position {e.position}\n"
                                f"{e.pointer()}") from e
        attack = item.get("attack") or {}
        if not isinstance(attack, dict):
            raise RuleLoadError(f"{where}: 'attack' must be an object with tactics/techniques")
        windows = window_fields(item, where)
        rules.append(Rule(id=rid, title=str(item.get("title", rid)), severity=severity,
                          pattern=pattern, cis=item.get("cis"), securityhub=item.get("securityhub"),
                          tests=item.get("tests") or {},
                          description=str(item.get("description") or ""),
                          remediation=str(item.get("remediation") or ""),
                          tactics=_id_list(attack.get("tactics"), where, "attack.tactics"),
                          techniques=_id_list(attack.get("techniques"), where, "attack.techniques"),
                          source=str(item.get("source") or "user"),
                          processor_only=item.get("processor_only") is True, **windows))
    return rules


def read_rules_source(ref: str, client_factory: Any = None) -> tuple[bytes, str]:
    """The bytes of a rules file named by ``RULES_FILE``: a path, ``s3://bucket/key`` or
    ``ssm:/parameter/name`` (SSM Parameter Store, decrypted). Returns (bytes, display name)."""
    if ref.startswith("s3://"):
        bucket, _, key = ref[5:].partition("/")
        if not bucket or not key:
            raise RuleLoadError(f"{ref}: expected s3://BUCKET/KEY")
        s3 = _client("s3", client_factory)
        try:
            return s3.get_object(Bucket=bucket, Key=key)["Body"].read(), ref
        except Exception as e:  # noqa: BLE001 - ClientError, network: reported, never fatal
            raise RuleLoadError(f"{ref}: cannot read the rules object: {e}") from e
    if ref.startswith("ssm:"):
        name = ref[4:]
        if not name:
            raise RuleLoadError(f"{ref}: expected ssm:/PARAMETER/NAME")
        ssm = _client("ssm", client_factory)
        try:
            value = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
        except Exception as e:  # noqa: BLE001
            raise RuleLoadError(f"{ref}: cannot read the rules parameter: {e}") from e
        return value.encode("utf-8"), ref
    p = Path(ref)
    try:
        return p.read_bytes(), str(p)
    except FileNotFoundError as e:
        raise RuleLoadError(f"{p}: rules file not found") from e
    except OSError as e:
        raise RuleLoadError(f"{p}: cannot read the rules file: {e}") from e


def _client(service: str, client_factory: Any) -> Any:
    if client_factory is not None:
        return client_factory(service)
    from handlers.clients import (
        default_client_factory,  # deferred: boto3 only when used
    )
    return default_client_factory(service)


def load_rules_file(path: str | Path, errors: list[str] | None = None,
                    taken: set[str] | frozenset[str] = frozenset(),
                    client_factory: Any = None, tuning: dict[str, Any] | None = None
                    ) -> list[Rule]:
    """Rules from ``path`` (a file path, ``s3://`` or ``ssm:``). Strict unless ``errors`` is a
    list: then an unreadable source or a bad rule is recorded there and skipped. ``tuning`` (a
    dict) receives the file's ``tuning`` and ``suppressions`` sections and its name
    (:mod:`handlers.detection.tuning`)."""
    try:
        raw, name = read_rules_source(str(path), client_factory)
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise RuleLoadError(f"{name}: not valid JSON: {e}") from e
        if tuning is not None and isinstance(doc, dict):
            tuning.update(source=name, tuning=doc.get("tuning"),
                          suppressions=doc.get("suppressions"))
        return parse_rules(doc, name, errors, taken)
    except RuleLoadError as e:
        if errors is None:
            raise
        errors.append(str(e))
        return []


def build_index(rules: list[Rule]) -> PatternIndex:
    ids = [r.id for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RuleLoadError(f"duplicate rule ids: {', '.join(sorted(dup))}")
    return PatternIndex((r, r.pattern) for r in rules)
