"""The README is the front door (short, self-contained) and docs/ holds the rest; every file
they name exists in the repository and nothing points outside it."""

from __future__ import annotations

import json
import re

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PATH = re.compile(r"`((?:setup|handlers|tests|events|bench|docs|\.ci)/[\w./-]*\w)`")


def texts():
    return [(p, p.read_text(encoding="utf-8")) for p in [README, *DOCS]]


def test_readme_is_short_and_shows_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 175
    assert "make demo" in text and "make test" in text
    for section in ("## Install", "## A first real run", "## Troubleshooting", "## Exit codes"):
        assert section in text


def test_readme_links_every_doc_and_every_link_resolves():
    text = README.read_text(encoding="utf-8")
    links = set(re.findall(r"\]\((docs/[\w.-]+\.md)\)", text))
    assert links == {f"docs/{p.name}" for p in DOCS}


def test_no_reference_outside_the_repository_or_to_issue_notes():
    for path, text in texts():
        assert "../" not in text, path
        assert not re.search(r"\bissue \d+|aws-facts", text), path


def test_every_named_file_exists():
    for path, text in texts():
        for name in PATH.findall(text):
            assert (ROOT / name).exists() or list(ROOT.glob(name)), f"{path.name}: {name}"


def test_the_demo_routes_with_the_documented_examples():
    """The installed demo reads its copy (package data); it must equal docs/processor.md's."""
    text = (ROOT / "docs" / "processor.md").read_text(encoding="utf-8")
    shipped = json.loads((ROOT / "setup" / "demo" / "data" / "routing-examples.json").read_text())
    for tag in ("filter-policy", "event-pattern"):
        found = re.findall(r"<!-- " + tag + r": ([\w-]+) -->\s*```json\n(.*?)```", text, re.S)
        assert found and {n: json.loads(b) for n, b in found} == shipped[tag]
