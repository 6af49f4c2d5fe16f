"""Every hint the demo prints is a command that can be pasted: each `trailwatch ...` in a check's
remediation names the demo's trail and is accepted by the CLI's parser."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from setup.cli import build_parser
from setup.cli.failures import TRAIL_COMMANDS
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def remediations(doc) -> list[str]:
    if isinstance(doc, dict):
        found = [doc["remediation"]] if isinstance(doc.get("remediation"), str) else []
        return found + [r for v in doc.values() for r in remediations(v)]
    if isinstance(doc, list):
        return [r for v in doc for r in remediations(v)]
    return []


def test_every_hint_of_the_broken_demo_parses_and_names_the_trail():
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    out = subprocess.run([sys.executable, "-m", "setup.cli", "demo", "--broken-policy",
                          "--output", "json"], capture_output=True, text=True, env=env,
                         timeout=300, stdin=subprocess.DEVNULL, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    commands = [m.group(0).strip() for hint in remediations(json.loads(out.stdout))
                for m in re.finditer(r"trailwatch [a-z-]+(?: [^`;()]*)?", hint)]
    assert any(c.startswith("trailwatch apply") for c in commands), commands
    parser = build_parser()
    for command in commands:
        words = shlex.split(command)
        if words[1] in TRAIL_COMMANDS:
            assert "--trail" in words, command
        parser.parse_args(words[1:])
