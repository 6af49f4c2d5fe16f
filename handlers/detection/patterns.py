r"""A CloudWatch Logs *JSON* filter-pattern engine, compiled once and fast per event.

Follows AWS's "Filter and pattern syntax" for JSON log events:

* ``{ SELECTOR OP VALUE }`` with selectors ``$.a.b``, ``$.a[0]``, ``$.a[0].b`` (property names are
  letters, digits, ``-`` and ``_``; ``@`` is accepted too for ``@aws``-style system fields).
* ``=`` and ``!=`` with a quoted (``"..."``) or bare value; ``*`` at the start and/or end of a value
  is a wildcard (``"*UnauthorizedOperation"``, ``AccessDenied*``, ``123.123.*``); a lone ``*``
  matches any value. As documented, a ``*`` in the middle is literal.
* ``<``, ``>``, ``<=``, ``>=`` (and ``=``/``!=``) with a number compare numerically.
* ``EXISTS``, ``NOT EXISTS``, ``IS NULL``, ``IS TRUE``, ``IS FALSE``.
* ``&&``, ``||`` and parentheses. Precedence is AWS's documented order ``()`` > ``&&`` > ``||``, so
  the published CIS 4.1 text ``A || B && C && D`` means ``A || (B && C && D)``.

The documented grammar is the default. The processor also accepts a few *extensions* that
``PutMetricFilter`` may reject or read differently; :func:`lint_pattern` reports each use (and
``compile_pattern(text, strict=True)`` refuses them), so only lint-clean patterns are exported as
metric filters:

* ``EXISTS`` (only ``NOT EXISTS`` is documented; ``= "*"`` is the documented "has a value"),
* ``@`` in a property name (``$.@aws``),
* ``\*`` inside a value: a literal ``*`` rather than a wildcard (AWS documents no escape),
* unquoted values with characters other than letters, digits, ``_ . - * +``, and numbers with an
  exponent (``1E2``): quote them,
* patterns longer than PutMetricFilter's 1,024 characters.

Semantics where AWS is terse (documented choices, tested):

* A selector must reach a *value node* (string, number, boolean). If it is missing or reaches an
  object or array, both ``=`` and ``!=`` are false (AWS: "both {$.users = 1} and {$.users != 1}
  fail to match"). So ``$.additionalEventData.MFAUsed != "Yes"`` does not match a record without
  that field.
* ``null`` is not a value node for comparisons (use ``IS NULL``).
* A numeric literal compared with a JSON string compares the text (``$.recipientAccountId =
  123456789012`` matches the string ``"123456789012"``); with a JSON number it compares numbers.
* Booleans compare as the text ``true``/``false`` with ``=``/``!=``.
* Integer literals compare exactly with JSON integers, also above 2**53 (no float rounding).

No ``eval``: patterns compile to plain closures. Errors carry the 0-based position.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

Record = dict[str, Any]
Predicate = Callable[[Record], bool]

_MISSING = object()
_NUMBER_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_BARE_SAFE_RE = re.compile(r"^[A-Za-z0-9_.*+\-]+$")   # unquoted values AWS's examples use
MAX_PATTERN_CHARS = 1024   # PutMetricFilter filterPattern length limit
_IDENT_RE = re.compile(r"[A-Za-z0-9_\-@]+")
_BARE_STOP = set(" \t\r\n(){}")
_BARE_END = set(" \t\r\n(){}=!<>")
_BARE_FAST_RE = re.compile(r"[^ \t\r\n(){}=!<>&|\\]*")
_KEYWORDS = frozenset(("EXISTS", "NOT", "IS", "NULL", "TRUE", "FALSE"))


def _string_only(literal: str) -> bool:
    """True when ``= literal`` can only be satisfied by a JSON string equal to it: no wildcard,
    not number-like (a number node compares as text/number, quoted or not) and not true/false."""
    return "*" not in literal and literal not in ("true", "false") \
        and not _NUMBER_RE.match(literal)


class PatternError(ValueError):
    """A filter pattern that does not parse. ``position`` is a 0-based offset into the text."""

    def __init__(self, message: str, position: int, pattern: str = "") -> None:
        self.reason = message
        self.position = position
        self.pattern = pattern
        super().__init__(f"{message} at position {position}")

    def pointer(self) -> str:
        """The pattern with a caret under the error position (for CLI and load errors)."""
        return f"{self.pattern}\n{' ' * self.position}^"


# ----------------------------------------------------------------------------------- tokens

class _Tok(NamedTuple):   # a NamedTuple, not a dataclass: cheaper to define at cold start
    kind: str  # LBRACE RBRACE LPAREN RPAREN AND OR OP SELECTOR STRING BARE KEYWORD END
    text: str
    pos: int
    path: tuple = ()
    esc: frozenset = frozenset()
    """Offsets (into ``text``) of ``*`` characters written escaped (``\\*``): literal, not wildcards."""


class Finding(NamedTuple):
    """One lint finding: ``code`` is stable (TW1xx: processor-only extension, TW2xx: limit)."""

    code: str
    message: str
    position: int


def _tokenize(src: str, notes: list[Finding] | None = None) -> list[_Tok]:
    """Split ``src`` into tokens; uses of processor-only extensions are appended to ``notes``."""
    toks: list[_Tok] = []
    note = notes.append if notes is not None else (lambda f: None)
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if c in " \t\r\n":
            i += 1
        elif c in "{}()":
            toks.append(_Tok({"{": "LBRACE", "}": "RBRACE", "(": "LPAREN", ")": "RPAREN"}[c], c, i))
            i += 1
        elif src.startswith("&&", i):
            toks.append(_Tok("AND", "&&", i))
            i += 2
        elif src.startswith("||", i):
            toks.append(_Tok("OR", "||", i))
            i += 2
        elif c in "=!<>":
            two = src[i : i + 2]
            if two in ("!=", "<=", ">="):
                toks.append(_Tok("OP", two, i))
                i += 2
            elif c == "!":
                raise PatternError("'!' must be followed by '='", i, src)
            else:
                toks.append(_Tok("OP", c, i))
                i += 1
        elif c == "$":
            start = i
            path, i = _scan_selector(src, i)
            if "@" in src[start:i]:
                note(Finding("TW102", "'@' in a property name is a processor-only extension; "
                             "metric filters may reject it", start))
            toks.append(_Tok("SELECTOR", src[start:i], start, path))
        elif c == '"':
            start = i
            i += 1
            j = src.find('"', i)
            if j >= 0 and src.find("\\", i, j) < 0:   # the common case: no escapes
                toks.append(_Tok("STRING", src[i:j], start))
                i = j + 1
                continue
            buf = []
            esc = set()
            while True:
                if i >= n:
                    raise PatternError("unterminated quoted string", start, src)
                ch = src[i]
                if ch == "\\" and i + 1 < n:
                    if src[i + 1] == "*":
                        esc.add(len(buf))
                        note(Finding("TW103", "'\\*' (a literal '*') is a processor-only "
                                     "extension; AWS documents no escape for '*'", i))
                    buf.append(src[i + 1])
                    i += 2
                    continue
                if ch == '"':
                    i += 1
                    break
                buf.append(ch)
                i += 1
            toks.append(_Tok("STRING", "".join(buf), start, esc=frozenset(esc)))
        else:
            start = i
            end = _BARE_FAST_RE.match(src, i).end()
            if end > i and (end == n or src[end] in _BARE_END or src.startswith("&&", end)
                            or src.startswith("||", end)):   # the common case: no escapes
                word = src[i:end]
                i = end
                toks.append(_Tok("KEYWORD" if word in _KEYWORDS else "BARE", word, start))
                continue
            buf = []
            esc = set()
            while i < n and src[i] not in _BARE_STOP and not src.startswith("&&", i) \
                    and not src.startswith("||", i) and src[i] not in "=!<>":
                if src[i] == "\\" and i + 1 < n and src[i + 1] == "*":
                    esc.add(len(buf))
                    note(Finding("TW103", "'\\*' (a literal '*') is a processor-only "
                                 "extension; AWS documents no escape for '*'", i))
                    i += 1
                buf.append(src[i])
                i += 1
            word = "".join(buf)
            if word in ("EXISTS", "NOT", "IS", "NULL", "TRUE", "FALSE"):
                toks.append(_Tok("KEYWORD", word, start))
            else:
                toks.append(_Tok("BARE", word, start, esc=frozenset(esc)))
    toks.append(_Tok("END", "", n))
    return toks


def _scan_selector(src: str, i: int) -> tuple[tuple, int]:
    start = i
    i += 1  # '$'
    path: list[Any] = []
    n = len(src)
    while i < n and src[i] in ".[":
        if src[i] == ".":
            m = _IDENT_RE.match(src, i + 1)
            if not m:
                raise PatternError("expected a property name after '.'", i + 1, src)
            path.append(m.group(0))
            i = m.end()
        else:
            j = src.find("]", i)
            inner = src[i + 1 : j] if j > 0 else ""
            if j < 0 or not inner.isdigit():
                raise PatternError("expected an array index like [0]", i, src)
            if not path:
                raise PatternError("an array index must follow a property", i, src)
            path.append(int(inner))
            i = j + 1
    if not path:
        raise PatternError("a selector needs at least one property, e.g. $.eventName", start, src)
    return tuple(path), i


# ----------------------------------------------------------------------------------- nodes

def _resolver(path: tuple) -> Callable[[Record], Any]:
    """Return a fast function that walks ``path`` into a record, or yields _MISSING."""
    if len(path) == 1 and isinstance(path[0], str):
        k0 = path[0]
        return lambda r: r.get(k0, _MISSING)
    if len(path) == 2 and isinstance(path[0], str) and isinstance(path[1], str):
        k0, k1 = path

        def get2(r: Record) -> Any:
            v = r.get(k0, _MISSING)
            if type(v) is dict:
                return v.get(k1, _MISSING)
            return _MISSING

        return get2

    def getn(r: Record) -> Any:
        v: Any = r
        for step in path:
            if type(step) is int:
                if type(v) is list and -1 < step < len(v):
                    v = v[step]
                else:
                    return _MISSING
            elif type(v) is dict:
                v = v.get(step, _MISSING)
                if v is _MISSING:
                    return v
            else:
                return _MISSING
        return v

    return getn


def _text_matcher(literal: str, quoted: bool, esc: frozenset = frozenset()) -> Callable[[str], bool]:
    """``*`` first and/or last is a wildcard (a lone ``*`` matches anything) unless escaped."""
    if literal == "*" and 0 not in esc:
        return lambda s: True
    lead = literal.startswith("*") and 0 not in esc
    trail = literal.endswith("*") and len(literal) > 1 and (len(literal) - 1) not in esc
    core = literal[1 if lead else 0 : len(literal) - (1 if trail else 0)]
    if lead and trail:
        return lambda s: core in s
    if lead:
        return lambda s: s.endswith(core)
    if trail:
        return lambda s: s.startswith(core)
    return lambda s: s == literal


def _value_text(v: Any) -> str | None:
    """Text of a JSON value node for string comparison, or None when it is not a value node."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return repr(v) if t is float else str(v)
    return None


