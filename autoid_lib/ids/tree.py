"""The syntax tree of an ID pattern: one node class per construct the pattern language allows.

Every node knows its number of derivations (``count``), its possible lengths and first/last
characters (used by ``patterns`` to prove unambiguity), and how to unrank, match (rank) and
expand itself. ``env`` carries the text of each closed capturing group, for back-references.
Nodes are built by ``pattern_syntax.parse`` and read by ``patterns``; they never raise
``PatternError`` themselves.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

#: DICOM PatientID is an LO value (at most 64 characters): a longer ID cannot be written.
MAX_ID_LENGTH = 64
#: Derivation counts stop here. There are fewer printable ASCII strings of at most
#: ``MAX_ID_LENGTH`` characters than this, so a node that reaches it is ambiguous, and no node
#: of an unambiguous pattern (whose counts are exact) comes near it. Without the cap, nested
#: repeats of a part that can be empty, e.g. ``((((|){0,64}){0,64}){0,64}){0,64}``, have
#: counts with millions of digits that take minutes to compute.
MAX_COUNT: int = 95 ** (MAX_ID_LENGTH + 1)  # declared: mypy types int ** int as Any

Env = tuple[str | None, ...]  # captured group texts, indexed by group number (0 unused)
EMPTY_ENV: Env = (None,) * 10
#: What ``match`` yields: where the match ends, its index (rank) within the node, the captures.
Matched = Iterator[tuple[int, int, Env]]
#: What ``expand`` yields: each derivation's text with the captures after it.
Expanded = Iterator[tuple[str, Env]]


def capped(n: int) -> int:
    """``n``, or ``MAX_COUNT`` when it is larger."""
    return min(n, MAX_COUNT)


def sumset(a: frozenset[int], b: frozenset[int]) -> frozenset[int]:
    """Lengths of a concatenation, clamped so that absurd patterns stay cheap to analyse."""
    return frozenset(min(x + y, MAX_ID_LENGTH + 1) for x in a for y in b)


@dataclass(frozen=True)
class Literal:
    text: str
    pos: int = field(default=0, compare=False)
    count = 1

    @functools.cached_property
    def lengths(self) -> frozenset[int]:
        return frozenset({len(self.text)})

    @functools.cached_property
    def first(self) -> frozenset[str]:
        return frozenset(self.text[:1])

    @functools.cached_property
    def last(self) -> frozenset[str]:
        return frozenset(self.text[-1:])

    def unrank(self, index: int, env: Env) -> tuple[str, Env]:
        return self.text, env

    def match(self, s: str, pos: int, env: Env) -> Matched:
        if s.startswith(self.text, pos):
            yield pos + len(self.text), 0, env

    def expand(self, env: Env) -> Expanded:
        yield self.text, env

    def regex(self) -> str:
        return re.escape(self.text)


@dataclass(frozen=True)
class CharClass:
    chars: str  # sorted, distinct
    pos: int = field(default=0, compare=False)
    lengths = frozenset({1})

    @functools.cached_property
    def count(self) -> int:
        return len(self.chars)

    @functools.cached_property
    def first(self) -> frozenset[str]:
        return frozenset(self.chars)

    @property
    def last(self) -> frozenset[str]:
        return self.first

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.chars)}

    def unrank(self, index: int, env: Env) -> tuple[str, Env]:
        return self.chars[index], env

    def match(self, s: str, pos: int, env: Env) -> Matched:
        if pos < len(s) and (k := self._index.get(s[pos])) is not None:
            yield pos + 1, k, env

    def expand(self, env: Env) -> Expanded:
        for c in self.chars:
            yield c, env

    def regex(self) -> str:
        out: list[str] = []
        codes, i = [ord(c) for c in self.chars], 0
        while i < len(codes):
            j = i
            while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
                j += 1
            lo, hi = re.escape(chr(codes[i])), re.escape(chr(codes[j]))
            out.append(
                f"{lo}-{hi}" if j - i >= 2 else "".join(map(re.escape, self.chars[i : j + 1]))
            )
            i = j + 1
        return "[" + "".join(out) + "]"


@dataclass(frozen=True)
class Sequence:
    items: tuple[Node, ...]
    pos: int = field(default=0, compare=False)

    @functools.cached_property
    def count(self) -> int:
        return functools.reduce(lambda a, n: capped(a * n.count), self.items, 1)

    @functools.cached_property
    def _blocks(self) -> tuple[int, ...]:
        # mixed-radix weights: the first item is the most significant digit
        blocks: list[int] = []
        acc = 1
        for item in reversed(self.items):
            blocks.append(acc)
            acc *= item.count
        return tuple(reversed(blocks))

    @functools.cached_property
    def lengths(self) -> frozenset[int]:
        return functools.reduce(lambda a, n: sumset(a, n.lengths), self.items, frozenset({0}))

    @functools.cached_property
    def first(self) -> frozenset[str]:
        return _edge(self.items, "first")

    @functools.cached_property
    def last(self) -> frozenset[str]:
        return _edge(tuple(reversed(self.items)), "last")

    def unrank(self, index: int, env: Env) -> tuple[str, Env]:
        parts = []
        for item, block in zip(self.items, self._blocks, strict=True):
            digit, index = divmod(index, block)
            text, env = item.unrank(digit, env)
            parts.append(text)
        return "".join(parts), env

    def match(self, s: str, pos: int, env: Env, k: int = 0) -> Matched:
        if k == len(self.items):
            yield pos, 0, env
            return
        for mid, digit, env1 in self.items[k].match(s, pos, env):
            for end, rest, env2 in self.match(s, mid, env1, k + 1):
                yield end, digit * self._blocks[k] + rest, env2

    def expand(self, env: Env, k: int = 0) -> Expanded:
        if k == len(self.items):
            yield "", env
            return
        for head, env1 in self.items[k].expand(env):
            for tail, env2 in self.expand(env1, k + 1):
                yield head + tail, env2

    def regex(self) -> str:
        return "".join(item.regex() for item in self.items)


def _edge(items: tuple[Node, ...], side: str) -> frozenset[str]:
    """First (or last) characters of a concatenation: skip over parts that may be empty."""
    chars: frozenset[str] = frozenset()
    for item in items:
        chars |= getattr(item, side)
        if 0 not in item.lengths:
            break
    return chars


@dataclass(frozen=True)
class Alternation:
    options: tuple[Node, ...]
    pos: int = field(default=0, compare=False)

    @functools.cached_property
    def count(self) -> int:
        return capped(sum(o.count for o in self.options))

    @functools.cached_property
    def lengths(self) -> frozenset[int]:
        return frozenset().union(*(o.lengths for o in self.options))

    @functools.cached_property
    def first(self) -> frozenset[str]:
        return frozenset().union(*(o.first for o in self.options))

    @functools.cached_property
    def last(self) -> frozenset[str]:
        return frozenset().union(*(o.last for o in self.options))

    def unrank(self, index: int, env: Env) -> tuple[str, Env]:
        for option in self.options:
            if index < option.count:
                return option.unrank(index, env)
            index -= option.count
        raise IndexError(index)

    def match(self, s: str, pos: int, env: Env) -> Matched:
        offset = 0
        for option in self.options:
            for end, index, env1 in option.match(s, pos, env):
                yield end, offset + index, env1
            offset += option.count

    def expand(self, env: Env) -> Expanded:
        for option in self.options:
            yield from option.expand(env)

    def regex(self) -> str:
        return "(?:" + "|".join(o.regex() for o in self.options) + ")"


@dataclass(frozen=True)
class Repeat:
    item: Node
    min: int
    max: int
    pos: int = field(default=0, compare=False)

    @functools.cached_property
    def _offsets(self) -> list[int]:  # index where the block of k copies starts, k = min..max+1
        offsets: list[int] = []
        acc = 0
        for k in range(self.min, self.max + 2):
            offsets.append(acc)
            acc = capped(acc + self.item.count**k)
        return offsets

    @functools.cached_property
    def count(self) -> int:
        return self._offsets[-1]

    @functools.cached_property
    def lengths(self) -> frozenset[int]:
        out: set[int] = set()
        cur = frozenset({0})
        for k in range(self.max + 1):
            if k >= self.min:
                out |= cur
            cur = sumset(cur, self.item.lengths)
        return frozenset(out)

    @functools.cached_property
    def first(self) -> frozenset[str]:
        return self.item.first if self.max else frozenset()

    @functools.cached_property
    def last(self) -> frozenset[str]:
        return self.item.last if self.max else frozenset()

    def unrank(self, index: int, env: Env) -> tuple[str, Env]:
        base = self.item.count
        for k in range(self.min, self.max + 1):
            block = base**k
            if index < block:
                parts = []
                for j in range(k - 1, -1, -1):
                    digit, index = divmod(index, base**j)
                    text, env = self.item.unrank(digit, env)
                    parts.append(text)
                return "".join(parts), env
            index -= block
        raise IndexError(index)

    def match(self, s: str, pos: int, env: Env, k: int = 0, acc: int = 0) -> Matched:
        if k >= self.min:
            yield pos, self._offsets[k - self.min] + acc, env
        if k < self.max:
            for mid, digit, env1 in self.item.match(s, pos, env):
                yield from self.match(s, mid, env1, k + 1, acc * self.item.count + digit)

    def expand(self, env: Env) -> Expanded:
        for k in range(self.min, self.max + 1):
            yield from Sequence((self.item,) * k).expand(env)

    def regex(self) -> str:
        inner = self.item.regex()
        if not isinstance(self.item, CharClass | Group) and len(inner) != 1:
            inner = f"(?:{inner})"
        return f"{inner}{{{self.min},{self.max}}}"


@dataclass(frozen=True)
class Group:
    index: int
    body: Node
    pos: int = field(default=0, compare=False)

    # count, lengths, first, last are the body's
    @property
    def count(self) -> int:
        return self.body.count

    @property
    def lengths(self) -> frozenset[int]:
        return self.body.lengths

    @property
    def first(self) -> frozenset[str]:
        return self.body.first

    @property
    def last(self) -> frozenset[str]:
        return self.body.last

    def _capture(self, text: str, env: Env) -> Env:
        return (*env[: self.index], text, *env[self.index + 1 :]) if self.index < 10 else env

    def unrank(self, index: int, env: Env) -> tuple[str, Env]:
        text, env = self.body.unrank(index, env)
        return text, self._capture(text, env)

    def match(self, s: str, pos: int, env: Env) -> Matched:
        for end, index, env1 in self.body.match(s, pos, env):
            yield end, index, self._capture(s[pos:end], env1)

    def expand(self, env: Env) -> Expanded:
        for text, env1 in self.body.expand(env):
            yield text, self._capture(text, env1)

    def regex(self) -> str:
        return f"({self.body.regex()})"


@dataclass(frozen=True)
class BackRef:
    index: int
    group: Group = field(compare=False, repr=False)
    pos: int = field(default=0, compare=False)
    count = 1

    # a copy has the lengths and edges the group can have
    @property
    def lengths(self) -> frozenset[int]:
        return self.group.lengths

    @property
    def first(self) -> frozenset[str]:
        return self.group.first

    @property
    def last(self) -> frozenset[str]:
        return self.group.last

    def _text(self, env: Env) -> str:
        """The group's captured text (``parse`` rejects a reference that can precede it)."""
        text = env[self.index]
        if text is None:
            raise LookupError(f"back-reference \\{self.index} before its group")
        return text

    def unrank(self, index: int, env: Env) -> tuple[str, Env]:
        return self._text(env), env

    def match(self, s: str, pos: int, env: Env) -> Matched:
        text = self._text(env)
        if s.startswith(text, pos):
            yield pos + len(text), 0, env

    def expand(self, env: Env) -> Expanded:
        yield self._text(env), env

    def regex(self) -> str:
        return f"(?:\\{self.index})"


Node = Literal | CharClass | Sequence | Alternation | Repeat | Group | BackRef


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-nodes of ``node`` (none for a leaf)."""
    if isinstance(node, Sequence):
        return node.items
    if isinstance(node, Alternation):
        return node.options
    if isinstance(node, Repeat):
        return (node.item,)
    if isinstance(node, Group):
        return (node.body,)
    return ()
