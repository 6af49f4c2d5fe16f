"""Strict in-memory fakes of SNS, EventBridge, SQS and S3 that enforce AWS's documented limits.

moto accepts anything; these fakes refuse (and record in ``violations``) what AWS refuses:

* SNS PublishBatch: at most 10 entries; Ids unique, 1-80 of ``[A-Za-z0-9_-]``; each message
  non-empty valid UTF-8 and, with its attributes (name + data type + value bytes), at most
  262,144 bytes; the batch total at most 262,144 bytes (botocore ``PublishBatch``).
* EventBridge PutEvents: at most 10 entries; each entry at most ``max_entry_bytes`` by the
  documented formula (Time 14 bytes if set + UTF-8 bytes of Source, DetailType, Detail and each
  Resources entry); Detail a JSON object (aws-facts.md section 6).
* SQS SendMessageBatch: at most 10 entries, Ids as SNS; each body non-empty, only the characters
  SQS allows (``#x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF``) and at most
  the queue's ``MaximumMessageSize`` bytes; the batch total at most 1,048,576 bytes. ``QueueUrl``
  must be a queue URL (``https://<endpoint>/<account>/<queue>``): a queue ARN or a bare name is
  refused with ``InvalidAddress`` (botocore sqs model, SendMessageBatch errors: "The specified ID
  is invalid").
* S3 PutObject: key 1-1,024 UTF-8 bytes, body bytes.
* CloudTrail DescribeTrails / GetTrailStatus / GetEventSelectors: a trail *name* matches only the
  caller's own trails in the current Region; other Regions' trails and organization trails seen
  from member accounts only by ARN or in the shadow-trail listing (:class:`StrictCloudTrail`).

A refused call raises a ``ClientError`` with AWS's error code (as the real service would), and the
violation is recorded so a test can assert that trailwatch never sent one (trailwatch's sinks catch
errors, so a raise alone would go unnoticed). ``fail`` lets a test inject faults: a callable
``(operation, request) -> None | Exception | "partial"``.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from typing import Any

from botocore.exceptions import ClientError

SNS_MAX_BYTES = 262_144
SNS_MAX_BATCH = 10
EVENTBRIDGE_MAX_BATCH = 10
SQS_MAX_BATCH = 10
SQS_MAX_BATCH_BYTES = 1_048_576
S3_MAX_KEY_BYTES = 1024
_ID = re.compile(r"[A-Za-z0-9_-]{1,80}")
_QUEUE_URL = re.compile(r"https?://[A-Za-z0-9.:-]+/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?")
_SQS_BAD_CHARS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _error(code: str, message: str, op: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


def _parse(text: str) -> Any:
    """json.loads with room for any depth the processor can be sent (the service parses JSON on
    its own stack, not under the caller's recursion limit)."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        return json.loads(text)
    finally:
        sys.setrecursionlimit(limit)


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))   # raises UnicodeEncodeError on lone surrogates


class _Fake:
    def __init__(self, fail: Any = None) -> None:
        self.violations: list[str] = []
        self.calls = 0
        self.fail = fail
        self.lock = threading.Lock()

    def _refuse(self, code: str, message: str, op: str) -> ClientError:
        with self.lock:
            self.violations.append(f"{op}: {code}: {message}")
        return _error(code, message, op)

    def _inject(self, op: str, request: Any) -> Any:
        with self.lock:
            self.calls += 1
        if self.fail is None:
            return None
        out = self.fail(op, request)
        if isinstance(out, Exception):
            raise out
        return out

    def _ids(self, entries: list[dict[str, Any]], op: str) -> None:
        ids = [e.get("Id") for e in entries]
        if len(set(ids)) != len(ids):
            raise self._refuse("BatchEntryIdsNotDistinct", "duplicate Id", op)
        for i in ids:
            if not isinstance(i, str) or not _ID.fullmatch(i):
                raise self._refuse("InvalidBatchEntryId", f"bad Id {i!r}", op)