def _number(literal: str, quoted: bool) -> int | float | None:
    """The literal as a number (an exact int when it is an integer), or None."""
    if quoted or not _NUMBER_RE.match(literal):
        return None
    return int(literal) if _INT_RE.match(literal) else float(literal)


_CMP = {"<": lambda a, b: a < b, ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def _compile_condition(path: tuple, op: str, literal: str | None, quoted: bool,
                       src: str, pos: int, esc: frozenset = frozenset()) -> Predicate:
    get = _resolver(path)
    if op == "EXISTS":
        return lambda r: get(r) is not _MISSING
    if op == "NOT EXISTS":
        return lambda r: get(r) is _MISSING
    if op == "IS NULL":
        return lambda r: get(r) is None
    if op == "IS TRUE":
        return lambda r: get(r) is True
    if op == "IS FALSE":
        return lambda r: get(r) is False

    assert literal is not None
    # Python compares int with int and int with float exactly: no rounding above 2**53.
    numeric = _number(literal, quoted)

    if op in ("<", ">", "<=", ">="):
        if numeric is None:
            raise PatternError(f"operator {op} needs a number, got {literal!r}", pos, src)
        x = numeric
        cmp = _CMP[op]

        def num_cmp(r: Record) -> bool:
            v = get(r)
            t = type(v)
            return (t is int or t is float) and cmp(v, x)

        return num_cmp

    text_match = _text_matcher(literal, quoted, esc)

    if op == "=" and _string_only(literal):
        # The hot case (every CIS term): only a JSON string can equal a plain string literal.
        if len(path) == 1 and isinstance(path[0], str):
            k0 = path[0]
            return lambda r: r.get(k0) == literal
        if len(path) == 2 and all(isinstance(k, str) for k in path):
            k0, k1 = path

            def eq2(r: Record) -> bool:
                v = r.get(k0)
                return type(v) is dict and v.get(k1) == literal

            return eq2

    def equals_value(v: Any) -> bool | None:
        t = type(v)
        if t is str:
            return text_match(v)
        if numeric is not None and (t is int or t is float):
            return v == numeric
        s = _value_text(v)
        if s is None:
            return None  # not a value node: neither = nor != applies
        return text_match(s)

    if op == "=":
        if numeric is None:
            def eq_text(r: Record) -> bool:
                v = get(r)
                if type(v) is str:
                    return text_match(v)
                if v is _MISSING or v is None:
                    return False
                return equals_value(v) is True
            return eq_text
        return lambda r: equals_value(get(r)) is True
    if op == "!=":
        return lambda r: equals_value(get(r)) is False
    raise PatternError(f"unknown operator {op!r}", pos, src)  # pragma: no cover - tokenizer guards


def _member_of(path: tuple, values: frozenset[str]) -> Predicate:
    """The string at ``path`` (one or two property names) is one of ``values``."""
    if len(path) == 1:
        (k0,) = path

        def member1(r: Record) -> bool:
            v = r.get(k0)
            return v.__class__ is str and v in values

        return member1
    k0, k1 = path

    def member2(r: Record) -> bool:
        v = r.get(k0)
        if v.__class__ is not dict:
            return False
        v = v.get(k1)
        return v.__class__ is str and v in values

    return member2


class _Node(NamedTuple):
    """A compiled (sub)pattern and what is known about every record it can match."""

    fn: Predicate
    required_key: str | None = None
    """When not None, only records with this top-level key can match."""
    guards: Mapping[tuple, frozenset[str]] = MappingProxyType({})
    """path -> the strings the value at path must be one of."""
    exact: tuple[tuple, frozenset[str]] | None = None
    """When not None, the node matches exactly when the string at path is one of the values."""


# ----------------------------------------------------------------------------------- parser

class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.notes: list[Finding] = []
        self.toks = _tokenize(src, self.notes)
        self.i = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self, kind: str, what: str) -> _Tok:
        t = self.toks[self.i]
        if t.kind != kind:
            found = "end of pattern" if t.kind == "END" else repr(t.text)
            raise PatternError(f"expected {what}, found {found}", t.pos, self.src)
        self.i += 1
        return t

    def parse(self) -> _Node:
        self.take("LBRACE", "'{' (only JSON filter patterns are supported)")
        node = self.expr()
        self.take("RBRACE", "'&&', '||' or '}'")
        self.take("END", "end of pattern after '}'")
        return node

    def expr(self) -> _Node:
        parts = [self.and_expr()]
        while self.peek().kind == "OR":
            self.i += 1
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        reqs = {p.required_key for p in parts}
        req = reqs.pop() if len(reqs) == 1 else None
        common = set.intersection(*(set(p.guards) for p in parts))
        guards = {path: frozenset().union(*(p.guards[path] for p in parts)) for path in common}
        if all(p.exact is not None for p in parts) and len({p.exact[0] for p in parts}) == 1:
            # ($.eventName = A) || ($.eventName = B) || ...: one set lookup instead of N tests.
            path = parts[0].exact[0]
            values = frozenset().union(*(p.exact[1] for p in parts))
            return _Node(_member_of(path, values), req, guards, (path, values))
        fns = tuple(p.fn for p in parts)
        if len(fns) == 2:
            a, b = fns
            return _Node(lambda r: a(r) or b(r), req, guards)

        def any_of(r: Record) -> bool:
            for f in fns:
                if f(r):
                    return True
            return False

        return _Node(any_of, req, guards)

    def and_expr(self) -> _Node:
        parts = [self.term()]
        while self.peek().kind == "AND":
            self.i += 1
            parts.append(self.term())
        if len(parts) == 1:
            return parts[0]
        fns = tuple(p.fn for p in parts)
        req = next((p.required_key for p in parts if p.required_key is not None), None)
        guards: dict[tuple, frozenset] = {}
        for p in parts:
            for path, values in p.guards.items():
                guards[path] = guards[path] & values if path in guards else values
        if len(fns) == 2:
            a, b = fns
            return _Node(lambda r: a(r) and b(r), req, guards)

        def all_of(r: Record) -> bool:
            for f in fns:
                if not f(r):
                    return False
            return True

        return _Node(all_of, req, guards)

    def term(self) -> _Node:
        t = self.peek()
        if t.kind == "LPAREN":
            self.i += 1
            node = self.expr()
            self.take("RPAREN", "')'")
            return node
        sel = self.take("SELECTOR", "a selector like $.eventName or '('")
        t = self.peek()
        if t.kind == "KEYWORD":
            self.i += 1
            if t.text == "EXISTS":
                op = "EXISTS"
                self.notes.append(Finding(
                    "TW101", "EXISTS is a processor-only extension (AWS documents NOT EXISTS); "
                    f'write {sel.text} = "*" for "has a value"', t.pos))
            elif t.text == "NOT":
                self.take_keyword("EXISTS")
                op = "NOT EXISTS"
            elif t.text == "IS":
                kw = self.take("KEYWORD", "NULL, TRUE or FALSE after IS")
                if kw.text not in ("NULL", "TRUE", "FALSE"):
                    raise PatternError("expected NULL, TRUE or FALSE after IS", kw.pos, self.src)
                op = f"IS {kw.text}"
            else:
                raise PatternError(f"unexpected keyword {t.text}", t.pos, self.src)
            req = sel.path[0] if op != "NOT EXISTS" and isinstance(sel.path[0], str) else None
            return _Node(_compile_condition(sel.path, op, None, False, self.src, t.pos), req)
        opt = self.take("OP", "an operator (=, !=, <, >, <=, >=), EXISTS, NOT EXISTS or IS")
        val = self.peek()
        if val.kind == "STRING":
            quoted = True
        elif val.kind in ("BARE", "KEYWORD"):
            quoted = False
        else:
            raise PatternError("expected a value", val.pos, self.src)
        self.i += 1
        if val.kind != "STRING" and val.text != "*":
            if not _BARE_SAFE_RE.match(val.text):
                self.notes.append(Finding(
                    "TW104", f"unquoted value {val.text!r} has characters metric filters may "
                    "reject; quote it", val.pos))
            elif _NUMBER_RE.match(val.text) and "e" in val.text.lower():
                self.notes.append(Finding(
                    "TW105", f"number {val.text!r} uses an exponent, which the documented grammar "
                    "does not; write it out", val.pos))
        fn = _compile_condition(sel.path, opt.text, val.text, quoted, self.src, val.pos, val.esc)
        if opt.text == "=" and _string_only(val.text) and len(sel.path) <= 2 \
                and all(isinstance(k, str) for k in sel.path):
            # Only a JSON string equal to the value matches: an exact guard for the index.
            values = frozenset([val.text])
            return _Node(fn, sel.path[0], {sel.path: values}, (sel.path, values))
        return _Node(fn, sel.path[0])

    def take_keyword(self, word: str) -> None:
        t = self.peek()
        if t.kind != "KEYWORD" or t.text != word:
            raise PatternError(f"expected {word}", t.pos, self.src)
        self.i += 1


