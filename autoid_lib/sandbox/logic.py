"""A small subset of REDCap's ``filterLogic``: comparisons joined by ``and``/``or``.

Supported: ``[field] = 'value'`` (also ``"value"`` or a number), the operators ``=``, ``<>``,
``!=``, ``<``, ``<=``, ``>``, ``>=``, ``and``/``or`` (any case) and parentheses. Both sides
compare as numbers when both are numbers, else as text, as REDCap does. A field of a
repeating instrument matches when any of the record's instances matches. Anything else
(functions, checkbox codes ``[f(1)]``, events, smart variables) is refused with an error
rather than silently misread.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .protocol import ApiError
from .schema import Schema
from .store import RecordData

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<field>\[[A-Za-z0-9_]+\])
      | (?P<string>'[^']*'|"[^"]*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><>|!=|<=|>=|=|<|>)
      | (?P<word>and|or)\b
      | (?P<paren>[()])
    )""",
    re.VERBOSE | re.IGNORECASE,
)

Predicate = Callable[[str, RecordData], bool]


class Filter:
    """A compiled ``filterLogic``: call it with (record name, stored data)."""

    def __init__(self, predicate: Predicate, fields: set[str]):
        self._predicate = predicate
        self.fields = fields  # the columns it reads, so the store can load just those

    def __call__(self, name: str, data: RecordData) -> bool:
        return self._predicate(name, data)


def compile_filter(schema: Schema, text: str) -> Filter:
    """Parse ``text``; raises ``ApiError`` for anything outside the supported subset."""
    tokens = _tokenize(text)
    parser = _Parser(schema, tokens, text)
    predicate = parser.parse_or()
    if parser.pos != len(tokens):
        raise parser.error()
    return Filter(predicate, parser.fields)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ApiError(f"The filterLogic parameter has invalid syntax near position {pos}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, schema: Schema, tokens: list[tuple[str, str]], text: str):
        self.schema = schema
        self.tokens = tokens
        self.text = text
        self.pos = 0
        self.fields: set[str] = set()

    def error(self) -> ApiError:
        return ApiError(
            "The filterLogic parameter has invalid syntax or uses a construct this sandbox "
            f"does not support: {self.text!r}"
        )

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("", "")

    def take(self) -> tuple[str, str]:
        token = self.peek()
        if not token[0]:
            raise self.error()
        self.pos += 1
        return token

    def parse_or(self) -> Predicate:
        parts = [self.parse_and()]
        while self.peek()[0] == "word" and self.peek()[1].lower() == "or":
            self.take()
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else (lambda name, rec: any(p(name, rec) for p in parts))

    def parse_and(self) -> Predicate:
        parts = [self.parse_atom()]
        while self.peek()[0] == "word" and self.peek()[1].lower() == "and":
            self.take()
            parts.append(self.parse_atom())
        return parts[0] if len(parts) == 1 else (lambda name, rec: all(p(name, rec) for p in parts))

    def parse_atom(self) -> Predicate:
        if self.peek() == ("paren", "("):
            self.take()
            inner = self.parse_or()
            if self.take() != ("paren", ")"):
                raise self.error()
            return inner
        left = self.operand()
        kind, op = self.take()
        if kind != "op":
            raise self.error()
        right = self.operand()
        return lambda name, rec: any(
            _compare(a, op, b) for a in left(name, rec) for b in right(name, rec)
        )

    def operand(self) -> Callable[[str, RecordData], list[str]]:
        kind, text = self.take()
        if kind in {"string", "number"}:
            value = text[1:-1] if kind == "string" else text
            return lambda name, rec: [value]
        if kind != "field":
            raise self.error()
        name = text[1:-1]
        self.fields.add(name)
        spec = self.schema.spec(name)
        if spec is None or spec.type == "checkbox":
            raise ApiError(
                f"The filterLogic parameter refers to an unknown or unsupported field [{name}]"
            )
        if name == self.schema.record_id:
            return lambda record, rec: [record]
        if self.schema.is_repeating(spec.form):
            form = spec.form

            def values(record: str, rec: RecordData) -> list[str]:
                found = [v.get(name, "") for s, v in rec.items() if s[0] == form]
                return found or [""]

            return values
        return lambda record, rec: [rec.get(("", 0), {}).get(name, "")]


def _compare(left: str, op: str, right: str) -> bool:
    try:
        a: float | str = float(left)
        b: float | str = float(right)
    except ValueError:
        a, b = left, right
    if op == "=":
        return a == b
    if op in {"<>", "!="}:
        return a != b
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]  # type: ignore[operator]
