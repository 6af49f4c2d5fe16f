"""The demo's data ships with the package, so a pip-installed `trailwatch demo` is the whole
demo: its records are exactly the repository's events/sources scenarios."""

from __future__ import annotations

import json

from setup.demo.cloudtrail import RECORDS, records_from_sources
from tests.conftest import EVENTS


def test_shipped_records_are_the_scenarios_of_events_sources():
    shipped = json.loads(RECORDS.read_text(encoding="utf-8"))
    assert shipped == records_from_sources(EVENTS / "sources"), \
        "regenerate: python -c \"from pathlib import Path; from setup.demo.cloudtrail import " \
        "write_records; write_records(Path('events/sources'))\""
    assert len(shipped) == 27


def test_the_demo_reads_only_files_inside_its_package():
    from setup.demo import cloudtrail, routing
    package = RECORDS.parent.parent
    for path in (cloudtrail.RECORDS, routing.EXAMPLES):
        assert path.is_file() and package in path.parents