@dataclass(frozen=True)
class CompiledPattern:
    text: str
    match: Predicate
    required_key: str | None = None
    """When not None, the pattern can only match records that have this top-level key."""
    guards: dict = field(default_factory=dict, compare=False, hash=False)
    """path -> values: the pattern can only match if the string at path is one of the values."""
    exact: tuple[tuple, frozenset[str]] | None = field(default=None, compare=False, hash=False)
    """(path, values) when the pattern matches exactly the records whose string at path is one of
    the values (``$.eventName = A || $.eventName = B``): the index then needs no predicate call."""

    @property
    def event_names(self) -> frozenset[str] | None:
        """When not None, the pattern can only match records whose eventName is in this set."""
        return self.guards.get(("eventName",))


def _parse(text: str) -> tuple[_Node, list[Finding]]:
    if not isinstance(text, str) or not text.strip():
        raise PatternError("empty filter pattern", 0, str(text))
    parser = _Parser(text)
    node = parser.parse()
    notes = list(parser.notes)
    if len(text) > MAX_PATTERN_CHARS:
        notes.append(Finding("TW201", f"pattern is {len(text)} characters; PutMetricFilter "
                             f"accepts at most {MAX_PATTERN_CHARS}", MAX_PATTERN_CHARS))
    return node, sorted(notes, key=lambda f: f.position)


