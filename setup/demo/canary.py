"""The demo's end-to-end proof: ``trailwatch verify --canary`` through a simulated CloudTrail.

Runs inside :func:`setup.demo.run_demo` (embedded moto server, same process):

* the processor is "deployed": a Lambda function on the local AWS, its invoke permission, its log
  group ``/aws/lambda/trailwatch-processor`` and a subscription filter on the trail's log group;
* CloudTrail is simulated at the SDK level: every CloudWatch Logs ``PutMetricFilter`` /
  ``DeleteMetricFilter`` call the canary makes (in the management account and, through
  ``--canary-member-role``, in a member account) becomes a CloudTrail record, delivered to the
  stream CloudTrail would use only if the role's policy allows that exact stream (the same
  evaluation the demo's delivery uses), else reported through GetTrailStatus;
* the local AWS's subscription delivery invokes the real processor (``handlers.processor.App``);
  its log lines (Powertools-style JSON) and EMF lines are written into the function's log group,
  as Lambda would;
* the canary's waits run on a simulated clock, so a timeout costs no real time.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from typing import Any

from setup.aws import AwsClients
from setup.demo.cloudtrail import may_deliver, record_trail_status, stream_name
from setup.demo.world import REGION, CountingMetrics, client, drain_queue
from setup.verify import canary

FUNCTION = "trailwatch-processor"
FILTER = "trailwatch-processor"


class JsonLog:
    """Powertools-Logger-shaped: one JSON line per call (what Lambda writes to CloudWatch Logs)."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def _log(self, level: str, msg: str, extra: Any = None) -> None:
        self.lines.append(json.dumps({"level": level, "message": msg, "service": "trailwatch",
                                      **(extra or {})}, default=str))

    def info(self, msg: str, extra: Any = None) -> None:
        self._log("INFO", msg, extra)

    def warning(self, msg: str, extra: Any = None) -> None:
        self._log("WARNING", msg, extra)

    def error(self, msg: str, extra: Any = None) -> None:
        self._log("ERROR", msg, extra)


def deploy_processor(world: dict[str, Any], log_group: str) -> str:
    """The SAM template's direct mode on the local AWS: function, permission, log group, filter."""
    iam, lam, logs = client("iam"), client("lambda"), client("logs")
    role = iam.create_role(RoleName=f"{FUNCTION}-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]
    }))["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handlers/processor.py", "# the real code runs in the demo process\n")
    arn = lam.create_function(FunctionName=FUNCTION, Runtime="python3.13", Role=role,
                              Handler="handlers.processor.lambda_handler",
                              Code={"ZipFile": buf.getvalue()})["FunctionArn"]
    lam.add_permission(FunctionName=FUNCTION, StatementId="logs", Action="lambda:InvokeFunction",
                       Principal=f"logs.{REGION}.amazonaws.com", SourceAccount=world["account"],
                       SourceArn=f"arn:aws:logs:{REGION}:{world['account']}:log-group:"
                                 f"{log_group}:*")
    logs.create_log_group(logGroupName=f"/aws/lambda/{FUNCTION}")
    logs.put_subscription_filter(logGroupName=log_group, filterName=FILTER, filterPattern="",
                                 destinationArn=arn)
    return arn


@contextlib.contextmanager
def lambda_runs_processor(world: dict[str, Any], log_group: str, role_name: str, topic: str,
                          fail_q: str) -> Iterator[list[dict[str, Any]]]:
    """While active, the local AWS's subscription delivery runs the real processor and writes its
    stdout into the function's log group. Yields the processor's results, one per invocation."""
    import base64
    import gzip

    from moto.awslambda.models import LambdaBackend
    from moto.logs.models import logs_backends

    from handlers.processor import App
    results: list[dict[str, Any]] = []
    original = LambdaBackend.send_log_event
    backend = logs_backends[world["account"]][REGION]
    group = f"/aws/lambda/{FUNCTION}"

    def send_log_event(self: Any, function_arn: str, filter_name: str, log_group_name: str,
                       log_stream_name: str, log_events: Any) -> None:
        # moto hands integer ids; CloudWatch Logs sends them as strings (aws-facts §4.1), and the
        # processor refuses anything else as a malformed log event.
        log_events = [dict(e, id=str(e.get("id"))) for e in log_events]
        envelope = {"messageType": "DATA_MESSAGE", "owner": world["account"],
                    "logGroup": log_group_name, "logStream": log_stream_name,
                    "subscriptionFilters": [filter_name], "logEvents": log_events}
        event = {"awslogs": {"data": base64.b64encode(gzip.compress(
            json.dumps(envelope).encode())).decode()}}
        lines: list[str] = []
        app = App.from_env({"ALERT_TOPIC_ARN": topic, "FAILURE_QUEUE_URL": fail_q,
                            "TRAIL_LOG_GROUP_NAME": log_group, "DELIVERY_ROLE_NAME": role_name,
                            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION},
                           metrics_sink=CountingMetrics(), log=JsonLog(lines),
                           emit=lambda line: lines.append(line.decode()))
        results.append(app.handle(event))
        stream = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        backend.create_log_stream(group, stream)
        now = int(time.time() * 1000)
        backend.put_log_events(group, stream, [{"timestamp": now, "message": line}
                                               for line in lines])

    LambdaBackend.send_log_event = send_log_event  # type: ignore[method-assign]
    try:
        yield results
    finally:
        LambdaBackend.send_log_event = original  # type: ignore[method-assign]