class StrictSns(_Fake):
    def __init__(self, fail: Any = None) -> None:
        super().__init__(fail)
        self.messages: list[dict[str, Any]] = []

    def publish_batch(self, TopicArn: str, PublishBatchRequestEntries: list[dict[str, Any]]):  # noqa: N803
        op = "PublishBatch"
        entries = PublishBatchRequestEntries
        if not 1 <= len(entries) <= SNS_MAX_BATCH:
            raise self._refuse("TooManyEntriesInBatchRequest", f"{len(entries)} entries", op)
        self._ids(entries, op)
        total = 0
        for e in entries:
            msg = e.get("Message")
            if not isinstance(msg, str) or not msg:
                raise self._refuse("InvalidParameter", "empty message", op)
            try:
                size = utf8_len(msg)
                for name, attr in (e.get("MessageAttributes") or {}).items():
                    value = attr.get("StringValue")
                    if not isinstance(value, str) or not value:
                        raise self._refuse("ParameterValueInvalid", f"attribute {name} empty", op)
                    size += utf8_len(name) + utf8_len(attr["DataType"]) + utf8_len(value)
            except UnicodeEncodeError:
                raise self._refuse("InvalidParameter", "message is not valid UTF-8", op) from None
            if size > SNS_MAX_BYTES:
                raise self._refuse("InvalidParameter", f"message of {size} bytes", op)
            if _SQS_BAD_CHARS.search(msg):   # SNS -> SQS subscriptions would refuse delivery
                raise self._refuse("InvalidParameter", "characters SQS subscribers refuse", op)
            total += size
        if total > SNS_MAX_BYTES:
            raise self._refuse("BatchRequestTooLong", f"batch of {total} bytes", op)
        out = self._inject(op, entries)
        failed = []
        with self.lock:
            for n, e in enumerate(entries):
                if out == "partial" and n % 2:
                    failed.append({"Id": e["Id"], "Code": "InternalError", "SenderFault": False})
                else:
                    self.messages.append(e)
        return {"Successful": [], "Failed": failed}


class StrictEvents(_Fake):
    def __init__(self, max_entry_bytes: int = 262_144, fail: Any = None) -> None:
        super().__init__(fail)
        self.max_entry_bytes = max_entry_bytes
        self.entries: list[dict[str, Any]] = []

    @staticmethod
    def entry_size(entry: dict[str, Any]) -> int:
        size = 14 if entry.get("Time") is not None else 0
        for key in ("Source", "DetailType", "Detail"):
            if entry.get(key):
                size += utf8_len(entry[key])
        for res in entry.get("Resources") or ():
            size += utf8_len(res)
        return size

    def put_events(self, Entries: list[dict[str, Any]]):  # noqa: N803
        op = "PutEvents"
        if not 1 <= len(Entries) <= EVENTBRIDGE_MAX_BATCH:
            raise self._refuse("ValidationException", f"{len(Entries)} entries", op)
        for e in Entries:
            try:
                size = self.entry_size(e)
            except UnicodeEncodeError:
                raise self._refuse("ValidationException", "entry is not valid UTF-8", op) from None
            if size > self.max_entry_bytes:
                raise self._refuse("ValidationException", f"entry of {size} bytes", op)
            try:
                detail = _parse(e.get("Detail") or "")
            except ValueError:
                raise self._refuse("ValidationException", "Detail is not JSON", op) from None
            if not isinstance(detail, dict):
                raise self._refuse("ValidationException", "Detail is not a JSON object", op)
        out = self._inject(op, Entries)
        results = []
        with self.lock:
            for n, e in enumerate(Entries):
                if out == "partial" and n % 2:
                    results.append({"ErrorCode": "InternalFailure", "ErrorMessage": "retry"})
                else:
                    self.entries.append(e)
                    results.append({"EventId": f"ev-{len(self.entries)}"})
        return {"FailedEntryCount": sum(1 for r in results if "ErrorCode" in r), "Entries": results}


