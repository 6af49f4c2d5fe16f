"""The rules that ship with the processor: the CIS catalog (:mod:`handlers.detection.cis`, with
the cases in ``cis_cases.json``), the detection pack (``pack.json``) and the tamper rules.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from handlers.detection.cis import CIS_BY_RULE_ID, CIS_CONTROLS
from handlers.detection.patterns import compile_pattern
from handlers.detection.rules import Rule, parse_rules
from handlers.detection.tamper import tamper_rules

CIS_CASES_FILE = Path(__file__).with_name("cis_cases.json")
PACK_FILE = Path(__file__).with_name("pack.json")

# How a CIS match becomes an alert (the metric filters stay verbatim). The controls are
# compliance signals: one alert per control and principal per UTC day (the first match, then a
# count). The window is never shared across controls or principals: several controls can be
# triggered by anyone (4.6 a failed console sign-in needs no credentials, 4.1 AccessDenied any
# principal), and a window opened by an outsider must not silence another principal's or another
# control's matches (review F2). The behaviours worth an alert of their own are pack rules (admin
# policy attached, trail stopped, security group open to the world, console login without MFA, ...).
CIS_WINDOW_MINUTES = 1440
CIS_DEDUP_KEY = ("principal",)
# CIS 4.2 and the pack's tw-console-login-without-mfa report the same behaviour (a successful
# IAM-user console sign-in without MFA): one window per principal for both, so a user's no-MFA
# sign-in is one alert a day, not two. Still per principal: nobody else's sign-in is affected.
CIS_WINDOW_GROUPS = {"cis-4.2": "console-login-without-mfa"}

def cis_rules() -> list[Rule]:
    cases = orjson.loads(CIS_CASES_FILE.read_bytes()) if CIS_CASES_FILE.exists() else {}
    return [Rule(id=c.rule_id, title=c.title, severity=c.severity,
                 pattern=compile_pattern(c.pattern), cis=c.cis, securityhub=c.securityhub,
                 tests=cases.get(c.rule_id, {}), source="cis",
                 window_minutes=CIS_WINDOW_MINUTES, dedup_key=CIS_DEDUP_KEY,
                 window_group=CIS_WINDOW_GROUPS.get(c.rule_id, ""))
            for c in CIS_CONTROLS]


def pack_rules() -> list[Rule]:
    """The detection pack (``handlers/detection/pack.json``, shipped in the Lambda artifact): ATT&CK-mapped rules beyond CIS."""
    doc = orjson.loads(PACK_FILE.read_bytes())
    # ``defaults``: the dedup window of every rule that does not set its own
    defaults = doc.get("defaults") or {}
    items = [{**defaults, **item} if "window_minutes" not in item else item
             for item in doc["rules"]]
    return [replace(r, source="pack") for r in parse_rules(items, "detection pack")]


def builtin_rules(config: Any = None, errors: list[str] | None = None) -> list[Rule]:
    """Every rule that ships with the processor (always loaded, whatever RULES_FILE holds).

    ``config`` names the resources the tamper rules watch: the processor's settings
    (:class:`handlers.settings.ProcessorSettings`), their ``tamper`` names, or a mapping in the
    environment's format (the CLI); with ``errors``, a tamper rule whose name cannot be used is
    left out and reported there (without, it raises).
    """
    return [_with_cis_label(r) for r in cis_rules()] + pack_rules() + tamper_rules(config, errors)


def _with_cis_label(rule: Rule) -> Rule:
    """The CIS rule with its label (CIS version, Security Hub control) in the description and
    the control's ATT&CK ids (when the rule has none)."""
    control = CIS_BY_RULE_ID.get(rule.id)
    if control is None:
        return rule
    changes: dict[str, Any] = {}
    if control.label not in rule.description:
        changes["description"] = f"{rule.description} {control.label}".strip()
    if not rule.tactics and not rule.techniques:
        changes["tactics"], changes["techniques"] = control.tactics, control.techniques
    return replace(rule, **changes) if changes else rule