def cloudtrail_hook(world: dict[str, Any], log_group: str, role_name: str,
                    delivered: list[dict[str, Any]]) -> Any:
    """A ``session_hooks`` entry: CloudWatch Logs Put/DeleteMetricFilter calls made through a
    session become CloudTrail records, delivered (or refused) as CloudTrail would."""

    def install(session: Any) -> None:
        account = session.client("sts", region_name=REGION).get_caller_identity()["Account"]
        pending: list[dict[str, Any]] = []

        def before(params: dict[str, Any], model: Any, **_: Any) -> None:
            pending.append({"name": model.name, "params": dict(params)})

        def after(http_response: Any, parsed: Any, model: Any, **_: Any) -> None:
            call = pending.pop(0) if pending else {"name": model.name, "params": {}}
            now = time.time()
            error = (parsed.get("Error") or {}).get("Code") if http_response.status_code >= 300 \
                else None
            rec = {"eventVersion": "1.09", "userIdentity": {
                       "type": "AssumedRole" if account != world["account"] else "IAMUser",
                       "accountId": account, "arn": f"arn:aws:iam::{account}:user/secops"},
                   "eventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                   "eventSource": "logs.amazonaws.com", "eventName": call["name"],
                   "awsRegion": REGION, "sourceIPAddress": "203.0.113.10",
                   "userAgent": "Boto3 trailwatch-demo", "requestParameters": call["params"],
                   "responseElements": None, "eventID": str(uuid.uuid4()),
                   "eventType": "AwsApiCall", "managementEvent": True,
                   "eventCategory": "Management", "recipientAccountId": account,
                   **({"errorCode": error} if error else {})}
            stream = stream_name(world, account)
            arn = f"arn:aws:logs:{REGION}:{world['account']}:log-group:{log_group}:log-stream:" \
                  f"{stream}"
            ok, why = may_deliver(role_name, arn)
            delivered.append({"event": call["name"], "account": account, "stream": stream,
                              "delivered": ok, "error": why})
            if not ok:
                record_trail_status(world["account"], None, why)
                return
            logs = client("logs")
            with contextlib.suppress(Exception):
                logs.create_log_stream(logGroupName=log_group, logStreamName=stream)
            logs.put_log_events(logGroupName=log_group, logStreamName=stream, logEvents=[
                {"timestamp": int(now * 1000), "message": json.dumps(rec)}])
            record_trail_status(world["account"], now, "")

        for op in ("PutMetricFilter", "DeleteMetricFilter"):
            session.events.register(f"before-parameter-build.cloudwatch-logs.{op}", before)
            session.events.register(f"after-call.cloudwatch-logs.{op}", after)
    return install


@contextlib.contextmanager
def simulated_clock() -> Iterator[None]:
    """The canary's sleeps advance a simulated clock instead of waiting."""
    offset = [0.0]
    saved = canary._now, canary._sleep
    canary._now = lambda: time.time() + offset[0]          # type: ignore[assignment]
    canary._sleep = lambda s: offset.__setitem__(0, offset[0] + s)   # type: ignore[assignment]
    try:
        yield
    finally:
        canary._now, canary._sleep = saved


def run(world: dict[str, Any], log_group: str, role_name: str, topic: str, read_q: str,
        fail_q: str, trail: str, main: Any) -> dict[str, Any]:
    """Deploy the processor, run ``verify --canary`` (with a member-account probe) and report."""
    function = deploy_processor(world, log_group)
    member = world["members"][0]
    member_role = f"arn:aws:iam::{member}:role/OrganizationAccountAccessRole"
    argv = ["verify", "--trail", trail, "--canary", "--canary-member-role", member_role,
            "--output", "json"]
    delivered: list[dict[str, Any]] = []
    clients = AwsClients(region=REGION)
    hook = cloudtrail_hook(world, log_group, role_name, delivered)
    clients.session_hooks = [hook]       # type: ignore[attr-defined]
    hook(clients.session)
    out, err = io.StringIO(), io.StringIO()
    with lambda_runs_processor(world, log_group, role_name, topic, fail_q) as invocations, \
            simulated_clock(), contextlib.redirect_stderr(err):
        code = main(argv, out=out, stdin=io.StringIO(""), clients=clients)
    doc = json.loads(out.getvalue())
    checks = {c["id"]: c for c in doc["checks"] if c["id"].startswith("canary.")}
    alerts = drain_queue(client("sqs"), read_q)
    return {"command": "trailwatch verify --trail " + trail + " --canary --canary-member-role "
                       + member_role,
            "exit_code": code, "function": function, "checks": checks,
            "cloudtrail": delivered, "processor_invocations": len(invocations),
            "alerts_published": len(alerts),
            "progress": [ln for ln in err.getvalue().splitlines() if ln][:3]}


def print_section(c: dict[str, Any], out: Any) -> None:
    print(f"\n=== {c['command']} " + "=" * 3, file=out)
    for call in c["cloudtrail"]:
        state = "delivered to" if call["delivered"] else "NOT DELIVERED to"
        print(f"  CloudTrail (simulated): {call['event']} in {call['account']} {state} "
              f"{call['stream']}" + (f" ({call['error']})" if call["error"] else ""), file=out)
    for cid in ("canary.delivered", "canary.processed"):
        r = c["checks"].get(cid)
        if r:
            print(f"  {r['status']:<4}  {cid:<17} {r['message']}", file=out)
            if r["status"] != "PASS" and r.get("remediation"):
                print(f"        {'':<17} fix: {r['remediation']}", file=out)
    print(f"  processor invocations {c['processor_invocations']}, alerts published for the "
          f"canary: {c['alerts_published']}, verify exit code {c['exit_code']}", file=out)
