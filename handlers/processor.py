"""Lambda entry point: ``handlers/processor.py::lambda_handler``.

A thin shell around the pure pipeline: it reads configuration from the environment once (cold
start: :class:`handlers.settings.ProcessorSettings`, the only reader; every component takes the
typed fields it needs), routes what cannot be processed to the failure queue (whole; oversize
records to the S3 failure archive), publishes alerts to the configured sinks concurrently within
the invocation's deadline, and writes its metrics as EMF documents (handlers/emf.py: the counters
and the lag samples of an invocation in one log line up to 100 records). Environment (contract
names):

``ALERT_TOPIC_ARN``                  SNS topic for alerts (optional)
``ALERT_BUS_NAME``                   EventBridge bus for alerts (optional; neither -> alerts are logged)
``FAILURE_QUEUE_URL``                SQS queue for unprocessable payloads/records (optional: logged)
``FAILURE_QUEUE_MAX_BYTES``          that queue's MaximumMessageSize (262144 when unset)
``FAILURE_ARCHIVE_BUCKET``           S3 bucket for failure records larger than the queue takes
``EXPECTED_CHANGE_PRINCIPALS``       comma-separated role ARNs that run trailwatch (see expected.py)
``DELIVERY_LAG_THRESHOLD_SECONDS``   ``delivery_delayed`` alert per payload above it (900)
``RULES_FILE``                       extra rules: a path, ``s3://bucket/key`` or ``ssm:/name``
``CLOCK_SKEW_TOLERANCE_SECONDS``     negative lag tolerated before counting clock skew (60)
``MAX_DECOMPRESSED_BYTES``           decompression cap per payload (16 MiB)
``EVENTBRIDGE_MAX_ENTRY_BYTES``      EventBridge entry limit (262144; AWS raised it to 1 MB in 2026)
``PUBLISH_CONCURRENCY``              threads publishing alerts / writing failures (16)
``TRAIL_NAME``                       tamper rules: the trail to watch, name or ARN (handlers/detection/tamper.py; unset: not watched)
``TRAIL_LOG_GROUP_NAME``             tamper rules: the trail's log group and trailwatch's CIS resources on it
``DELIVERY_ROLE_NAME``               tamper rules: the role CloudTrail assumes to write the log group (empty: the one the CLI creates)
``AWS_LAMBDA_FUNCTION_NAME``         tamper rules: the processor itself (set by Lambda)
``AWS_REGION``                       tamper rules: the default delivery role's Region when TRAIL_NAME
                                     is a name (set by Lambda)
``SECURITY_HUB_FINDINGS``            ``enabled`` -> alerts also imported as ASFF findings (Security Hub)
``CHAT_TOPIC_ARN``                   SNS topic for Amazon Q Developer chat notifications (optional)
``ALERT_AGGREGATION_THRESHOLD``      > N matches of one rule by one principal per invocation -> one
                                     aggregated alert (20; 0 disables)
``IDEMPOTENCY_TABLE_NAME``           DynamoDB table: no alert published twice within the window
``IDEMPOTENCY_WINDOW_SECONDS``       that window (86400)
``ALERT_STATE_TABLE_NAME``           DynamoDB table: rule thresholds and dedup windows across
                                     invocations (handlers/alert_state.py; unset: per invocation)

The only ways an invocation fails: the failure destination cannot be written (direct mode: the
whole invocation is retried; Kinesis: those records are reported in ``batchItemFailures``), or
alerts could not be delivered before the deadline (same). Alert ids make both retries safe.
Never a reason to fail: a sink that refuses an alert for good (``AlertsRejected``), a
rule that cannot be configured (``RuleErrors``: a bad rule or RULES_FILE, a tamper name above
that is not a valid name for its resource), a value in the environment that cannot be used
(``ConfigErrors``: a number that is not one, or below 1 for a size or concurrency, falls back to
its default; an ARN, URL or name above of the wrong shape leaves its component out: the SNS or
EventBridge sink, the failure queue or its archive, chat, idempotency or the alert-state table;
an ``EXPECTED_CHANGE_PRINCIPALS`` entry that is not an IAM role or user ARN is dropped; a
``SECURITY_HUB_FINDINGS`` other than enabled/disabled leaves Security Hub off); each is logged
(``rule skipped`` / ``setting ignored``) and alarmed instead, on every invocation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aws_lambda_powertools import Logger

from handlers import canary as canary_mod
from handlers import emf
from handlers import alerts as A
from handlers.alert_state import ENV_TABLE as STATE_TABLE
from handlers.alert_state import MemoryStore, Windows, store_from_env
from handlers.alerts import (
    DEFAULT_AGGREGATION_THRESHOLD,
    aggregate,
    delivery_delayed_alert,
)
from handlers.clients import default_client_factory
from handlers.detection.builtin import builtin_rules
from handlers.detection.rules import load_rules_file
from handlers.detection.tuning import load_tuning
from handlers.jsonsafe import dumps as safe_dumps
from handlers.pipeline import (
    PayloadError,
    Pipeline,
    Settings,
    build_alerts,
    decode_subscription_data,
    iter_sources,
    source_data,
)
from handlers.settings import DEFAULT_CONCURRENCY, ProcessorSettings, metrics_namespace
from handlers.settings import NUMBERS, POSITIVE, read_numbers  # noqa: F401 - moved there
from handlers.sinks import routing_sinks
from handlers.sinks.eventbridge import EventBridgeSink
from handlers.sinks.failure_queue import FailureQueue
from handlers.sinks.idempotency import wrap_sinks
from handlers.sinks.sns import SnsSink

SERVICE = "trailwatch"
NAMESPACE = metrics_namespace()
logger = Logger(service=SERVICE)
COUNT = "Count"

ALERT_CHUNK = 100            # alerts per publish task (a sink may set ``chunk_size``)
FAILURE_CHUNK = 10           # failure records per task (one SendMessageBatch)
POLL_SECONDS = 0.05          # how often the waiting thread re-reads the (injected) clock
# Time kept back from Lambda's remaining time to log, write metrics and return: 10% of it,
# at least 0.5 s and at most 5 s.
RESERVE_FRACTION, RESERVE_MIN, RESERVE_MAX = 0.10, 0.5, 5.0
LOG_PREVIEW = 256


class DeliveryFailed(RuntimeError):
    """Raised so Lambda retries the invocation (alert ids make the retry safe downstream)."""


def _short(value: Any) -> Any:
    """A log-friendly bounded form of a value from a hostile payload."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) <= LOG_PREVIEW:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe_dumps(value).decode("utf-8")[:LOG_PREVIEW]