def compile_pattern(text: str, *, strict: bool = False) -> CompiledPattern:
    """Compile a JSON filter pattern; raises :class:`PatternError` with the position.

    ``strict=True`` accepts only what a CloudWatch Logs metric filter accepts (the documented
    grammar): any processor-only extension is an error.
    """
    node, notes = _parse(text)
    if strict and notes:
        raise PatternError(notes[0].message, notes[0].position, text)
    return CompiledPattern(text=text, match=node.fn, required_key=node.required_key,
                           guards=dict(node.guards), exact=node.exact)


def lint_pattern(text: str) -> list[Finding]:
    """Everything in ``text`` a metric filter may reject or read differently (empty: lint-clean).

    A pattern that does not parse at all gives one ``TW001`` finding at the error position.
    """
    try:
        return _parse(text)[1]
    except PatternError as e:
        return [Finding("TW001", e.reason, e.position)]


class PatternIndex:
    """Evaluates many patterns per record, visiting only those that can match it.

    Each pattern is filed under its most selective guard: an exact value it requires at some path
    (``$.eventName`` first, e.g. ``$.userIdentity.type = "Root"`` otherwise), else a top-level key it
    requires (``$.errorCode``), else it is evaluated for every record. Guards only skip patterns
    that cannot match; the verdict always comes from the pattern itself.
    """

    def __init__(self, items: Iterable[tuple[Any, CompiledPattern]]) -> None:
        dispatch: dict[tuple, dict[str, list[tuple[Any, Predicate | None]]]] = {}
        keyed: dict[str, list[tuple[Any, Predicate]]] = {}
        always: list[tuple[Any, Predicate]] = []
        order: list[Any] = []
        same: dict[str, Predicate] = {}   # pattern text -> one predicate (evaluated once)
        for key, pat in items:
            order.append(key)
            guards = pat.guards
            match = same.setdefault(pat.text, pat.match)
            path = ("eventName",) if ("eventName",) in guards else next(iter(guards), None)
            if path is not None:
                table = dispatch.setdefault(path, {})
                # Found through its exact guard, the pattern has matched: no predicate to call.
                fn = None if pat.exact is not None and pat.exact[0] == path else match
                for value in guards[path]:
                    table.setdefault(value, []).append((key, fn))
            elif pat.required_key is not None:
                keyed.setdefault(pat.required_key, []).append((key, match))
            else:
                always.append((key, match))
        tables = {p: {v: _grouped(c) for v, c in t.items()} for p, t in dispatch.items()}
        self._rank = {k: i for i, k in enumerate(order)}
        self.matches = _compile_dispatch(tables, {k: _grouped(c) for k, c in keyed.items()},
                                         _grouped(always), self._rank)

    def matches(self, record: Record) -> list[Any] | tuple[()]:  # replaced per instance
        """Keys of the patterns that match ``record``, in the order they were given (an empty
        tuple, not a new list, when none can: the common case costs no allocation)."""
        raise NotImplementedError  # pragma: no cover - __init__ installs the compiled dispatcher


