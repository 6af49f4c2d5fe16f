"""The environment is read and checked once, at cold start (handlers/settings.py), and a value
that cannot be used degrades (logged, ConfigErrors / watchdog.config) instead of failing deep
inside a component on every invocation. The defect tests here failed on d534756."""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError

from handlers.processor import App
from handlers.settings import (
    NUMBERS,
    ProcessorSettings,
    TamperNames,
    WatchdogSettings,
)
from tests.conftest import ROOT, ListLogger, ListMetrics, awslogs_event
from tests.strict_fakes import StrictAws

ACCT = "111122223333"
NOW = 1_763_640_000.0
TS = 1_763_639_000_000


def boot(env: dict, aws: StrictAws | None = None) -> tuple[App, ListLogger, ListMetrics]:
    aws = aws or StrictAws()
    log, metrics = ListLogger(), ListMetrics()
    factory = (lambda s: object() if s == "dynamodb" else aws.client(s))
    app = App.from_env(env, client_factory=factory, metrics_sink=metrics, log=log,
                       emit=lambda line: None, sleep=lambda s: None, clock=lambda: NOW)
    return app, log, metrics


def ignored(log: ListLogger) -> dict[str, str]:
    return {e["setting"]: e["error"] for lvl, m, e in log.records if m == "setting ignored"}


def sink_names(app: App) -> set[str]:
    return {s.name for s in app.sinks}


# ------------------------------------------------------------- defects, end to end (processor)

def test_a_queue_arn_as_failure_queue_url_no_longer_fails_every_invocation():
    """d534756: FAILURE_QUEUE_URL holding the queue's ARN (a common mix-up; SQS refuses it:
    InvalidAddress) failed every invocation that had an unprocessable record, and Lambda retried
    it, for as long as the environment was wrong. Now the queue is left out at cold start: the
    record is logged whole, the invocation succeeds and ConfigErrors (alarmed) counts it."""
    aws = StrictAws()
    env = dict(aws.env, FAILURE_QUEUE_URL=f"arn:aws:sqs:us-east-1:{ACCT}:fail")
    app, log, metrics = boot(env, aws)
    out = app.handle(awslogs_event([{"id": "le-1", "timestamp": TS, "message": "not json"}]))
    assert out["failures_routed"] == 1 and app.failure_queue is None
    assert "FAILURE_QUEUE_URL" in ignored(log)
    assert [m for lvl, m, e in log.records if m.startswith("unprocessable item")]
    assert metrics.total("ConfigErrors") == 1
    assert aws.sqs.calls == 0 and aws.violations == []


def test_security_hub_findings_true_is_reported_not_silently_off():
    """d534756: SECURITY_HUB_FINDINGS=true (or yes, on) left Security Hub off without a word."""
    app, log, metrics = boot({"SECURITY_HUB_FINDINGS": "true"})
    assert "securityhub" not in sink_names(app)
    assert "'enabled'" in ignored(log)["SECURITY_HUB_FINDINGS"]
    app.handle(awslogs_event([]))
    assert metrics.total("ConfigErrors") == 1


@pytest.mark.parametrize("value", [
    "deployer",                                                     # a role name
    f"arn:aws:sts::{ACCT}:assumed-role/deployer/session",          # a session, not the role
])
def test_an_expected_principal_that_can_never_match_is_reported(value):
    """d534756: an EXPECTED_CHANGE_PRINCIPALS entry that is not a role ARN could never equal
    CloudTrail's session issuer: trailwatch's own changes were never marked, silently."""
    good = f"arn:aws:iam::{ACCT}:role/trailwatch-admin"
    app, log, _ = boot({"EXPECTED_CHANGE_PRINCIPALS": f"{good}, {value}"})
    assert app.pipeline.settings.expected_principals == frozenset({good})
    assert value[:40] in ignored(log)["EXPECTED_CHANGE_PRINCIPALS"]


