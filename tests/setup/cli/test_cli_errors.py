"""No traceback reaches the user without --debug: every exception ends as ``trailwatch: <what>``
plus a ``fix:`` line (and the JSON error object with --output json); a closed stdout pipe ends
quietly; an endpoint that answers with a web page is named as such."""

from __future__ import annotations

import contextlib
import copy
import http.server
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from setup.cli import main

ROOT = Path(__file__).resolve().parents[3]


def run(argv: list[str], **kw) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv, out=out, stdin=io.StringIO(""), **kw)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, expected_code: int | None = None) -> None:
    assert "Traceback" not in err, err
    if expected_code is not None:
        assert code == expected_code, err
    if code not in (0,):
        assert "trailwatch" in err, err


# ------------------------------------------------------------------------- malformed arguments

WORD = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
TOKENS = st.one_of(
    st.sampled_from(["plan", "apply", "verify", "remove", "subscribe", "rules", "replay", "list",
                     "test", "lint", "export", "backtest", "--trail", "--region", "--profile",
                     "--output", "json", "text", "--retention-days", "--log-group", "--role-name",
                     "--org-id", "--kms-key", "--destination", "--yes", "--plan", "--out",
                     "--stream-scope", "--cis-alarms", "--alarm-topic", "--delete-log-group",
                     "--confirm-log-group", "--source", "--file", "--local", "--dry-run",
                     "--endpoint-url", "--no-progress", "-y", "--", "-", "=", "--output=json",
                     "--max-delivery-age", "--batch-size", "--metric-filters", "us-east-1",
                     "arn:aws:cloudtrail:us-east-1:123456789012:trail/t", "o-", "0", "-1"]),
    WORD)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=7))
def test_malformed_arguments_never_give_a_traceback(argv):
    # "demo" starts a server and "--canary"/"--wait" poll for minutes: not in the vocabulary
    with mock_aws(), tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        code, out, err = run(argv)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    assert code in (0, 1, 2), (argv, code, err)
    if code == 2:
        assert err.strip(), argv


# ------------------------------------------------------------------------- malformed saved plans

@pytest.fixture(scope="module")
def saved_plan() -> dict:
    """A real `plan --out` file for a trail in moto (the digest matches the moto state)."""
    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        _trail()
        path = os.path.join(tmp, "plan.json")
        code, _, err = run(["plan", "--trail", "main", "--region", "us-east-1", "--out", path])
        assert code == 0, err
        return json.loads(Path(path).read_text())


def _trail() -> None:
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="trail-bucket")
    boto3.client("cloudtrail", region_name="us-east-1").create_trail(
        Name="main", S3BucketName="trail-bucket")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda kids: st.lists(kids, max_size=3) |
                    st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=6)
PATHS = st.sampled_from([("options",), ("options", "trail"), ("options", "log_group"),
                         ("options", "retention_days"), ("plan",), ("plan", "steps"),
                         ("plan", "steps", 0), ("plan", "steps", 0, "api"),
                         ("plan", "steps", 0, "params"), ("plan", "steps", 0, "message"),
                         ("state_digest",), ("format",)])


def _edit(doc, path, delete, value) -> None:
    """Delete or replace doc[path...] where that place exists."""
    node = doc
    for key in path[:-1]:
        ok = (isinstance(node, dict) and key in node) or \
            (isinstance(node, list) and isinstance(key, int) and key < len(node))
        if not ok:
            return
        node = node[key]
    last = path[-1]
    if isinstance(node, dict):
        if delete:
            node.pop(last, None)
        else:
            node[last] = value
    elif isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow,
                                                  HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(PATHS, st.booleans(), JSON), min_size=1, max_size=3))
def test_malformed_saved_plans_never_give_a_traceback(saved_plan, edits):
    doc = copy.deepcopy(saved_plan)
    for path, delete, value in edits:
        _edit(doc, path, delete, value)
    with mock_aws(), tempfile.TemporaryDirectory() as tmp:
        _trail()
        path = os.path.join(tmp, "plan.json")
        Path(path).write_text(json.dumps(doc))
        code, out, err = run(["apply", "--plan", path, "--yes", "--region", "us-east-1"])
    assert "Traceback" not in err, err
    assert code in (0, 1, 2), (code, err)


# ------------------------------------------------------------------------- the one handler

def test_an_unexpected_exception_is_one_line_with_a_fix_and_a_json_error(monkeypatch):
    def boom(*a, **k):
        raise ValueError("something odd")
    monkeypatch.setattr("setup.cli.cmd_verify", boom)
    code, out, err = run(["verify", "--trail", "t", "--output", "json"])
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[0] == "trailwatch: unexpected error: ValueError: something odd"
    assert err.splitlines()[1].startswith("fix: re-run with --debug")
    assert json.loads(out)["error"]["code"] == "InternalError"


def test_debug_prints_the_traceback(monkeypatch):
    def boom(*a, **k):
        raise ValueError("something odd")
    monkeypatch.setattr("setup.cli.cmd_verify", boom)
    code, _, err = run(["verify", "--trail", "t", "--debug"])
    assert code == 1 and "Traceback (most recent call last)" in err and "ValueError" in err
    assert err.rstrip().splitlines()[-2] == "trailwatch: unexpected error: ValueError: something odd"


def test_unknown_profile_is_a_usage_error_with_a_fix():
    code, out, err = run(["--profile", "nosuch", "verify", "--trail", "t", "--output", "json"])
    assert code == 2 and "Traceback" not in err
    assert "no AWS profile named 'nosuch'" in err
    assert "fix: aws configure list-profiles" in err
    assert json.loads(out)["error"]["code"] == "ProfileNotFound"


def test_invalid_region_is_a_usage_error():
    code, _, err = run(["verify", "--trail", "t", "--region", "not a region"])
    assert code == 2 and "Traceback" not in err and "is not a Region" in err



# ------------------------------------------------------------------------- endpoints

class _Html(http.server.BaseHTTPRequestHandler):
    status = 200

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b"<!DOCTYPE html>\n<html><body>Sign in to the proxy</body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *a):
        pass


@pytest.fixture(params=[200, 404])
def html_endpoint(request):
    handler = type("H", (_Html,), {"status": request.param})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", request.param
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_endpoint_answering_html_is_named_not_parsed(html_endpoint):
    url, status = html_endpoint
    code, out, err = run(["plan", "--trail", "t", "--region", "us-east-1", "--check-permissions",
                          "--endpoint-url", url, "--output", "json"])
    assert code == 1 and "Traceback" not in err
    assert f"trailwatch: {url} answered HTTP {status} with an HTML page, not an AWS API " \
           "response" in err
    assert "fix: check --endpoint-url" in err
    assert json.loads(out)["error"]["code"] == "EndpointNotAws"


def test_debug_shows_botocore_log_for_the_html_endpoint(html_endpoint):
    url, _ = html_endpoint
    code, _, err = run(["--debug", "plan", "--trail", "t", "--region", "us-east-1",
                        "--endpoint-url", url])
    assert code == 1 and "botocore" in err and "Traceback (most recent call last)" in err


# ------------------------------------------------------------------------- closed pipes

@pytest.mark.parametrize("argv", [["rules", "list"], ["--output", "json", "rules", "list"]])
def test_a_closed_stdout_pipe_ends_quietly_with_141(argv):
    """`trailwatch rules list | head -1`: the reader is gone before the first write."""
    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run([sys.executable, "-m", "setup.cli", *argv], stdout=w,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        os.close(w)
    assert proc.returncode == 141 and proc.stderr == ""