def _grouped(entries: list[tuple[Any, Predicate | None]]) -> tuple[tuple[tuple, Any], ...]:
    """(key, predicate) pairs -> ((keys...), predicate): keys sharing a predicate (patterns with
    the same text, e.g. a CIS control and a pack rule) get one evaluation per record."""
    by_fn: dict[int, tuple[Any, list[Any]]] = {}
    for key, fn in entries:
        by_fn.setdefault(id(fn), (fn, []))[1].append(key)
    return tuple((tuple(keys), fn) for fn, keys in by_fn.values())


def _compile_dispatch(tables: dict[tuple, dict[str, tuple]], keyed: dict[str, tuple],
                      always: tuple, rank: dict[Any, int]) -> Callable[[Record], Any]:
    """The index's ``matches`` as straight-line code: one block per guard path and required key,
    no loops over the guard tables (this runs for every record, and most records hit nothing).

    The generated source holds only local names (``_k3``, ``_t3``...); every key, table and
    candidate tuple is passed in as a value, so nothing from a rule file becomes source text.
    """
    ns: dict[str, Any] = {"_always": always, "_rank": rank.__getitem__, "_dict": dict,
                          "_str": str}
    lines = ["def matches(record):", "    c = _always"]
    for n, (key, items) in enumerate(keyed.items()):
        ns[f"_k{n}"], ns[f"_c{n}"] = key, items
        lines += [f"    if _k{n} in record:", f"        c += _c{n}"]
    for n, (path, table) in enumerate(tables.items()):
        ns[f"_p{n}"], ns[f"_t{n}"] = path[0], table
        if len(path) == 1:
            # The table's keys are strings: a value of any other type finds nothing (no
            # int, float, bool or None equals a str), and an unhashable one (a JSON object or
            # array) raises TypeError, which means the same. No type test on the hot path.
            lines += ["    try:",
                      f"        h = _t{n}.get(record.get(_p{n}))",
                      "    except TypeError:",
                      "        h = None",
                      "    if h:",
                      "        c += h"]
        else:
            ns[f"_q{n}"] = path[1]
            lines += [f"    v = record.get(_p{n})",
                      "    if v.__class__ is _dict:",
                      f"        v = v.get(_q{n})",
                      "        if v.__class__ is _str:",
                      f"            h = _t{n}.get(v)",
                      "            if h:",
                      "                c += h"]
    lines += ["    if not c:",
              "        return ()",
              "    out = [k for ks, f in c if f is None or f(record) for k in ks]",
              "    if len(out) > 1:",
              "        out.sort(key=_rank)",
              "    return out"]
    exec("\n".join(lines), ns)  # noqa: S102 - names only; see the docstring
    fn = ns["matches"]
    fn.__doc__ = PatternIndex.matches.__doc__
    return fn