def test_an_iam_user_arn_is_an_expected_principal():
    """trailwatch run as an IAM user (the demo's secops user): its ARN is what expected.py
    compares for a user, so it is kept (a review found the role-only check dropped it)."""
    user = f"arn:aws:iam::{ACCT}:user/secops"
    app, log, _ = boot({"EXPECTED_CHANGE_PRINCIPALS": user})
    assert app.pipeline.settings.expected_principals == frozenset({user})
    assert "EXPECTED_CHANGE_PRINCIPALS" not in ignored(log)


# Each resource value the template passes, of a shape the component could never use: the
# component is left out at cold start, logged and counted, instead of failing per call.
BAD_SHAPES = [
    ("ALERT_TOPIC_ARN", "alerts", lambda app: "sns" not in sink_names(app)),
    ("ALERT_BUS_NAME", f"arn:aws:sns:us-east-1:{ACCT}:alerts",
     lambda app: "eventbridge" not in sink_names(app)),
    ("CHAT_TOPIC_ARN", "https://hooks.slack.com/services/T0/B0/x",
     lambda app: "chat" not in sink_names(app)),
    ("FAILURE_ARCHIVE_BUCKET", "s3://fail-archive",
     lambda app: app.failure_queue is not None and app.failure_queue.archive_bucket is None),
    ("IDEMPOTENCY_TABLE_NAME", "alert idempotency",
     lambda app: not any(type(s).__name__ == "IdempotentSink" for s in app.sinks)),
]


@pytest.mark.parametrize("key,value,left_out", BAD_SHAPES, ids=[b[0] for b in BAD_SHAPES])
def test_a_resource_value_of_the_wrong_shape_leaves_its_component_out(key, value, left_out):
    aws = StrictAws()
    app, log, metrics = boot(dict(aws.env, **{key: value}), aws)
    assert left_out(app)
    assert list(ignored(log)) == [key] and value[:40] in ignored(log)[key]
    app.handle(awslogs_event([]))
    assert metrics.total("ConfigErrors") == 1


def test_a_malformed_alert_state_table_keeps_windows_per_invocation(tmp_path):
    """The windows stage only exists with a windowed rule (the built-in CIS rules are)."""
    app, log, _ = boot({"ALERT_STATE_TABLE_NAME": "arn:aws:s3:::not-a-table"})
    assert "ALERT_STATE_TABLE_NAME" in ignored(log)
    assert app.windows is not None and app.windows.dedup is False
    (warning,) = [m for lvl, m, e in log.records if lvl == "warning" and "ALERT_STATE" in m]
    assert "is not usable" in warning


def test_the_template_shapes_are_accepted():
    """What CloudFormation's Ref returns for each resource (tests/template/test_template_seams.py
    renders the whole template this way) passes every check."""
    env = {"ALERT_TOPIC_ARN": f"arn:aws:sns:us-east-1:{ACCT}:stack-alerts",
           "ALERT_BUS_NAME": "stack-alerts",
           "FAILURE_QUEUE_URL": f"https://sqs.us-east-1.amazonaws.com/{ACCT}/stack-FailureQueue-1A",
           "FAILURE_ARCHIVE_BUCKET": "stack-failurearchivebucket-1a2b3c",
           "CHAT_TOPIC_ARN": f"arn:aws:sns:us-east-1:{ACCT}:chat.fifo",
           "IDEMPOTENCY_TABLE_NAME": "stack-alert-idempotency",
           "ALERT_STATE_TABLE_NAME": f"arn:aws:dynamodb:us-east-1:{ACCT}:table/state",
           "SECURITY_HUB_FINDINGS": " Enabled ",
           "EXPECTED_CHANGE_PRINCIPALS": f"arn:aws:iam::{ACCT}:role/a, arn:aws-cn:iam::{ACCT}"
                                         ":role/path/b,",
           "RULES_FILE": "ssm:/trailwatch/rules"}
    s = ProcessorSettings.from_env(env)
    assert s.errors == {}
    assert (s.alert_topic_arn, s.alert_bus_name, s.failure_queue_url, s.failure_archive_bucket,
            s.chat_topic_arn, s.idempotency_table, s.alert_state_table) == (
        env["ALERT_TOPIC_ARN"], env["ALERT_BUS_NAME"], env["FAILURE_QUEUE_URL"],
        env["FAILURE_ARCHIVE_BUCKET"], env["CHAT_TOPIC_ARN"], env["IDEMPOTENCY_TABLE_NAME"],
        env["ALERT_STATE_TABLE_NAME"])
    assert s.security_hub is True and s.rules_file == "ssm:/trailwatch/rules"
    assert s.expected_principals == {f"arn:aws:iam::{ACCT}:role/a",
                                     f"arn:aws-cn:iam::{ACCT}:role/path/b"}


