"""Runtime fidelity: build the artifact the way `sam build` does (for the local interpreter), run
it under awslambdaric against our Runtime API emulator, with only the artifact and the runtime's
own packages on sys.path, and invoke it with files from events/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from setup.package import build_artifact, size_bytes
from tests.conftest import drain_queue, load_event
from tests.lambda_runtime_emulator import RuntimeApi

pytestmark = pytest.mark.slow
SITE = Path(boto3.__file__).resolve().parent.parent
# What /var/runtime provides on Lambda: the runtime interface client and the AWS SDK.
RUNTIME_PACKAGES = ("awslambdaric", "simplejson", "snapshot_restore_py.py", "boto3", "botocore",
                    "s3transfer", "dateutil", "six.py", "urllib3", "jmespath")
RUNTIME_GLOBS = ("runtime_client*.so",)   # awslambdaric's native HTTP client


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    pytest.importorskip("awslambdaric")
    root = tmp_path_factory.mktemp("lambda")
    task = build_artifact(root / "task")
    runtime = root / "runtime"
    runtime.mkdir()
    for name in RUNTIME_PACKAGES:
        src = SITE / name
        if src.is_dir():
            shutil.copytree(src, runtime / name)
        elif src.exists():
            shutil.copy2(src, runtime / name)
    for pattern in RUNTIME_GLOBS:
        for src in SITE.glob(pattern):
            shutil.copy2(src, runtime / src.name)
    return task, runtime


def test_artifact_is_lean(artifact):
    task, _ = artifact
    names = {p.name for p in task.iterdir()}
    assert {"handlers", "orjson", "aws_lambda_powertools"} <= names
    assert not names & {"boto3", "botocore", "setup", "tests", "moto"}
    assert size_bytes(task) < 15_000_000


def test_artifact_imports_from_its_bytecode(artifact):
    """Importing the handler the way Lambda does (only the artifact and the runtime on sys.path)
    compiles nothing of the artifact's: every module comes from the shipped .pyc."""
    task, runtime = artifact
    code = ("import importlib._bootstrap_external as be, sys\n"
            "compiled, source_to_code = [], be.SourceLoader.source_to_code\n"
            "def spy(self, data, path, **kw):\n"
            "    compiled.append(path)\n"
            "    return source_to_code(self, data, path, **kw)\n"
            "be.SourceLoader.source_to_code = spy\n"
            "import handlers.processor\n"
            "mods = [m for m in sys.modules.values() if (getattr(m, '__file__', None) or '')"
            ".startswith(sys.argv[1])]\n"
            "print(len(mods), [p for p in compiled if p.startswith(sys.argv[1])])")
    # A clean environment: no PYTHONPYCACHEPREFIX (it would hide __pycache__), no -O.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{task}{os.pathsep}{runtime}"}
    out = subprocess.run([sys.executable, "-S", "-c", code, str(task)], cwd=task, env=env,
                         capture_output=True, text=True, check=True)
    modules, compiled = out.stdout.split(" ", 1)
    assert int(modules) > 20 and compiled.strip() == "[]", out.stdout


@pytest.fixture
def moto_server(monkeypatch):
    from moto.server import ThreadedMotoServer
    srv = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    srv.start()
    host, port = srv.get_host_and_port()
    url = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    try:
        yield url
    finally:
        srv.stop()


def test_artifact_runs_under_awslambdaric(artifact, moto_server):
    task, runtime = artifact
    sns = boto3.client("sns", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    topic = sns.create_topic(Name="alerts")["TopicArn"]
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["QueueArn"],
                  Attributes={"RawMessageDelivery": "true"})
    api = RuntimeApi().start()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": f"{task}{os.pathsep}{runtime}",
           "AWS_LAMBDA_RUNTIME_API": api.address, "LAMBDA_TASK_ROOT": str(task),
           "_HANDLER": "handlers.processor.lambda_handler", "AWS_ENDPOINT_URL": moto_server,
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "ALERT_TOPIC_ARN": topic,
           # A queue that does not exist: writing an unprocessable record fails -> /error path.
           "FAILURE_QUEUE_URL": f"{moto_server}/123456789012/missing-queue",
           "AWS_LAMBDA_FUNCTION_NAME": "tw", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}
    # -S: no site-packages, so nothing from the development virtualenv can leak in.
    proc = subprocess.Popen([sys.executable, "-S", "-m", "awslambdaric",
                             "handlers.processor.lambda_handler"], cwd=task, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ok = api.invoke(load_event("single-trail-cis"))
        assert ok["kind"] == "response", ok
        assert ok["body"]["alerts"] == 20 and ok["body"]["records"] == 20
        bad = api.invoke(load_event("malformed-messages"))
        assert bad["kind"] == "error" and api.init_error is None
        assert "QueueDoesNotExist" in json.dumps(bad["body"]) or \
            "NonExistentQueue" in json.dumps(bad["body"]), bad
    finally:
        proc.kill()
        output = proc.communicate(timeout=10)[0]
        api.stop()
    got = drain_queue(sqs, inbox)
    assert len(got) == 20, output[-3000:]  # 16 CIS + 4 detection-pack alerts
    assert {a["rule"]["id"] for a in got} >= {f"cis-4.{n}" for n in range(1, 16)}
    assert '"DeliveryLag"' in output   # EMF reached the function's stdout