def _accepts_deadline(fn: Callable[..., Any]) -> bool:
    import inspect  # deferred: not needed at cold start
    try:
        return "deadline" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def aggregate_for(alerts: list[dict[str, Any]], origin: dict[str, set[str]] | None,
                  threshold: int) -> list[dict[str, Any]]:
    """Collapse noisy rule matches before publishing (:func:`handlers.alerts.aggregate`), keeping
    Kinesis mode's alert -> source-record map whole: an undelivered aggregate fails every record
    it came from."""
    out, members = aggregate(alerts, threshold)
    if origin is not None:
        for agg_id, ids in members.items():
            origin[agg_id] = set().union(*(origin.get(i, set()) for i in ids))
    return out


def app_windows(rules: list[Any], settings: ProcessorSettings,
                client_factory: Callable[[str], Any], sleep: Callable[[float], None],
                clock: Callable[[], float], log: Any,
                suppressions: Sequence[Any] = ()) -> Windows | None:
    """The windows stage (handlers/alert_state.py) when any rule has a window or a suppression
    applies: on the ``ALERT_STATE_TABLE_NAME`` table, else per invocation (logged once here)."""
    windows = Windows(rules, MemoryStore(per_invocation=True), suppressions, log, clock)
    if not windows.active:
        return None
    store = None
    if settings.alert_state_table:
        store = store_from_env({STATE_TABLE: settings.alert_state_table}, client_factory, sleep,
                               log)
    if store is None:
        why = "is not usable" if STATE_TABLE in settings.errors else "is not set"
        log.warning(f"{STATE_TABLE} {why}: no dedup windows (every match alerts) "
                    "and rule thresholds count within one invocation only (CloudWatch Logs "
                    "decides its size); set it to keep them across invocations")
        windows.dedup = False
    else:
        windows.store = store
    return windows