def test_unset_and_empty_mean_off_without_an_error():
    for env in ({}, {k: "" for k in ("ALERT_TOPIC_ARN", "ALERT_BUS_NAME", "FAILURE_QUEUE_URL",
                                     "FAILURE_ARCHIVE_BUCKET", "CHAT_TOPIC_ARN",
                                     "IDEMPOTENCY_TABLE_NAME", "ALERT_STATE_TABLE_NAME",
                                     "SECURITY_HUB_FINDINGS", "EXPECTED_CHANGE_PRINCIPALS",
                                     "RULES_FILE", *NUMBERS)}):
        s = ProcessorSettings.from_env(env)
        assert s.errors == {}
        for field, default in ProcessorSettings.DEFAULTS.items():
            assert getattr(s, field) == default, field


@pytest.mark.parametrize("key,raw,field,value", [
    ("DELIVERY_LAG_THRESHOLD_SECONDS", "120.5", "delivery_lag_threshold", 120.5),
    ("CLOCK_SKEW_TOLERANCE_SECONDS", "0", "clock_skew_tolerance", 0.0),
    ("MAX_DECOMPRESSED_BYTES", "1048576", "max_decompressed_bytes", 1_048_576),
    ("EVENTBRIDGE_MAX_ENTRY_BYTES", "1e6", "eventbridge_max_entry_bytes", 1_000_000),
    ("FAILURE_QUEUE_MAX_BYTES", "1048576", "failure_queue_max_bytes", 1_048_576),
    ("PUBLISH_CONCURRENCY", "4", "publish_concurrency", 4),
    ("ALERT_AGGREGATION_THRESHOLD", "0", "aggregation_threshold", 0),
    ("IDEMPOTENCY_WINDOW_SECONDS", "300", "idempotency_window", 300),
])
def test_each_number_reaches_its_field_typed(key, raw, field, value):
    s = ProcessorSettings.from_env({key: raw})
    assert s.errors == {} and getattr(s, field) == value
    assert type(getattr(s, field)) is type(value)


@pytest.mark.parametrize("key", sorted(NUMBERS))
@pytest.mark.parametrize("raw", ["ten", "-1", "inf", "nan"])
def test_a_bad_number_keeps_its_default(key, raw):
    s = ProcessorSettings.from_env({key: raw})
    assert list(s.errors) == [key] and repr(raw) in s.errors[key]
    defaults = ProcessorSettings()
    assert all(getattr(s, f) == getattr(defaults, f) for f in ProcessorSettings.DEFAULTS)


