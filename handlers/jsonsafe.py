"""JSON serialisation that cannot fail on anything the processor can be handed.

orjson is fast but refuses three things an attacker (or a broken producer) can put in front of us:
strings with lone surrogates (Lambda's runtime decodes the invocation event with Python's ``json``,
which accepts ``"\\ud800"``), nesting deeper than 254 levels, and non-``str`` keys. Two more
things are valid JSON that AWS refuses: SQS (and SNS -> SQS delivery) reject U+FFFE, U+FFFF and
the C0 controls other than TAB/LF/CR, and CloudWatch rejects metric values it cannot store.

:func:`dumps` tries orjson first and falls back to an iterative encoder with no depth limit that
escapes everything outside printable ASCII, so the output always round-trips through
``json.loads`` to the same value. :func:`sqs_safe` rewrites the two raw characters orjson leaves
in its UTF-8 output that SQS refuses (``\\ufffe``/``\\uffff`` are valid JSON escapes for them).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

_encode_str = json.encoder.encode_basestring_ascii   # C implementation; escapes surrogates too
_NONCHAR = (b"\xef\xbf\xbe", b"\xef\xbf\xbf")         # U+FFFE, U+FFFF in UTF-8


def sqs_safe(body: bytes) -> bytes:
    """Escape U+FFFE/U+FFFF in a JSON document's UTF-8 (they can only occur inside strings)."""
    if body.isascii():   # the common case, and much cheaper than two substring searches
        return body
    if _NONCHAR[0] in body or _NONCHAR[1] in body:
        body = body.replace(_NONCHAR[0], b"\\ufffe").replace(_NONCHAR[1], b"\\uffff")
    return body


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _encode_str(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return "null"          # JSON has no NaN/Infinity (orjson writes null too)
        return float.__repr__(value)
    return _encode_str(str(value))


def dumps_iterative(doc: Any) -> bytes:
    """Plain-ASCII JSON with no recursion (any depth), surrogates escaped, any key type."""
    out: list[str] = []
    # Stack of pending work: values to encode or literal strings to emit.
    stack: list[tuple[bool, Any]] = [(False, doc)]
    while stack:
        literal, item = stack.pop()
        if literal:
            out.append(item)
            continue
        if isinstance(item, dict):
            if not item:
                out.append("{}")
                continue
            out.append("{")
            pending: list[tuple[bool, Any]] = [(True, "}")]
            pairs = list(item.items())
            for n in range(len(pairs) - 1, -1, -1):
                k, v = pairs[n]
                key = k if isinstance(k, str) else _scalar(k).strip('"')
                pending.append((False, v))
                pending.append((True, ("," if n else "") + _encode_str(key) + ":"))
            stack.extend(pending)
        elif isinstance(item, list | tuple):
            if not item:
                out.append("[]")
                continue
            out.append("[")
            pending = [(True, "]")]
            for n in range(len(item) - 1, -1, -1):
                pending.append((False, item[n]))
                if n:
                    pending.append((True, ","))
            stack.extend(pending)
        else:
            out.append(_scalar(item))
    return "".join(out).encode("ascii")


def dumps(doc: Any) -> bytes:
    """orjson when it can, else :func:`dumps_iterative`; the result is always SQS-safe."""
    try:
        return sqs_safe(orjson.dumps(doc))
    except TypeError:   # orjson.JSONEncodeError: surrogates, depth > 254, non-str keys, big ints
        return dumps_iterative(doc)
