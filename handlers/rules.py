"""Detection rules: data (a filter pattern plus metadata), compiled once at cold start.

The CIS catalog (:mod:`handlers.cis`) provides the built-in rules. Users add their own rules in the
same filter-pattern language through a JSON file (``RULES_FILE``)::

    {"rules": [{"id": "console-login-from-tor", "title": "...", "severity": "HIGH",
                "pattern": "{ $.eventName = ConsoleLogin && $.sourceIPAddress = 185.220.* }",
                "tests": {"match": [{...record...}], "no_match": [{...}]}}]}

A rule's optional ``tests`` hold records it must and must not match, beside the rule (as Panther's
rules carry theirs); the test suite runs them for the built-in and the example rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from handlers.cis import CIS_CONTROLS
from handlers.patterns import CompiledPattern, PatternError, PatternIndex, compile_pattern

SEVERITIES = ("INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL")
CIS_CASES_FILE = Path(__file__).with_name("cis_cases.json")


class RuleLoadError(ValueError):
    pass


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


def cis_rules() -> list[Rule]:
    cases = orjson.loads(CIS_CASES_FILE.read_bytes()) if CIS_CASES_FILE.exists() else {}
    return [Rule(id=c.rule_id, title=c.title, severity=c.severity,
                 pattern=compile_pattern(c.pattern), cis=c.cis, securityhub=c.securityhub,
                 tests=cases.get(c.rule_id, {}), source="cis")
            for c in CIS_CONTROLS]


def builtin_rules(env: Mapping[str, str] | None = None) -> list[Rule]:
    """Every rule that ships with the processor (always loaded, whatever RULES_FILE holds).

    ``env`` is the processor's environment, for built-in rules that watch resources it names.
    """
    from handlers.tamper import tamper_rules     # issue 10: trail/log group/role/processor tamper
    return cis_rules() + tamper_rules(env)


def _id_list(value: Any, where: str, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise RuleLoadError(f"{where}: {what} must be a list of strings")
    return tuple(value)


def parse_rules(doc: Any, source: str = "rules file") -> list[Rule]:
    items = doc.get("rules") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise RuleLoadError(f"{source}: expected a list of rules or {{\"rules\": [...]}}")
    rules: list[Rule] = []
    seen: set[str] = set()
    for n, item in enumerate(items):
        where = f"{source}: rule #{n + 1}"
        if not isinstance(item, dict):
            raise RuleLoadError(f"{where}: expected an object")
        rid = item.get("id")
        if not isinstance(rid, str) or not rid:
            raise RuleLoadError(f"{where}: missing 'id'")
        where = f"{source}: rule {rid!r}"
        if rid in seen:
            raise RuleLoadError(f"{where}: duplicate id")
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
        rules.append(Rule(id=rid, title=str(item.get("title", rid)), severity=severity,
                          pattern=pattern, cis=item.get("cis"), securityhub=item.get("securityhub"),
                          tests=item.get("tests") or {},
                          description=str(item.get("description") or ""),
                          remediation=str(item.get("remediation") or ""),
                          tactics=_id_list(attack.get("tactics"), where, "attack.tactics"),
                          techniques=_id_list(attack.get("techniques"), where, "attack.techniques"),
                          source=str(item.get("source") or "user")))
    return rules


def load_rules_file(path: str | Path) -> list[Rule]:
    p = Path(path)
    try:
        doc = orjson.loads(p.read_bytes())
    except FileNotFoundError as e:
        raise RuleLoadError(f"{p}: rules file not found") from e
    except orjson.JSONDecodeError as e:
        raise RuleLoadError(f"{p}: not valid JSON: {e}") from e
    return parse_rules(doc, str(p))


def build_index(rules: list[Rule]) -> PatternIndex:
    ids = [r.id for r in rules]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise RuleLoadError(f"duplicate rule ids: {', '.join(sorted(dup))}")
    return PatternIndex((r, r.pattern) for r in rules)