def test_the_numbers_reach_the_components():
    aws = StrictAws()
    env = dict(aws.env, MAX_DECOMPRESSED_BYTES="2048", DELIVERY_LAG_THRESHOLD_SECONDS="60",
               CLOCK_SKEW_TOLERANCE_SECONDS="5", EVENTBRIDGE_MAX_ENTRY_BYTES="1048576",
               FAILURE_QUEUE_MAX_BYTES="1048576", PUBLISH_CONCURRENCY="3",
               ALERT_AGGREGATION_THRESHOLD="7", IDEMPOTENCY_TABLE_NAME="t",
               IDEMPOTENCY_WINDOW_SECONDS="600")
    app, log, _ = boot(env, aws)
    assert "IDEMPOTENCY_TABLE_NAME" in ignored(log)     # 3-255 characters: "t" is not a table
    app, log, _ = boot(dict(env, IDEMPOTENCY_TABLE_NAME="alerts"), aws)
    assert ignored(log) == {}
    p = app.pipeline.settings
    assert (p.max_decompressed_bytes, p.lag_threshold, p.skew_tolerance) == (2048, 60.0, 5.0)
    (bus,) = [s.inner for s in app.sinks if s.name == "eventbridge"]
    assert bus.max_entry_bytes == 1_048_576
    assert app.failure_queue.max_bytes == 1_048_576
    assert app.concurrency == 3 and app.aggregation_threshold == 7
    assert {s.persistence.expires_after_seconds for s in app.sinks} == {600}


def test_the_settings_defaults_are_the_components_defaults():
    """handlers/settings.py keeps its own copies (it imports no component, to stay cheap)."""
    from handlers import alerts, pipeline, processor
    from handlers import settings as S
    from handlers.sinks import eventbridge, failure_queue, idempotency
    assert S.DEFAULT_LAG_THRESHOLD == pipeline.DEFAULT_LAG_THRESHOLD
    assert S.DEFAULT_SKEW_TOLERANCE == pipeline.DEFAULT_SKEW_TOLERANCE
    assert S.DEFAULT_MAX_DECOMPRESSED == pipeline.DEFAULT_MAX_DECOMPRESSED
    assert S.EVENTBRIDGE_MAX_ENTRY_BYTES == eventbridge.EVENTBRIDGE_MAX_ENTRY_BYTES
    assert S.SQS_MAX_BYTES == failure_queue.SQS_MAX_BYTES
    assert S.DEFAULT_AGGREGATION_THRESHOLD == alerts.DEFAULT_AGGREGATION_THRESHOLD
    assert S.DEFAULT_IDEMPOTENCY_WINDOW == idempotency.DEFAULT_WINDOW
    assert S.DEFAULT_CONCURRENCY == processor.DEFAULT_CONCURRENCY
    assert pipeline.Settings().max_decompressed_bytes == S.DEFAULT_MAX_DECOMPRESSED


def test_tamper_names_are_carried_as_given_and_checked_by_the_tamper_rules():
    """A tamper name keeps its RuleErrors semantics (rule skipped), never a ConfigErrors."""
    env = {"TRAIL_NAME": f"arn:aws:cloudtrail:eu-west-1:{ACCT}:trail/org-trail",
           "TRAIL_LOG_GROUP_NAME": 'x" || $.eventName = *', "DELIVERY_ROLE_NAME": "",
           "AWS_LAMBDA_FUNCTION_NAME": "trailwatch-processor", "AWS_REGION": "us-east-1"}
    s = ProcessorSettings.from_env(env)
    assert s.errors == {}
    assert s.tamper == TamperNames(env["TRAIL_NAME"], env["TRAIL_LOG_GROUP_NAME"], "",
                                   "trailwatch-processor", "us-east-1")
    app, log, metrics = boot(env)
    assert ignored(log) == {}
    assert [m for lvl, m, e in log.records if lvl == "error"] == ["rule skipped"]
    app.handle(awslogs_event([]))
    assert metrics.total("RuleErrors") == 1 and metrics.total("ConfigErrors") == 0


def test_from_env_takes_settings_already_read():
    s = ProcessorSettings.from_env({"ALERT_TOPIC_ARN": f"arn:aws:sns:us-east-1:{ACCT}:a"})
    app = App.from_env(s, client_factory=StrictAws().client, metrics_sink=ListMetrics(),
                       log=ListLogger(), emit=lambda line: None)
    assert app.settings is s and sink_names(app) == {"sns"}


def test_an_unknown_field_is_refused():
    with pytest.raises(TypeError):
        ProcessorSettings(alert_topic="x")


# ------------------------------------------------------------------------- the watchdog