class StrictSqs(_Fake):
    def __init__(self, max_message_bytes: int = 262_144, fail: Any = None) -> None:
        super().__init__(fail)
        self.max_message_bytes = max_message_bytes
        self.bodies: list[str] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]):  # noqa: N803
        op = "SendMessageBatch"
        if not _QUEUE_URL.fullmatch(str(QueueUrl)):
            raise self._refuse("InvalidAddress", f"The address {QueueUrl} is not valid", op)
        if not 1 <= len(Entries) <= SQS_MAX_BATCH:
            raise self._refuse("AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                               f"{len(Entries)} entries", op)
        self._ids(Entries, op)
        total = 0
        for e in Entries:
            body = e.get("MessageBody")
            if not isinstance(body, str) or not body:
                raise self._refuse("InvalidParameterValue", "empty body", op)
            if _SQS_BAD_CHARS.search(body):
                raise self._refuse("InvalidMessageContents", "characters outside the allowed set",
                                   op)
            try:
                size = utf8_len(body)
            except UnicodeEncodeError:
                raise self._refuse("InvalidMessageContents", "not valid UTF-8", op) from None
            if size > self.max_message_bytes:
                raise self._refuse("InvalidParameterValue", f"message of {size} bytes > "
                                   f"MaximumMessageSize {self.max_message_bytes}", op)
            total += size
        if total > SQS_MAX_BATCH_BYTES:
            raise self._refuse("AWS.SimpleQueueService.BatchRequestTooLong", f"{total} bytes", op)
        out = self._inject(op, Entries)
        failed = []
        with self.lock:
            for n, e in enumerate(Entries):
                if out == "partial" and n % 2:
                    failed.append({"Id": e["Id"], "Code": "InternalError", "SenderFault": False})
                else:
                    self.bodies.append(e["MessageBody"])
        return {"Successful": [], "Failed": failed}


class StrictS3(_Fake):
    def __init__(self, fail: Any = None) -> None:
        super().__init__(fail)
        self.objects: dict[tuple[str, str], bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any):  # noqa: N803
        op = "PutObject"
        try:
            klen = utf8_len(Key)
        except UnicodeEncodeError:
            raise self._refuse("InvalidArgument", "key is not valid UTF-8", op) from None
        if not 1 <= klen <= S3_MAX_KEY_BYTES:
            raise self._refuse("KeyTooLongError", f"key of {klen} bytes", op)
        if not isinstance(Body, bytes | bytearray):
            raise self._refuse("InvalidArgument", "body is not bytes", op)
        self._inject(op, Key)
        with self.lock:
            self.objects[(Bucket, Key)] = bytes(Body)
        return {"ETag": '"x"'}

    def get_object(self, Bucket: str, Key: str):  # noqa: N803
        import io
        try:
            return {"Body": io.BytesIO(self.objects[(Bucket, Key)])}
        except KeyError:
            raise _error("NoSuchKey", Key, "GetObject") from None


class StrictDynamo(_Fake):
    """DynamoDB UpdateItem / GetItem on one table, as the alert state store uses them (issue 20).

    Enforced as DynamoDB documents it, each rule with its document:

    * Key (Developer Guide, "Constraints in Amazon DynamoDB", partition keys): the key attribute
      ``pk`` is a non-empty String of at most 2,048 bytes.
    * Update expressions (Developer Guide, "Using update expressions in DynamoDB"): clauses
      ``SET``, ``REMOVE``, ``ADD``, ``DELETE``, "each action keyword can appear only once";
      supported actions ``SET #a = operand [+ operand]`` with operands ``:v``, ``#p`` (an
      attribute the item must hold) and ``if_not_exists(#p, :v)`` ("if the item does not
      contain an attribute at the specified path, if_not_exists evaluates to value; otherwise,
      it evaluates to path"), ``+`` on Numbers only, ``ADD #a :v`` (a Number is added, "DynamoDB uses 0 as
      the initial value" when the attribute is missing; a set is unioned, created when
      missing; ADD takes only a Number or a set), ``REMOVE #a`` (removing a missing attribute
      is no error). "DynamoDB evaluates every action against the item's attribute values as
      they were before the update" (same page, note).
    * Overlapping paths: an attribute may be the target of only one action of an expression;
      DynamoDB refuses "Invalid UpdateExpression: Two document paths overlap with each other"
      (ValidationException; moto accepted it before 5.1.2, getmoto/moto#5429, #8648).
    * Expression names and values (Developer Guide, "Expression attribute names" / "values"):
      every ``#name`` and ``:value`` used must be defined ("An expression attribute value used
      in expression is not defined") and every one defined must be used ("Value provided in
      ExpressionAttributeValues unused in expressions"); neither map may be empty.
    * Attribute values (API Reference, AttributeValueUpdate: "set type attributes must not be
      empty"): a set value non-empty and without duplicates.
    * Expression length (Developer Guide, Constraints, expression parameters): at most 4 KB.
    * Item size (Developer Guide, "DynamoDB item sizes and formats"; Constraints: 400 KB): the
      sum of attribute names' and values' UTF-8 lengths (a Number counted as 1 byte per two
      significant digits + 1, a set as its elements) at most 409,600 bytes, else
      ValidationException "Item size has exceeded the maximum allowed size"; nothing written.
    * ReturnValues (API Reference, UpdateItem): ``NONE`` (default), ``ALL_OLD`` (the item as
      it was before the update; no ``Attributes`` when there was none), ``UPDATED_OLD``,
      ``ALL_NEW``, ``UPDATED_NEW`` (only the attributes the update named); anything else is a
      ValidationException.
    * Conditions ("Condition expressions"): ``attribute_not_exists(#a) OR #a = :v``; a failed
      condition raises ConditionalCheckFailedException and writes nothing.
    * TTL ("Enabling Time to Live"): the TTL attribute must be a Number of epoch seconds (a
      String is silently never expired by DynamoDB, so it is recorded as a violation here).

    ``fail`` injects faults (throttling, an unreachable endpoint).
    """

    KEY_MAX_BYTES = 2048
    ITEM_MAX_BYTES = 400 * 1024
    EXPRESSION_MAX_BYTES = 4096
    RETURN_VALUES = ("NONE", "ALL_OLD", "UPDATED_OLD", "ALL_NEW", "UPDATED_NEW")
    _CLAUSE = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\s", re.IGNORECASE)
    _SET = re.compile(r"^(#\w+)\s*=\s*(.+)$")
    _OPERAND = re.compile(r"^(?:(:\w+)|(#\w+)|if_not_exists\(\s*(#\w+)\s*,\s*(:\w+)\s*\))$")
    _ADD = re.compile(r"^(#\w+)\s+(:\w+)$")
    _REMOVE = re.compile(r"^(#\w+)$")
    _COND = re.compile(r"^attribute_not_exists\((#\w+)\) OR (#\w+) = (:\w+)$")
    _PLACEHOLDER = re.compile(r"[#:]\w+")

    def __init__(self, table: str = "alert-state", ttl_attribute: str = "expires_at",
                 fail: Any = None) -> None:
        super().__init__(fail)
        self.table = table
        self.ttl_attribute = ttl_attribute
        self.items: dict[str, dict[str, Any]] = {}
        self.ops: list[str] = []

    def _key(self, op: str, kw: dict[str, Any]) -> str:
        if kw.get("TableName") != self.table:
            raise _error("ResourceNotFoundException", "Requested resource not found", op)
        key = kw.get("Key") or {}
        pk = (key.get("pk") or {}).get("S") if set(key) == {"pk"} else None
        if not isinstance(pk, str) or not pk or len(pk.encode("utf-8")) > self.KEY_MAX_BYTES:
            raise self._refuse("ValidationException", "bad key pk", op)
        return pk

    @staticmethod
    def item_size(item: dict[str, Any]) -> int:
        def value_size(v: dict[str, Any]) -> int:
            (kind, x), = v.items()
            if kind == "S":
                return utf8_len(x)
            if kind == "N":
                digits = x.lstrip("-").replace(".", "").strip("0") or "0"
                return (len(digits) + 1) // 2 + 1
            if kind == "SS":
                return sum(utf8_len(e) for e in x)
            if kind == "NS":
                return sum(value_size({"N": e}) for e in x)
            return len(json.dumps(x))
        return sum(utf8_len(name) + value_size(v) for name, v in item.items())

    def get_item(self, **kw: Any) -> dict[str, Any]:
        self._inject("GetItem", kw)
        self.ops.append("GetItem")
        item = self.items.get(self._key("GetItem", kw))
        return {"Item": json.loads(json.dumps(item))} if item else {}

    def update_item(self, **kw: Any) -> dict[str, Any]:
        op = "UpdateItem"
        self._inject(op, kw)
        self.ops.append(op)
        pk = self._key(op, kw)

        def invalid(message: str) -> ClientError:
            return self._refuse("ValidationException", message, op)

        names, values = kw.get("ExpressionAttributeNames"), kw.get("ExpressionAttributeValues")
        if names == {} or values == {}:
            raise invalid("ExpressionAttributeNames/Values must not be empty")
        names, values = names or {}, values or {}
        expr = kw.get("UpdateExpression", "").strip()
        cond = kw.get("ConditionExpression")
        if len(expr.encode("utf-8")) > self.EXPRESSION_MAX_BYTES:
            raise invalid("Invalid UpdateExpression: Expression size has exceeded the maximum "
                          "allowed size")
        used = set(self._PLACEHOLDER.findall(expr + " " + (cond or "")))
        for ph in sorted(used):
            if ph.startswith("#") and ph not in names:
                raise invalid(f"An expression attribute name used in the document path is not "
                              f"defined; attribute name: {ph}")
            if ph.startswith(":") and ph not in values:
                raise invalid(f"An expression attribute value used in expression is not "
                              f"defined; attribute value: {ph}")
        for given, what in ((names, "Names"), (values, "Values")):
            unused = sorted(set(given) - used)
            if unused:
                raise invalid(f"Value provided in ExpressionAttribute{what} unused in "
                              f"expressions: keys: {{{', '.join(unused)}}}")
        for v in values.values():
            kind = next(iter(v)) if isinstance(v, dict) and len(v) == 1 else None
            if kind in ("SS", "NS") and (not v[kind] or len(set(v[kind])) != len(v[kind])):
                raise invalid("One or more parameter values were invalid: an AttributeValue "
                              "may not contain an empty set or duplicates")
        returns = kw.get("ReturnValues", "NONE")
        if returns not in self.RETURN_VALUES:
            raise invalid(f"ReturnValues {returns!r} is not valid for UpdateItem")

        marks = list(self._CLAUSE.finditer(expr))
        if not marks or marks[0].start() != 0:
            raise invalid(f"Invalid UpdateExpression: Syntax error; {expr!r}")
        clauses: dict[str, str] = {}
        for m, nxt in zip(marks, marks[1:] + [None]):
            verb = m[1].upper()
            if verb in clauses:
                raise invalid(f'Invalid UpdateExpression: The "{verb}" section can only be '
                              f"used once in an update expression")
            body = expr[m.end():nxt.start() if nxt else None]
            clauses[verb] = body.strip()
        actions: list[tuple[str, str, Any]] = []    # (verb, target attribute, operand)
        for verb, body in clauses.items():
            for part in (x.strip() for x in re.split(r",(?![^(]*\))", body)):
                pattern = {"SET": self._SET, "ADD": self._ADD, "REMOVE": self._REMOVE}.get(verb)
                found = pattern.match(part) if pattern else None
                if not found:
                    raise invalid(f"unsupported update action {verb} {part!r}")
                target = names[found[1]]
                if verb == "SET":
                    operand = []
                    for term in (t.strip() for t in found[2].split("+")):
                        o = self._OPERAND.match(term)
                        if not o:
                            raise invalid(f"unsupported update action {verb} {part!r}")
                        operand.append(("value", values[o[1]]) if o[1] else
                                       ("path", names[o[2]]) if o[2] else
                                       ("if_not_exists", names[o[3]], values[o[4]]))
                    if len(operand) > 2:
                        raise invalid(f"Invalid UpdateExpression: Syntax error; {part!r}")
                elif verb == "ADD":
                    operand = values[found[2]]
                else:
                    operand = None
                actions.append((verb, target, operand))
        targets = [t for _, t, _ in actions]
        for i, t in enumerate(targets):
            if t in targets[:i]:
                raise invalid("Invalid UpdateExpression: Two document paths overlap with each "
                              f"other; must remove or rewrite one of these paths; path one: "
                              f"[{t}], path two: [{t}]")
        before = self.items.get(pk)
        item = json.loads(json.dumps(before)) if before else {"pk": {"S": pk}}
        if cond:
            m = self._COND.match(cond)
            if not m or m[1] != m[2]:
                raise invalid(f"unsupported condition {cond!r}")
            attr, want = names[m[1]], values[m[3]]
            if attr in item and item[attr] != want:
                raise _error("ConditionalCheckFailedException",
                             "The conditional request failed", op)
        snapshot = json.loads(json.dumps(item))       # every action reads the item before
        for verb, attr, operand in actions:
            if verb == "SET":
                terms = []
                for term in operand:
                    if term[0] == "value":
                        terms.append(term[1])
                    elif term[0] == "path":
                        if term[1] not in snapshot:
                            raise invalid("The provided expression refers to an attribute that "
                                          "does not exist in the item")
                        terms.append(snapshot[term[1]])
                    else:
                        terms.append(snapshot.get(term[1], term[2]))
                v = terms[0]
                if len(terms) == 2:
                    if "N" not in terms[0] or "N" not in terms[1]:
                        raise invalid("An operand in the update expression has an incorrect "
                                      "data type")
                    v = {"N": str(int(terms[0]["N"]) + int(terms[1]["N"]))}
                if attr == self.ttl_attribute and "N" not in v:
                    self.violations.append(f"{op}: TTL attribute {attr} is not a Number")
                item[attr] = v
            elif verb == "ADD":
                old = snapshot.get(attr)
                if "N" in operand:
                    if old is not None and "N" not in old:
                        raise invalid("An operand in the update expression has an incorrect "
                                      "data type")
                    total = int((old or {"N": "0"})["N"]) + int(operand["N"])
                    item[attr] = {"N": str(total)}
                elif "SS" in operand or "NS" in operand:
                    kind = "SS" if "SS" in operand else "NS"
                    if old is not None and kind not in old:
                        raise invalid("An operand in the update expression has an incorrect "
                                      "data type")
                    merged = list((old or {kind: []})[kind])
                    merged += [e for e in operand[kind] if e not in merged]
                    item[attr] = {kind: merged}
                else:
                    raise invalid("Incorrect operand type for operator or function; operator: "
                                  "ADD")
            else:
                item.pop(attr, None)
        if self.item_size(item) > self.ITEM_MAX_BYTES:
            raise invalid("Item size has exceeded the maximum allowed size")
        self.items[pk] = item
        named = set(targets)
        if returns == "ALL_OLD":
            return {"Attributes": json.loads(json.dumps(before))} if before else {}
        if returns == "ALL_NEW":
            return {"Attributes": json.loads(json.dumps(item))}
        if returns == "UPDATED_OLD":
            return {"Attributes": {a: v for a, v in snapshot.items()
                                   if a in named and before}}
        if returns == "UPDATED_NEW":
            return {"Attributes": {a: v for a, v in item.items() if a in named}}
        return {}


class StrictAws:
    """One of each fake, a client factory for ``App.from_env``, and read-back helpers."""

    def __init__(self, queue_max_bytes: int = 262_144, eventbridge_max_entry_bytes: int = 262_144,
                 fail: Any = None) -> None:
        self.sns = StrictSns(fail)
        self.events = StrictEvents(eventbridge_max_entry_bytes, fail)
        self.sqs = StrictSqs(queue_max_bytes, fail)
        self.s3 = StrictS3(fail)
        self.env = {"ALERT_TOPIC_ARN": "arn:aws:sns:us-east-1:111122223333:alerts",
                    "ALERT_BUS_NAME": "alerts",
                    "FAILURE_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/111122223333/fail",
                    "FAILURE_QUEUE_MAX_BYTES": str(queue_max_bytes),
                    "FAILURE_ARCHIVE_BUCKET": "fail-archive"}

    def client(self, service: str) -> Any:
        if service == "securityhub":
            return self.securityhub
        if service == "sts":
            return self._sts
        return {"sns": self.sns, "events": self.events, "sqs": self.sqs, "s3": self.s3}[service]

    @property
    def securityhub(self) -> StrictSecurityHub:
        """Created on first use (``securityhub_enabled`` False: Security Hub not enabled)."""
        hub = self.__dict__.get("_hub")
        if hub is None:
            hub = self.__dict__["_hub"] = StrictSecurityHub(
                enabled=self.__dict__.get("securityhub_enabled", True))
        return hub

    @property
    def _sts(self) -> Any:
        account = "111122223333"
        return type("Sts", (), {"get_caller_identity": staticmethod(lambda: {
            "Account": account, "Arn": f"arn:aws:sts::{account}:assumed-role/processor/fn"})})()

    @property
    def violations(self) -> list[str]:
        return self.sns.violations + self.events.violations + self.sqs.violations + \
            self.s3.violations

    def failure_records(self) -> list[dict[str, Any]]:
        """Every failure record, whole: queue messages, with archived ones read from S3."""
        out = []
        for body in self.sqs.bodies:
            doc = json.loads(body)
            if "archive" in doc:
                whole = json.loads(self.s3.objects[(doc["archive"]["bucket"],
                                                    doc["archive"]["key"])])
                for key in ("reason", "source"):
                    assert doc.get(key) == whole.get(key), key   # the pointer names the record
                doc = whole
            out.append(doc)
        return out

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        return {"sns": [json.loads(m["Message"]) for m in self.sns.messages],
                "eventbridge": [json.loads(e["Detail"]) for e in self.events.entries]}

    def reset(self) -> None:
        self.sns.messages.clear()
        self.events.entries.clear()
        self.sqs.bodies.clear()
        self.s3.objects.clear()


# ------------------------------------------------------------------------------ CloudTrail

def _trail_not_found(name: str, op: str) -> ClientError:
    return _error("TrailNotFoundException",
                  f"Unknown trail: {name} for the user", op)


class CloudTrailWorld:
    """Trails of several accounts and Regions, seen through :class:`StrictCloudTrail` views.

    Each trail is the dict DescribeTrails returns (``Name``, ``TrailARN``, ``HomeRegion``,
    ``IsMultiRegionTrail``, ``IsOrganizationTrail``, ``CloudWatchLogs*``); ``org_members`` lists
    the accounts an organization trail applies to (the management account's organization).
    """

    def __init__(self, org_members: tuple[str, ...] = ()) -> None:
        self.trails: list[dict[str, Any]] = []
        self.org_members = set(org_members)
        self.status: dict[str, dict[str, Any]] = {}

    def add(self, account: str, region: str, name: str, *, multi_region: bool = True,
            org: bool = False, **extra: Any) -> dict[str, Any]:
        arn = f"arn:aws:cloudtrail:{region}:{account}:trail/{name}"
        trail = {"Name": name, "TrailARN": arn, "HomeRegion": region,
                 "IsMultiRegionTrail": multi_region, "IsOrganizationTrail": org,
                 "S3BucketName": f"{name}-bucket", "IncludeGlobalServiceEvents": True,
                 "LogFileValidationEnabled": True, "HasCustomEventSelectors": False, **extra}
        self.trails.append(trail)
        self.status[arn] = {"IsLogging": True}
        return trail

    def client(self, account: str, region: str) -> StrictCloudTrail:
        return StrictCloudTrail(self, account, region)


class StrictCloudTrail:
    """One account's CloudTrail client in one Region, with the lookup rules AWS documents and
    moto does not have (its backends are per account, so another account's organization trail is
    never there at all, and names match in any Region).

    From botocore's ``cloudtrail`` 2013-11-01 model (the API reference text):

    * ``DescribeTrails.trailNameList``: "If one or more trail names are specified, information
      is returned only if the names match the names of trails belonging only to the current
      Region and current account. To return information about a trail in another Region, you
      must specify its trail ARN." With an empty list and ``includeShadowTrails`` null or true,
      "information for all trails in the current Region and any associated shadow trails in
      other Regions is returned".
    * ``includeShadowTrails``: "A shadow trail is the replication in a Region of a trail that
      was created in a different Region, or in the case of an organization trail, the
      replication of an organization trail in member accounts. If you do not include shadow
      trails, organization trails in a member account and Region replication trails will not be
      returned. The default is true."
    * ``GetTrailStatus.Name`` (and ``GetEventSelectors.TrailName``): "To get the status of a
      shadow trail (a replication of the trail in another Region), you must specify its ARN.
      [...] If the trail is an organization trail and you are a member account in the
      organization in Organizations, you must provide the full ARN of that trail, and not just
      the name."

    A name that matches nothing gives an empty ``trailList`` from DescribeTrails and
    ``TrailNotFoundException`` from the single-trail calls.
    """

    def __init__(self, world: CloudTrailWorld, account: str, region: str) -> None:
        self.world, self.account, self.region = world, account, region
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _owner(self, trail: dict[str, Any]) -> str:
        return trail["TrailARN"].split(":")[4]

    def _visible(self, include_shadow: bool = True) -> list[dict[str, Any]]:
        out = []
        for t in self.world.trails:
            in_region = t["HomeRegion"] == self.region or t["IsMultiRegionTrail"]
            own = self._owner(t) == self.account
            member = t["IsOrganizationTrail"] and self.account in self.world.org_members
            if not in_region or not (own or member):
                continue
            shadow = not own or t["HomeRegion"] != self.region
            if shadow and not include_shadow:
                continue
            out.append(t)
        return out

    def _by_name_or_arn(self, name: str, op: str) -> dict[str, Any]:
        for t in self._visible():
            if name == t["TrailARN"]:
                return t
            if name == t["Name"] and self._owner(t) == self.account and \
                    t["HomeRegion"] == self.region:
                return t
        raise _trail_not_found(name, op)

    def describe_trails(self, trailNameList: list[str] | None = None,  # noqa: N803
                        includeShadowTrails: bool = True) -> dict[str, Any]:  # noqa: N803
        self.calls.append(("DescribeTrails", {"trailNameList": trailNameList,
                                              "includeShadowTrails": includeShadowTrails}))
        visible = self._visible(includeShadowTrails)
        if not trailNameList:
            return {"trailList": [dict(t) for t in visible]}
        out = []
        for name in trailNameList:
            for t in visible:
                if name == t["TrailARN"] or (name == t["Name"] and self._owner(t) == self.account
                                             and t["HomeRegion"] == self.region):
                    out.append(dict(t))
        return {"trailList": out}

    def get_trail(self, Name: str) -> dict[str, Any]:  # noqa: N803
        self.calls.append(("GetTrail", {"Name": Name}))
        return {"Trail": dict(self._by_name_or_arn(Name, "GetTrail"))}

    def get_trail_status(self, Name: str) -> dict[str, Any]:  # noqa: N803
        self.calls.append(("GetTrailStatus", {"Name": Name}))
        t = self._by_name_or_arn(Name, "GetTrailStatus")
        return dict(self.world.status[t["TrailARN"]])

    def get_event_selectors(self, TrailName: str) -> dict[str, Any]:  # noqa: N803
        self.calls.append(("GetEventSelectors", {"TrailName": TrailName}))
        t = self._by_name_or_arn(TrailName, "GetEventSelectors")
        return {"TrailARN": t["TrailARN"], "EventSelectors": [
            {"ReadWriteType": "All", "IncludeManagementEvents": True, "DataResources": [],
             "ExcludeManagementEventSources": []}]}


class FakeAwsClients:
    """Stands in for ``setup.aws.AwsClients``: named services come from ``fakes`` (a callable
    ``(region) -> client`` per service), anything else raises so a test sees every call."""

    def __init__(self, region: str, **fakes: Any) -> None:
        self.region = region
        self.fakes = fakes
        self.calls: list[tuple[str, str, str]] = []

    @property
    def default_region(self) -> str:
        return self.region

    def client(self, service: str, region: str | None = None) -> Any:
        if service not in self.fakes:
            raise AssertionError(f"unexpected {service} client")
        return self.fakes[service](region or self.region)

    def mutating_calls(self) -> list[tuple[str, str, str]]:
        return []


# ------------------------------------------------------------------------------ Security Hub

ASFF_MAX_FINDINGS = 100
ASFF_MAX_REGION = 16


class StrictSecurityHub(_Fake):
    """Security Hub ``BatchImportFindings`` as AWS answers it; moto imports findings even when
    Security Hub was never enabled and checks no field.

    * Not enabled in the Region (no ``EnableSecurityHub``; ``enabled=False``): every call raises
      ``InvalidAccessException`` (botocore securityhub model: "The account doesn't have
      permission to perform this action."; the message AWS sends is "Account <id> is not
      subscribed to AWS Security Hub", as reported in prowler-cloud/prowler#1590 and
      joshlarsen/aws-recon#65). No retry can succeed until someone enables it.
    * More than 100 findings in one request: ``InvalidInputException`` (the whole call).
    * A finding that breaks the ASFF rules is not imported: ``FailedFindings`` with
      ``ErrorCode`` ``InvalidInput``. Checked here (botocore model, ``Resource.Region``: "Length
      Constraints: Minimum length of 1. Maximum length of 16."; the default product ARN: the
      finding's ``AwsAccountId`` must be the calling account): Resources 1-32 entries, each
      Region 1-16 characters; Title <= 256 and Description <= 1,024 characters; AwsAccountId.
      Importing the same finding again fails the same way.
    """

    def __init__(self, account: str = "111122223333", region: str = "us-east-1",
                 enabled: bool = True, fail: Any = None) -> None:
        super().__init__(fail)
        self.account, self.enabled = account, enabled
        self.meta = type("Meta", (), {"region_name": region})()
        self.findings: dict[str, dict[str, Any]] = {}
        self.requests: list[list[dict[str, Any]]] = []

    @staticmethod
    def invalid(finding: dict[str, Any], account: str) -> str | None:
        resources = finding.get("Resources") or []
        if not 1 <= len(resources) <= 32:
            return f"{len(resources)} Resources"
        for r in resources:
            region = r.get("Region")
            if region is not None and not 1 <= len(region) <= ASFF_MAX_REGION:
                return f"Resources[].Region of {len(region)} characters"
        if len(finding.get("Title") or "") > 256 or len(finding.get("Description") or "") > 1024:
            return "Title or Description too long"
        if finding.get("AwsAccountId") != account:
            return "AwsAccountId is not the calling account (default product ARN)"
        return None

    def batch_import_findings(self, Findings: list[dict[str, Any]]):  # noqa: N803
        op = "BatchImportFindings"
        with self.lock:
            self.requests.append(list(Findings))
        if not self.enabled:
            raise self._refuse("InvalidAccessException",
                               f"Account {self.account} is not subscribed to AWS Security Hub", op)
        if not 1 <= len(Findings) <= ASFF_MAX_FINDINGS:
            raise self._refuse("InvalidInputException", f"{len(Findings)} findings", op)
        self._inject(op, Findings)
        failed = []
        with self.lock:
            for f in Findings:
                why = self.invalid(f, self.account)
                if why:
                    self.violations.append(f"{op}: InvalidInput: {why}")
                    failed.append({"Id": f.get("Id"), "ErrorCode": "InvalidInput",
                                   "ErrorMessage": why})
                else:
                    self.findings[f["Id"]] = f
        return {"FailedCount": len(failed), "SuccessCount": len(Findings) - len(failed),
                "FailedFindings": failed}


# ------------------------------------------------------------------------------ CloudWatch Logs

MAX_METRIC_FILTERS_PER_LOG_GROUP = 100


class StrictMetricFilterLogs:
    """A CloudWatch Logs client (moto's) with the metric filter quota AWS enforces and moto does
    not: "The maximum number of metric filters that can be associated with a log group is 100"
    (CloudWatch Logs API Reference, PutMetricFilter); a new filter past it fails
    ``LimitExceededException`` ("You have reached the maximum number of resources that can be
    created"). Putting a filter of an existing name updates it and is not refused.

    ``fail(op, request)`` may return an exception to raise *before* the call (AWS refused it:
    nothing changed), and ``after(op, request)`` one to raise *after* the inner call took
    effect (the response was lost, e.g. a read timeout). Everything else goes to ``inner``.
    """

    def __init__(self, inner: Any, fail: Any = None, after: Any = None) -> None:
        self.inner, self.fail, self.after = inner, fail, after
        self.ops: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _call(self, op: str, method: Any, request: dict[str, Any]) -> Any:
        self.ops.append(op)
        if self.fail is not None and (err := self.fail(op, request)) is not None:
            raise err
        out = method(**request)
        if self.after is not None and (err := self.after(op, request)) is not None:
            raise err
        return out

    def put_metric_filter(self, **request: Any) -> Any:
        group, name = request["logGroupName"], request["filterName"]
        names = {f["filterName"] for f in self._all(group)}
        if name not in names and len(names) >= MAX_METRIC_FILTERS_PER_LOG_GROUP:
            self.ops.append("PutMetricFilter")
            raise _error("LimitExceededException", "Resource limit exceeded.", "PutMetricFilter")
        return self._call("PutMetricFilter", self.inner.put_metric_filter, request)

    def delete_metric_filter(self, **request: Any) -> Any:
        return self._call("DeleteMetricFilter", self.inner.delete_metric_filter, request)

    def describe_metric_filters(self, **request: Any) -> Any:
        return self._call("DescribeMetricFilters", self.inner.describe_metric_filters, request)

    def _all(self, group: str) -> list[dict[str, Any]]:
        out, kwargs = [], {"logGroupName": group}
        while True:
            page = self.inner.describe_metric_filters(**kwargs)
            out += page.get("metricFilters", [])
            if not page.get("nextToken"):
                return out
            kwargs["nextToken"] = page["nextToken"]