class App:
    aggregation_threshold = int(DEFAULT_AGGREGATION_THRESHOLD)
    windows: Windows | None = None
    settings: ProcessorSettings | None = None     # what from_env read (None: built directly)

    def __init__(self, pipeline: Pipeline, sinks: list[Any], failure_queue: Any | None,
                 metrics_sink: Any = None, log: Any = None,
                 emit: Callable[[bytes], None] | None = None,
                 rule_errors: Sequence[str] = (), concurrency: int = DEFAULT_CONCURRENCY,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.pipeline = pipeline
        self.sinks = sinks
        self.failure_queue = failure_queue
        # Counters go out in the invocation's EMF document (handlers/emf.py); tests pass a sink
        # with the same add_metric signature to read them.
        self.metrics = metrics_sink if metrics_sink is not None else emf.Counters()
        self.log = log if log is not None else logger
        self.emit = emit if emit is not None else emf.stdout_writer()
        self.rule_errors = list(rule_errors)
        self.concurrency = max(1, int(concurrency))
        self.monotonic = monotonic
        self._executor: Any = None
        self._deadline_kw: dict[int, bool] = {}
        self._route_error = ""
        self.rejected = 0            # alerts a sink refused for good in this invocation
        self.config_errors: list[str] = []   # environment values ignored at cold start

    @classmethod
    def from_env(cls, env: Mapping[str, str] | ProcessorSettings | None = None,
                 client_factory: Callable[[str], Any] = default_client_factory,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic, **kw: Any) -> App:
        s = env if isinstance(env, ProcessorSettings) else ProcessorSettings.from_env(env)
        pipeline_settings = Settings(
            lag_threshold=s.delivery_lag_threshold,
            skew_tolerance=s.clock_skew_tolerance,
            max_decompressed_bytes=s.max_decompressed_bytes,
            expected_principals=s.expected_principals,
        )
        # Built-in rules always load; a bad or clashing user rule (or an unreadable RULES_FILE)
        # is skipped with an error log and counted in the RuleErrors metric of every invocation.
        # A tamper rule whose resource name cannot be used is skipped the same way.
        rule_errors: list[str] = []
        rules = builtin_rules(s.tamper, rule_errors)
        suppressions: list[Any] = []
        if s.rules_file:
            tuning: dict[str, Any] = {}
            rules += load_rules_file(s.rules_file, errors=rule_errors,
                                     taken={r.id for r in rules}, client_factory=client_factory,
                                     tuning=tuning)
            if tuning.get("tuning") or tuning.get("suppressions"):   # tuning as data
                rules, suppressions = load_tuning(rules, tuning, rule_errors)
        log = kw.get("log") if kw.get("log") is not None else logger
        for err in rule_errors:
            log.error("rule skipped", extra={"rules_file": s.rules_file or None, "error": err})
        # A setting that cannot be used (handlers/settings.py) never stops the processor: its
        # default is used or its component left out, logged here and counted (ConfigErrors,
        # alarmed) on every invocation until the environment is fixed.
        for key, err in s.errors.items():
            log.error("setting ignored", extra={"setting": key, "error": err})
        sinks: list[Any] = []
        if s.alert_topic_arn:
            sinks.append(SnsSink(s.alert_topic_arn, client_factory, sleep, clock=monotonic))
        if s.alert_bus_name:
            sinks.append(EventBridgeSink(s.alert_bus_name, client_factory, sleep,
                                         max_entry_bytes=s.eventbridge_max_entry_bytes,
                                         clock=monotonic))
        sinks += routing_sinks(s.security_hub, s.chat_topic_arn,        # Security Hub, chat
                               client_factory, sleep)
        sinks = wrap_sinks(sinks, s.idempotency_table, client_factory,  # idempotency
                           window=s.idempotency_window)
        fq = FailureQueue(s.failure_queue_url, client_factory, sleep,
                          max_bytes=s.failure_queue_max_bytes,
                          archive_bucket=s.failure_archive_bucket,
                          clock=monotonic, wall_clock=clock) \
            if s.failure_queue_url else None
        kw.setdefault("concurrency", s.publish_concurrency)
        app = cls(Pipeline(rules, pipeline_settings, clock), sinks, fq, rule_errors=rule_errors,
                  monotonic=monotonic, **kw)
        app.settings = s
        app.aggregation_threshold = s.aggregation_threshold
        app.config_errors = list(s.errors.values())
        app.windows = app_windows(rules, s, client_factory, sleep, clock, log, suppressions)
        return app

    # ------------------------------------------------------------------------------ handle
    def deadline(self, context: Any) -> float | None:
        """When publishing must be over (on ``monotonic``): Lambda's remaining time minus a
        reserve to log, write metrics and return. None without a Lambda context."""
        get = getattr(context, "get_remaining_time_in_millis", None)
        if get is None:
            return None
        try:
            remaining = float(get()) / 1000.0
        except (TypeError, ValueError):
            return None
        reserve = min(max(remaining * RESERVE_FRACTION, RESERVE_MIN), RESERVE_MAX)
        return self.monotonic() + max(0.0, remaining - reserve)

    def handle(self, event: Any, context: Any = None) -> dict[str, Any]:
        deadline = self.deadline(context)
        request_id = getattr(context, "aws_request_id", None)
        try:
            mode, sources = iter_sources(event)
        except PayloadError as e:
            mode, sources = "awslogs", []
            unsupported = e
        else:
            unsupported = None

        counts = dict(payloads=0, payload_errors=0, control_messages=0, log_events=0, records=0,
                      oversize=0, malformed=0, clock_skew=0, no_event_time=0, delayed=0,
                      alerts=0, failures_routed=0, alerts_undelivered=0, failures_unrouted=0,
                      alerts_rejected=0, alerts_windowed=0, state_errors=0)
        failures: list[tuple[str, dict[str, Any]]] = []
        alerts: dict[str, dict[str, Any]] = {}        # alert_id -> alert (first one wins)
        # Kinesis: which records each alert came from, so a failed publish fails only those.
        origin: dict[str, set[str]] | None = {} if mode == "kinesis" else None
        delivery_lags: list[float] = []
        receipt_lags: list[float] = []
        canaries: list[dict[str, Any]] = []
        pending: dict[str, tuple[Any, ...]] = {}      # rule matches: built after the windows
        kinesis = mode == "kinesis"

        def payload_failure(source_id: str, reason: str, detail: str, data: Any) -> None:
            counts["payload_errors"] += 1
            self.log.error("undecodable subscription payload",
                           extra={"source": _short(source_id), "reason": reason,
                                  "detail": _short(detail)})
            doc = {"reason": reason, "detail": detail, "source": source_id, "data": data}
            if kinesis and not source_id.startswith("record#"):
                doc["sequence_number"] = source_id
            failures.append((source_id, doc))

        if unsupported is not None:
            counts["payload_errors"] += 1
            self.log.error("unsupported invocation event", extra={"reason": unsupported.kind,
                                                                   "detail": unsupported.detail})
            failures.append(("event", {"reason": unsupported.kind, "detail": unsupported.detail,
                                       "source": "event", "event_keys": sorted(map(str, event))
                                       if isinstance(event, dict) else None,
                                       "data": event}))   # the whole invocation event

        max_bytes = self.pipeline.settings.max_decompressed_bytes
        threshold = self.pipeline.settings.lag_threshold
        for source_id, data in sources:
            counts["payloads"] += 1
            try:
                env = decode_subscription_data(data, max_bytes)
            except PayloadError as e:
                payload_failure(source_id, e.kind, e.detail, source_data(data))
                continue
            message_type = env["messageType"]
            if message_type == "CONTROL_MESSAGE":
                counts["control_messages"] += 1
                continue
            if message_type != "DATA_MESSAGE":
                payload_failure(source_id, "unknown_message_type",
                                f"messageType {message_type[:64]!r} is neither DATA_MESSAGE nor "
                                f"CONTROL_MESSAGE", data)
                continue
            res = self.pipeline.process_envelope(env, lazy=True)
            if res.pending:
                for ident, how in res.pending.items():
                    pending.setdefault(ident, how)
            counts["log_events"] += res.log_events
            counts["records"] += res.records
            counts["oversize"] += res.oversize
            counts["malformed"] += res.malformed
            counts["clock_skew"] += res.skewed
            counts["no_event_time"] += res.no_event_time
            delivery_lags += res.delivery_lags
            receipt_lags += res.receipt_lags
            canaries += res.canaries
            for f in res.failures:
                self.log.error("unprocessable log event", extra={
                    "reason": f["reason"], "detail": _short(f["detail"]), "source": _short(source_id),
                    "log_event_id": _short(f["log_event_id"]),
                    "log_group": _short(f["log_group"]), "log_stream": _short(f["log_stream"])})
                f["source"] = source_id
                if kinesis and not source_id.startswith("record#"):
                    f["sequence_number"] = source_id
                failures.append((source_id, f))
            for alert in res.alerts:
                alerts.setdefault(alert["alert_id"], alert)
                if origin is not None:
                    origin.setdefault(alert["alert_id"], set()).add(source_id)
            if res.delayed:
                # One alert per payload: its id depends only on that payload's events, so a
                # Kinesis batch redelivered in part gives the same id for the same record.
                counts["delayed"] += len(res.delayed)
                alert = delivery_delayed_alert(res.delayed, threshold)
                alerts.setdefault(alert["alert_id"], alert)
                if origin is not None:
                    origin.setdefault(alert["alert_id"], set()).add(source_id)

        canary_mod.report(canaries, self.log, self.emit, NAMESPACE, SERVICE,
                          int(self.pipeline.clock() * 1000))
        if self.windows is not None and alerts:
            # Suppressions, dedup windows and thresholds across invocations: only matches get
            # here (records that match nothing cost nothing), and only those kept are built.
            kept = self.windows.apply(list(alerts.values()))
            st = self.windows.stats
            counts["alerts_windowed"] = st["suppressed"] + st["deduplicated"] + \
                st["below_threshold"]
            counts["state_errors"] = st["state_errors"]
        else:
            kept = list(alerts.values())
        alerts = {a["alert_id"]: a for a in build_alerts(kept, pending)}
        if request_id is not None:
            for alert in alerts.values():
                delivery = alert.get("delivery")
                if isinstance(delivery, dict):
                    delivery["request_id"] = request_id
                else:
                    alert["delivery"] = {"request_id": request_id}
        counts["alerts"] = len(alerts)
        counts["failures_routed"] = len(failures)
        undelivered: set[str] = set()
        try:
            failed_sources = self._route_failures(failures, deadline)
            counts["failures_unrouted"] = sum(1 for s, _ in failures if s in failed_sources)
            if failed_sources and mode == "awslogs":
                raise DeliveryFailed(f"could not write {counts['failures_unrouted']} of "
                                     f"{len(failures)} unprocessable item(s) to the failure queue "
                                     f"({self._route_error}); failing the invocation so Lambda "
                                     f"retries it")
            self.rejected = 0
            undelivered = self._publish(aggregate_for(list(alerts.values()), origin,
                                                      self.aggregation_threshold), deadline)
            counts["alerts_undelivered"] = len(undelivered)
            counts["alerts_rejected"] = self.rejected
        finally:
            self._record_metrics(counts, delivery_lags, receipt_lags)

        if kinesis:
            assert origin is not None
            for ident in undelivered:
                failed_sources |= origin.get(ident, set())
            return {"batchItemFailures": [{"itemIdentifier": s} for s, _ in sources
                                          if s in failed_sources]}
        if undelivered:
            raise DeliveryFailed(f"{len(undelivered)} alert(s) could not be published within the "
                                 f"retries and the invocation's deadline; failing the invocation "
                                 f"so Lambda retries it (alert ids make that safe)")
        # Percentiles are CloudWatch's job (the EMF samples above); the response carries the max.
        counts["max_delivery_lag_seconds"] = round(max(delivery_lags), 3) if delivery_lags else None
        return counts

    # ------------------------------------------------------------------------------ delivery
    def _call(self, fn: Callable[..., Any], items: list[Any], deadline: float | None) -> Any:
        key = id(fn.__self__) if hasattr(fn, "__self__") else id(fn)
        takes = self._deadline_kw.get(key)
        if takes is None:
            takes = self._deadline_kw[key] = _accepts_deadline(fn)
        return fn(items, deadline=deadline) if takes else fn(items)

    def _run(self, calls: list[Callable[[], Any]],
             deadline: float | None) -> list[tuple[str, Any]]:
        """Run ``calls`` on the bounded pool; ("ok", result) | ("error", exc) | ("timeout", None)
        each. Returns at the deadline whatever is still running (it is reported, not awaited)."""
        if not calls:
            return []
        if deadline is None and len(calls) == 1:
            # No deadline to watch (no Lambda context) and nothing to overlap: run it here and
            # save the thread hand-off.
            try:
                return [("ok", calls[0]())]
            except Exception as e:  # noqa: BLE001 - reported like a pool task's exception
                return [("error", e)]
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.concurrency,
                                                thread_name_prefix="trailwatch-publish")
        futures = [self._executor.submit(c) for c in calls]
        pending = set(futures)
        while pending:
            timeout = None
            if deadline is not None:
                left = deadline - self.monotonic()
                if left <= 0:
                    break
                timeout = min(left, POLL_SECONDS)
            _, pending = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        out: list[tuple[str, Any]] = []
        for f in futures:
            if f.done() and not f.cancelled():
                exc = f.exception()
                out.append(("error", exc) if exc is not None else ("ok", f.result()))
            else:
                f.cancel()
                out.append(("timeout", None))
        return out

    def _route_failures(self, failures: list[tuple[str, dict[str, Any]]],
                        deadline: float | None) -> set[str]:
        if not failures:
            return set()
        fq = self.failure_queue
        if fq is None:
            for _, f in failures:
                self.log.error("unprocessable item (no FAILURE_QUEUE_URL configured)",
                               extra={"failure": safe_dumps(f).decode("utf-8")})
            return set()
        docs = [f for _, f in failures]
        chunks = [(i, docs[i:i + FAILURE_CHUNK]) for i in range(0, len(docs), FAILURE_CHUNK)]
        results = self._run([lambda c=chunk: self._call(fq.send, c, deadline)
                             for _, chunk in chunks], deadline)
        failed: set[int] = set()
        errors: list[str] = []
        for (offset, chunk), (status, value) in zip(chunks, results, strict=True):
            if status == "ok":
                for u in value or ():
                    self.log.error("failure queue write failed", extra=u)
                    failed.add(offset + int(str(u["id"])[1:]))
                    errors.append(str(u.get("error")))
            else:
                err = "deadline" if status == "timeout" else f"{type(value).__name__}: {value}"
                self.log.error("failure queue write failed",
                               extra={"count": len(chunk), "error": err})
                failed.update(range(offset, offset + len(chunk)))
                errors.append(err)
        self._route_error = f"first error: {errors[0][:300]}" if errors else ""
        return {failures[i][0] for i in failed}

    def _publish(self, alerts: list[dict[str, Any]], deadline: float | None) -> set[str]:
        """Send every alert to every sink, concurrently; return the ids some sink could not
        deliver. Sinks fail independently: an exception or a timeout in one is that sink's
        failure for those alerts only."""
        if not alerts:
            return set()
        if not self.sinks:
            for alert in alerts:
                self.log.warning("alert", extra={"alert": alert})
            return set()
        tasks: list[tuple[Any, list[dict[str, Any]]]] = []
        for sink in self.sinks:
            size = max(1, int(getattr(sink, "chunk_size", ALERT_CHUNK) or ALERT_CHUNK))
            tasks += [(sink, alerts[i:i + size]) for i in range(0, len(alerts), size)]
        with A.shared_bodies(alerts if len(self.sinks) > 1 else ()):
            results = self._run([lambda s=sink, c=chunk: self._call(s.publish, c, deadline)
                                 for sink, chunk in tasks], deadline)
        failed: set[str] = set()
        for (sink, chunk), (status, value) in zip(tasks, results, strict=True):
            name = getattr(sink, "name", type(sink).__name__)
            if status == "ok":
                for u in value or ():
                    if u.get("permanent"):
                        # No retry can deliver it (e.g. Security Hub not enabled): logged and
                        # counted (AlertsRejected, alarmed), never a reason to fail the
                        # invocation and re-publish to every other sink.
                        self.rejected += 1
                        self.log.error("alert rejected", extra={"sink": name, **u})
                        continue
                    self.log.error("alert not delivered", extra={"sink": name, **u})
                    failed.add(u["id"])
            else:
                err = "deadline: still publishing when the invocation's time ran out" \
                    if status == "timeout" else f"{type(value).__name__}: {value}"
                self.log.error("alerts not delivered", extra={
                    "sink": name, "count": len(chunk), "error": err,
                    "ids": [a["alert_id"] for a in chunk[:10]]})
                failed.update(a["alert_id"] for a in chunk)
        return failed

    def _record_metrics(self, counts: dict[str, int], delivery_lags: list[float],
                        receipt_lags: list[float]) -> None:
        m = self.metrics
        count = COUNT
        counts = dict(counts, rule_errors=len(self.rule_errors),
                      config_errors=len(self.config_errors))
        for name, key in (("Payloads", "payloads"), ("PayloadErrors", "payload_errors"),
                          ("ControlMessages", "control_messages"), ("LogEvents", "log_events"),
                          ("CloudTrailRecords", "records"), ("OversizeEvents", "oversize"),
                          ("MalformedEvents", "malformed"), ("ClockSkewEvents", "clock_skew"),
                          ("DelayedEvents", "delayed"), ("Alerts", "alerts"),
                          ("AlertsUndelivered", "alerts_undelivered"),
                          ("AlertsRejected", "alerts_rejected"),
                          ("FailuresUnrouted", "failures_unrouted"),
                          ("RuleErrors", "rule_errors"), ("ConfigErrors", "config_errors"),
                          ("AlertsWindowed", "alerts_windowed"), ("StateErrors", "state_errors")):
            # Zero counters are skipped (alarms treat missing data as not breaching); LogEvents
            # is always sent so the dashboard shows the invocation.
            if counts[key] or key == "log_events":
                m.add_metric(name=name, unit=count, value=counts[key])
        # One sample per record so CloudWatch can compute p50/p95 (DeliveryLag = CloudTrail's
        # delivery time - eventTime; ReceiptLag = our receive time - delivery time).
        now_ms = int(self.pipeline.clock() * 1000)
        take = m.take if m.__class__ is emf.Counters else None
        for doc in emf.documents({"DeliveryLag": delivery_lags, "ReceiptLag": receipt_lags},
                                 "Seconds", NAMESPACE, SERVICE, now_ms,
                                 counters=take() if take is not None else ()):
            self.emit(doc)


_APP: App | None = None


def get_app() -> App:
    global _APP
    if _APP is None:
        _APP = App.from_env()
    return _APP


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return get_app().handle(event, context)