class StrictSsm:
    """SSM GetParameter / PutParameter as AWS answers a name it cannot take: a parameter name is
    letters, digits and ``_ . - /`` (Systems Manager "Parameter naming rules"); anything else is
    a ValidationException. moto stores any name."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.exceptions = SimpleNamespace(ParameterNotFound=type("ParameterNotFound",
                                                                 (ClientError,), {}))

    def _check(self, name: str, op: str) -> None:
        import re
        if not re.fullmatch(r"[A-Za-z0-9_./-]{1,2048}", name):
            raise ClientError({"Error": {"Code": "ValidationException",
                                         "Message": f"Parameter name: {name} is invalid"}}, op)

    def get_parameter(self, Name: str) -> dict:  # noqa: N803
        self._check(Name, "GetParameter")
        if Name not in self.values:
            raise self.exceptions.ParameterNotFound(
                {"Error": {"Code": "ParameterNotFound", "Message": ""}}, "GetParameter")
        return {"Parameter": {"Value": self.values[Name]}}

    def put_parameter(self, Name: str, Value: str, **kw) -> dict:  # noqa: N803
        self._check(Name, "PutParameter")
        self.values[Name] = Value
        return {}


def fake_verify(settings):
    from setup.verify import CheckResult
    return "arn:trail", [CheckResult("trail.logging", "FAIL", "stopped")]


def test_a_malformed_state_parameter_no_longer_crashes_every_run(monkeypatch):
    """d534756: WATCHDOG_STATE_PARAMETER that SSM cannot take raised ValidationException on
    every scheduled run (only ParameterNotFound was expected): no check ever reported. Now the
    statuses are kept in memory and the run reports watchdog.config FAIL."""
    import boto3

    from handlers import watchdog
    ssm = StrictSsm()
    monkeypatch.setattr(boto3, "client", lambda service, *a, **kw: ssm if service == "ssm"
                        else pytest.fail(f"unexpected {service} client"))
    dog = watchdog.from_env({"TRAIL_NAME": "main", "WATCHDOG_STATE_PARAMETER": "watchdog state"})
    dog.verify = fake_verify
    out = dog.run({"time": "t1"})
    assert out["checks"] == {"trail.logging": "FAIL"} and out["alerts"] == 1
    assert isinstance(dog.state, watchdog.MemoryState) and ssm.values == {}
    assert list(dog.settings.errors) == ["WATCHDOG_STATE_PARAMETER"]    # watchdog.config FAIL


class Sts:
    def __init__(self, error: str) -> None:
        self.error = error

    def assume_role(self, RoleArn: str, RoleSessionName: str):  # noqa: N803
        raise ClientError({"Error": {"Code": self.error, "Message": f"cannot assume {RoleArn}"}},
                          "AssumeRole")


def _clients(error: str):
    from tests.strict_fakes import FakeAwsClients
    return FakeAwsClients("us-east-1", sts=lambda r: Sts(error))


def test_a_verify_role_name_instead_of_an_arn_no_longer_crashes_every_run():
    """d534756: VERIFY_ROLE_ARN=<a role name> went to sts:AssumeRole, which refuses it (a
    ValidationError; botocore refuses a value under 20 characters before sending), and the run
    raised, every time. Now it is not used (watchdog.config FAIL) and the checks run here."""
    from handlers.watchdog import run_verify
    from tests.strict_fakes import CloudTrailWorld, FakeAwsClients
    world = CloudTrailWorld()                               # no trail: watchdog.trail FAIL
    clients = FakeAwsClients("us-east-1", sts=lambda r: Sts("ValidationError"),
                             cloudtrail=lambda r: world.client(ACCT, r))
    _, results = run_verify({"TRAIL_NAME": "main",
                             "VERIFY_ROLE_ARN": "trailwatch-verify-role-in-audit"}, clients)
    assert [(r.id, r.status) for r in results] == [("watchdog.config", "FAIL"),
                                                   ("watchdog.trail", "FAIL")]
    assert "VERIFY_ROLE_ARN" in results[0].message and "main" in results[1].message


def test_a_verify_role_that_cannot_be_assumed_is_a_fail_result_not_an_exception():
    """d534756: AccessDenied on sts:AssumeRole (the role's trust policy does not name the
    watchdog) raised out of every run. Now it is a watchdog.trail FAIL: alerted once."""
    from handlers.watchdog import run_verify
    arn, results = run_verify({"TRAIL_NAME": "main",
                               "VERIFY_ROLE_ARN": f"arn:aws:iam::{ACCT}:role/verify"},
                              _clients("AccessDenied"))
    (r,) = results
    assert (r.id, r.status) == ("watchdog.trail", "FAIL")
    assert "AccessDenied" in r.message and "VERIFY_ROLE_ARN" in r.remediation


@pytest.mark.parametrize("key,value,field", [
    ("TRAIL_LOG_GROUP_NAME", "log group with spaces", "log_group"),
    ("VERIFY_ROLE_ARN", f"arn:aws:iam::{ACCT}:user/verify", "verify_role_arn"),
    ("ORG_ID", "r-abcd", "org_id"),
    ("ALERT_TOPIC_ARN", "ops", "alert_topic_arn"),
    ("WATCHDOG_STATE_PARAMETER", "state?", "state_parameter"),
    ("READINESS_REGIONS", "us-east-1;eu-west-1", "readiness_regions"),
    ("CHAT_TOPIC_ARN", "chat-alerts", "chat_topic_arn"),
])
def test_a_watchdog_value_of_the_wrong_shape_is_left_out_and_reported(key, value, field):
    s = WatchdogSettings.from_env({"TRAIL_NAME": "main", key: value})
    assert getattr(s, field) is None and list(s.errors) == [key]
    from handlers.watchdog import config_notes
    (note,) = config_notes(s)
    assert (note.id, note.status) == ("watchdog.config", "FAIL") and key in note.message


def test_watchdog_values_of_the_template_shapes():
    env = {"TRAIL_NAME": f"arn:aws:cloudtrail:us-east-1:{ACCT}:trail/org-trail",
           "TRAIL_LOG_GROUP_NAME": "CloudTrail/org-trail",
           "VERIFY_ROLE_ARN": f"arn:aws:iam::{ACCT}:role/trailwatch-verify",
           "ORG_ID": "o-abc1234567", "MAX_DELIVERY_AGE_SECONDS": "3600",
           "ALERT_TOPIC_ARN": f"arn:aws:sns:us-east-1:{ACCT}:stack-ops",
           "WATCHDOG_STATE_PARAMETER": "/trailwatch/stack/watchdog-state",
           "READINESS_REGIONS": "us-east-1,eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1"}
    s = WatchdogSettings.from_env(env)
    assert s.errors == {}
    assert (s.trail_name, s.log_group, s.verify_role_arn, s.org_id, s.max_delivery_age,
            s.alert_topic_arn, s.state_parameter, s.readiness_regions, s.region) == (
        env["TRAIL_NAME"], "CloudTrail/org-trail", env["VERIFY_ROLE_ARN"], "o-abc1234567",
        3600.0, env["ALERT_TOPIC_ARN"], env["WATCHDOG_STATE_PARAMETER"], "us-east-1,eu-west-1",
        "eu-west-1")
    assert WatchdogSettings.from_env({"READINESS_REGIONS": "all"}).readiness_regions == "all"
    fifo = f"arn:aws:sns:us-east-1:{ACCT}:chat.fifo"      # kept: the chat.topic check FAILs it
    assert WatchdogSettings.from_env({"CHAT_TOPIC_ARN": fifo}).chat_topic_arn == fifo
    assert WatchdogSettings.from_env({"AWS_REGION": "us-west-2",
                                      "AWS_DEFAULT_REGION": "eu-west-1"}).region == "us-west-2"


def test_readiness_keeps_the_regions_that_are_regions():
    s = WatchdogSettings.from_env({"READINESS_REGIONS": "us-east-1, eu_west_1 ,eu-west-1"})
    assert s.readiness_regions == "us-east-1,eu-west-1"
    assert "'eu_west_1'" in s.errors["READINESS_REGIONS"]


def test_several_watchdog_errors_are_one_config_check():
    from handlers.watchdog import config_notes
    s = WatchdogSettings.from_env({"ORG_ID": "x", "MAX_DELIVERY_AGE_SECONDS": "2h"})
    (note,) = config_notes(s)
    assert "ORG_ID" in note.message and "MAX_DELIVERY_AGE_SECONDS" in note.message
    assert config_notes(WatchdogSettings.from_env({})) == []


# ------------------------------------------------------------ one reader of the environment

SETTINGS = Path(ROOT) / "handlers" / "settings.py"
# store_from_env takes the one-key mapping the processor builds from its settings (alert_state.py
# is owned elsewhere; its function reads no environment of its own).
ALLOWED = {("handlers/alert_state.py", "store_from_env")}


def contract_names() -> set[str]:
    """Every variable the two entry points document (their docstrings list the contract)."""
    import re

    from handlers import processor, watchdog
    names = set()
    for mod in (processor, watchdog):
        names |= set(re.findall(r"^``([A-Z][A-Z0-9_]+)``", mod.__doc__ or "", re.M))
    return names | {"POWERTOOLS_METRICS_NAMESPACE", "AWS_DEFAULT_REGION"}


def env_reads(source: str, names: set[str]) -> list[tuple[int, str, str]]:
    """(line, enclosing function, what) for each read of the environment in ``source``:
    ``os.environ`` / ``os.getenv`` / ``environ``, and ``x.get(NAME)`` / ``x[NAME]`` / ``NAME in
    x`` where NAME is a contract name, as a literal or a module-level string constant."""
    tree = ast.parse(source)
    consts = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
              for t in n.targets if isinstance(t, ast.Name)}

    def name_of(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            value = node.value
        elif isinstance(node, ast.Name):
            value = consts.get(node.id)
        else:
            return None
        return value if value in names else None

    out: list[tuple[int, str, str]] = []

    def visit(node: ast.AST, fn: str) -> None:
        for child in ast.iter_child_nodes(node):
            where = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                else fn
            what = None
            if isinstance(child, ast.Attribute) and child.attr in ("environ", "getenv", "environb"):
                what = f"os.{child.attr}"
            elif isinstance(child, ast.Name) and child.id in ("environ", "getenv"):
                what = child.id
            elif isinstance(child, ast.ImportFrom) and child.module == "os" and \
                    any(a.name in ("environ", "getenv") for a in child.names):
                what = "from os import environ"
            elif isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and \
                    child.func.attr in ("get", "pop", "setdefault") and child.args:
                what = name_of(child.args[0])
            elif isinstance(child, ast.Subscript):
                what = name_of(child.slice)
            elif isinstance(child, ast.Compare) and any(isinstance(o, (ast.In, ast.NotIn))
                                                        for o in child.ops):
                what = name_of(child.left)
            if what:
                out.append((child.lineno, where, what))
            visit(child, where)
    visit(tree, "<module>")
    return out


def test_the_checker_finds_each_way_of_reading_the_environment():
    names = {"ALERT_TOPIC_ARN", "CHAT_TOPIC_ARN"}
    src = ("import os\nfrom os import environ\nKEY = 'CHAT_TOPIC_ARN'\n"
           "def a(env):\n    return env.get('ALERT_TOPIC_ARN')\n"
           "def b(env):\n    return env[KEY]\n"
           "def c(env):\n    return KEY in env\n"
           "def d():\n    return os.environ.get('X')\n"
           "def e():\n    return os.getenv('X')\n"
           "def f(env):\n    return env.get('logGroup'), {KEY: 1}\n")
    found = env_reads(src, names)
    assert {(fn, what) for _, fn, what in found} == {
        ("<module>", "from os import environ"), ("a", "ALERT_TOPIC_ARN"),
        ("b", "CHAT_TOPIC_ARN"), ("c", "CHAT_TOPIC_ARN"), ("d", "os.environ"),
        ("e", "os.getenv")}


def test_only_settings_reads_the_environment():
    """Every module under handlers/ but settings.py takes typed settings (or the fields it
    needs): none reads os.environ or looks a contract name up in a mapping."""
    names = contract_names()
    assert {"ALERT_TOPIC_ARN", "TRAIL_NAME", "WATCHDOG_STATE_PARAMETER", "AWS_REGION",
            "ALERT_STATE_TABLE_NAME", "IDEMPOTENCY_WINDOW_SECONDS"} <= names
    found = []
    for path in sorted((Path(ROOT) / "handlers").rglob("*.py")):
        if path == SETTINGS:
            continue
        rel = path.relative_to(ROOT).as_posix()
        for line, fn, what in env_reads(path.read_text(), names):
            if (rel, fn) not in ALLOWED:
                found.append(f"{rel}:{line} ({fn}): {what}")
    assert found == []
    assert env_reads(SETTINGS.read_text(), names)       # the one reader


def test_the_environment_is_read_once_per_cold_start(monkeypatch):
    """One read of the environment builds the processor: the components get the settings."""
    from handlers import settings as S
    reads = []
    real = S.ProcessorSettings.from_env.__func__

    def counted(cls, env=None):
        reads.append(env)
        return real(cls, env)
    monkeypatch.setattr(S.ProcessorSettings, "from_env", classmethod(counted))
    aws = StrictAws()
    boot(dict(aws.env, TRAIL_NAME="org-trail", RULES_FILE="/nonexistent.json",
              SECURITY_HUB_FINDINGS="enabled", CHAT_TOPIC_ARN=f"arn:aws:sns:us-east-1:{ACCT}:c",
              IDEMPOTENCY_TABLE_NAME="alerts", ALERT_STATE_TABLE_NAME="state"), aws)
    assert len(reads) == 1


def test_settings_module_is_stdlib_only():
    tree = ast.parse(SETTINGS.read_text())
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
            for a in n.names} | {n.module.split(".")[0] for n in ast.walk(tree)
                                 if isinstance(n, ast.ImportFrom) and n.module}
    assert mods <= {"__future__", "math", "os", "re", "collections", "typing"}, mods


def test_the_metrics_namespace_is_read_by_settings_too():
    from handlers.settings import metrics_namespace
    assert metrics_namespace({"POWERTOOLS_METRICS_NAMESPACE": "Trailwatch/stack"}) == \
        "Trailwatch/stack"
    assert metrics_namespace({}) == metrics_namespace({"POWERTOOLS_METRICS_NAMESPACE": ""}) == \
        "Trailwatch"


@pytest.mark.parametrize("url", [
    f"https://sqs.us-east-1.amazonaws.com/{ACCT}/fail",
    f"https://sqs.cn-north-1.amazonaws.com.cn/{ACCT}/fail.fifo",
    f"http://localhost:4566/{ACCT}/fail",                        # a local endpoint (the demo)
])
def test_queue_urls_of_every_endpoint_are_accepted(url):
    assert ProcessorSettings.from_env({"FAILURE_QUEUE_URL": url}).failure_queue_url == url


@pytest.mark.parametrize("bucket,ok", [
    ("fail-archive", True), ("Legacy_Bucket.1", True),        # what botocore sends
    ("s3://fail-archive", False), ("arn:aws:s3:::fail-archive", False), ("ab", False),
])
def test_archive_bucket_names_as_botocore_takes_them(bucket, ok):
    s = ProcessorSettings.from_env({"FAILURE_ARCHIVE_BUCKET": bucket})
    assert (s.failure_archive_bucket == bucket) is ok
    assert ("FAILURE_ARCHIVE_BUCKET" in s.errors) is not ok
