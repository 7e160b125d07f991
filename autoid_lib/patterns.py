"""gen-id's pattern language read as a finite, countable space of IDs.

A project's naming pattern (``project_patient_naming``) is a regular expression, but the kit
uses it the other way round: as a *generator*. This module parses the pattern with its own
parser (``re._parser`` is private and changes between Python versions), refuses what cannot
generate a finite set of IDs, and turns the rest into a ``PatternSpace``: the exact number of
distinct IDs and a bijection ``unrank``/``rank`` between ``range(size)`` and those IDs, so that
``idgen`` can walk the space instead of guessing.

Ambiguity (``(a|a)``, ``a?a?``, ``(ab|a)b?``): the space is the set of *distinct* strings.
Each node first tries to prove that every string it produces has one derivation (lengths that
fix the split points; alternatives with disjoint lengths, first or last characters); a small
self-contained part that cannot be proven that way is enumerated and its distinct strings
counted. A pattern still not proven unambiguous is enumerated whole and deduplicated when it
has at most ``ENUMERATION_LIMIT`` derivations, and rejected with a ``PatternError`` otherwise.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

from autoid_lib.errors import PatternError

__all__ = ["ENUMERATION_LIMIT", "MAX_ID_LENGTH", "PatternSpace", "compile_pattern", "parse"]

#: DICOM PatientID is an LO value (at most 64 characters): a longer ID cannot be written.
MAX_ID_LENGTH = 64
#: Largest number of derivations of an ambiguous pattern that is enumerated and deduplicated.
ENUMERATION_LIMIT = 200_000
#: Largest self-contained part that is enumerated to prove it unambiguous.
LOCAL_CHECK_LIMIT = 20_000
DIGITS = string.digits
ALNUM = string.digits + string.ascii_uppercase + string.ascii_lowercase  # what "." means

Env = tuple  # captured group texts, indexed by group number (0 unused)
EMPTY_ENV: Env = (None,) * 10


def _sumset(a: frozenset[int], b: frozenset[int]) -> frozenset[int]:
    """Lengths of a concatenation, clamped so that absurd patterns stay cheap to analyse."""
    return frozenset(min(x + y, MAX_ID_LENGTH + 1) for x in a for y in b)


# --- the syntax tree -------------------------------------------------------------------------
# Every node knows its number of derivations (``count``), its possible lengths and first/last
# characters (used to prove unambiguity), and how to unrank, match (rank) and expand itself.
# ``env`` carries the text of each closed capturing group, for back-references.


@dataclass(frozen=True)
class Literal:
    text: str
    pos: int = field(default=0, compare=False)
    count = 1

    @functools.cached_property
    def lengths(self):
        return frozenset({len(self.text)})

    @functools.cached_property
    def first(self):
        return frozenset(self.text[:1])

    @functools.cached_property
    def last(self):
        return frozenset(self.text[-1:])

    def unrank(self, index, env):
        return self.text, env

    def match(self, s, pos, env):
        if s.startswith(self.text, pos):
            yield pos + len(self.text), 0, env

    def expand(self, env):
        yield self.text, env

    def regex(self):
        return re.escape(self.text)


@dataclass(frozen=True)
class CharClass:
    chars: str  # sorted, distinct
    pos: int = field(default=0, compare=False)
    lengths = frozenset({1})

    @functools.cached_property
    def count(self):
        return len(self.chars)

    @functools.cached_property
    def first(self):
        return frozenset(self.chars)

    @property
    def last(self):
        return self.first

    @functools.cached_property
    def _index(self):
        return {c: i for i, c in enumerate(self.chars)}

    def unrank(self, index, env):
        return self.chars[index], env

    def match(self, s, pos, env):
        if pos < len(s) and (k := self._index.get(s[pos])) is not None:
            yield pos + 1, k, env

    def expand(self, env):
        for c in self.chars:
            yield c, env

    def regex(self):
        out, codes, i = [], [ord(c) for c in self.chars], 0
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
    items: tuple
    pos: int = field(default=0, compare=False)

    @functools.cached_property
    def count(self):
        return functools.reduce(lambda a, n: a * n.count, self.items, 1)

    @functools.cached_property
    def _blocks(self):  # mixed-radix weights: the first item is the most significant digit
        blocks, acc = [], 1
        for item in reversed(self.items):
            blocks.append(acc)
            acc *= item.count
        return tuple(reversed(blocks))

    @functools.cached_property
    def lengths(self):
        return functools.reduce(lambda a, n: _sumset(a, n.lengths), self.items, frozenset({0}))

    @functools.cached_property
    def first(self):
        return _edge(self.items, "first")

    @functools.cached_property
    def last(self):
        return _edge(tuple(reversed(self.items)), "last")

    def unrank(self, index, env):
        parts = []
        for item, block in zip(self.items, self._blocks, strict=True):
            digit, index = divmod(index, block)
            text, env = item.unrank(digit, env)
            parts.append(text)
        return "".join(parts), env

    def match(self, s, pos, env, k=0):
        if k == len(self.items):
            yield pos, 0, env
            return
        for mid, digit, env1 in self.items[k].match(s, pos, env):
            for end, rest, env2 in self.match(s, mid, env1, k + 1):
                yield end, digit * self._blocks[k] + rest, env2

    def expand(self, env, k=0):
        if k == len(self.items):
            yield "", env
            return
        for head, env1 in self.items[k].expand(env):
            for tail, env2 in self.expand(env1, k + 1):
                yield head + tail, env2

    def regex(self):
        return "".join(item.regex() for item in self.items)


def _edge(items, side):
    """First (or last) characters of a concatenation: skip over parts that may be empty."""
    chars = frozenset()
    for item in items:
        chars |= getattr(item, side)
        if 0 not in item.lengths:
            break
    return chars


@dataclass(frozen=True)
class Alternation:
    options: tuple
    pos: int = field(default=0, compare=False)

    @functools.cached_property
    def count(self):
        return sum(o.count for o in self.options)

    @functools.cached_property
    def lengths(self):
        return frozenset().union(*(o.lengths for o in self.options))

    @functools.cached_property
    def first(self):
        return frozenset().union(*(o.first for o in self.options))

    @functools.cached_property
    def last(self):
        return frozenset().union(*(o.last for o in self.options))

    def unrank(self, index, env):
        for option in self.options:
            if index < option.count:
                return option.unrank(index, env)
            index -= option.count
        raise IndexError(index)

    def match(self, s, pos, env):
        offset = 0
        for option in self.options:
            for end, index, env1 in option.match(s, pos, env):
                yield end, offset + index, env1
            offset += option.count

    def expand(self, env):
        for option in self.options:
            yield from option.expand(env)

    def regex(self):
        return "(?:" + "|".join(o.regex() for o in self.options) + ")"


@dataclass(frozen=True)
class Repeat:
    item: object
    min: int
    max: int
    pos: int = field(default=0, compare=False)

    @functools.cached_property
    def _offsets(self):  # index where the block of k copies starts, for k = min..max+1
        offsets, acc = [], 0
        for k in range(self.min, self.max + 2):
            offsets.append(acc)
            acc += self.item.count**k
        return offsets

    @functools.cached_property
    def count(self):
        return self._offsets[-1]

    @functools.cached_property
    def lengths(self):
        out, cur = set(), frozenset({0})
        for k in range(self.max + 1):
            if k >= self.min:
                out |= cur
            cur = _sumset(cur, self.item.lengths)
        return frozenset(out)

    @functools.cached_property
    def first(self):
        return self.item.first if self.max else frozenset()

    @functools.cached_property
    def last(self):
        return self.item.last if self.max else frozenset()

    def unrank(self, index, env):
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

    def match(self, s, pos, env, k=0, acc=0):
        if k >= self.min:
            yield pos, self._offsets[k - self.min] + acc, env
        if k < self.max:
            for mid, digit, env1 in self.item.match(s, pos, env):
                yield from self.match(s, mid, env1, k + 1, acc * self.item.count + digit)

    def expand(self, env):
        for k in range(self.min, self.max + 1):
            yield from Sequence((self.item,) * k).expand(env)

    def regex(self):
        inner = self.item.regex()
        if not isinstance(self.item, CharClass | Group) and len(inner) != 1:
            inner = f"(?:{inner})"
        return f"{inner}{{{self.min},{self.max}}}"


@dataclass(frozen=True)
class Group:
    index: int
    body: object
    pos: int = field(default=0, compare=False)

    def __getattr__(self, name):  # count, lengths, first, last are the body's
        if name in ("count", "lengths", "first", "last"):
            return getattr(self.body, name)
        raise AttributeError(name)

    def _capture(self, text, env):
        return (*env[: self.index], text, *env[self.index + 1 :]) if self.index < 10 else env

    def unrank(self, index, env):
        text, env = self.body.unrank(index, env)
        return text, self._capture(text, env)

    def match(self, s, pos, env):
        for end, index, env1 in self.body.match(s, pos, env):
            yield end, index, self._capture(s[pos:end], env1)

    def expand(self, env):
        for text, env1 in self.body.expand(env):
            yield text, self._capture(text, env1)

    def regex(self):
        return f"({self.body.regex()})"


@dataclass(frozen=True)
class BackRef:
    index: int
    group: Group = field(compare=False, repr=False)
    pos: int = field(default=0, compare=False)
    count = 1

    def __getattr__(self, name):  # a copy has the lengths and edges the group can have
        if name in ("lengths", "first", "last"):
            return getattr(self.group, name)
        raise AttributeError(name)

    def unrank(self, index, env):
        return env[self.index], env

    def match(self, s, pos, env):
        if s.startswith(env[self.index], pos):
            yield pos + len(env[self.index]), 0, env

    def expand(self, env):
        yield env[self.index], env

    def regex(self):
        return f"(?:\\{self.index})"


Node = Literal | CharClass | Sequence | Alternation | Repeat | Group | BackRef


def _children(node) -> tuple:
    if isinstance(node, Sequence):
        return node.items
    if isinstance(node, Alternation):
        return node.options
    if isinstance(node, Repeat):
        return (node.item,)
    if isinstance(node, Group):
        return (node.body,)
    return ()


# --- the parser ------------------------------------------------------------------------------

_REJECTED_ESCAPES = {
    "w": "\\w (word characters, which include every Unicode letter)",
    "W": "\\W (a negated set)",
    "s": "\\s (whitespace, which cannot appear in an ID)",
    "S": "\\S (a negated set)",
    "D": "\\D (a negated set)",
    "b": "the anchor \\b",
    "B": "the anchor \\B",
    "A": "the anchor \\A",
    "Z": "the anchor \\Z",
    "z": "the anchor \\z",
    "0": "the octal escape \\0",
}
_GROUP_PREFIXES = (
    ("?=", "lookahead (?=...)"),
    ("?!", "negative lookahead (?!...)"),
    ("?<=", "lookbehind (?<=...)"),
    ("?<!", "negative lookbehind (?<!...)"),
    ("?P<", "named group (?P<name>...) (use (...) and \\1)"),
    ("?P=", "named back-reference (?P=name) (use \\1)"),
    ("?#", "comment (?#...)"),
    ("?>", "atomic group (?>...)"),
    ("?(", "conditional group (?(...)...)"),
)


class _Parser:
    """Recursive descent over ``alternation := sequence ('|' sequence)*``."""

    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 1 if pattern.startswith("^") else 0
        self.end = len(pattern)
        if self.end > self.i and pattern.endswith("$"):
            backslashes = len(pattern[:-1]) - len(pattern[:-1].rstrip("\\"))
            if backslashes % 2 == 0:  # an unescaped trailing "$" is the end anchor
                self.end -= 1
        self.groups: dict[int, Group | None] = {}  # None while the group is open

    def fail(self, message: str, pos: int):
        raise PatternError(message, self.p, pos)

    def peek(self, text: str = "") -> bool:
        return self.i < self.end and (not text or self.p.startswith(text, self.i))

    def parse(self):
        if self.i >= self.end:
            self.fail("empty pattern", 0)
        node = self.alternation()
        if self.peek():  # only a ')' stops the top level early
            self.fail("unbalanced ')' with no group to close", self.i)
        return node

    def alternation(self):
        start, options = self.i, [self.sequence()]
        while self.peek("|"):
            self.i += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alternation(tuple(options), start)

    def sequence(self):
        start, items = self.i, []
        while self.peek() and self.p[self.i] not in "|)":
            items.append(self.quantified(self.atom()))
        return _make_sequence(items, start)

    def quantified(self, atom):
        start = self.i
        if not self.peek():
            return atom
        c = self.p[self.i]
        if c in "*+":
            what = "zero or more" if c == "*" else "one or more"
            self.fail(f"unbounded repeat {c!r} ({what}) cannot be generated; use {{m,n}}", start)
        if c == "?":
            self.i += 1
            low, high = 0, 1
        elif c == "{":
            m = re.compile(r"\{(\d*)(,?)(\d*)\}").match(self.p, self.i, self.end)
            if not m or not (m[1] or m[3]):
                self.fail(
                    "'{' must start a counted repeat {n} or {m,n} (write \\{ for a brace)", start
                )
            if m[2] and not m[3]:
                self.fail(f"unbounded repeat {m[0]!r} cannot be generated; give a maximum", start)
            low = int(m[1] or 0)
            high = int(m[3]) if m[2] else low
            if low > high:
                self.fail(f"repeat {m[0]!r} has its minimum above its maximum", start)
            if high > MAX_ID_LENGTH:
                self.fail(f"repeat {m[0]!r} exceeds the longest ID ({MAX_ID_LENGTH})", start)
            self.i = m.end()
        else:
            return atom
        if self.peek("?"):  # a lazy quantifier matches the same strings
            self.i += 1
        if self.peek() and self.p[self.i] in "*+?{":
            self.fail(f"multiple repeat {self.p[self.i]!r}", self.i)
        return Repeat(atom, low, high, atom.pos)

    def atom(self):
        p, start = self.p, self.i
        c = p[start]
        if c == "(":
            return self.group()
        if c == "[":
            return self.char_class()
        self.i += 1
        if c == ".":
            return CharClass(ALNUM, start)
        if c == "\\":
            return self.escape(start)
        if c in "*+?{":
            self.fail(f"repeat {c!r} has nothing to repeat", start)
        if c in "^$":
            where = "start" if c == "^" else "end"
            self.fail(f"anchor {c!r} is only allowed at the {where} of the pattern", start)
        return Literal(self.char(c, start), start)

    def char(self, c: str, pos: int) -> str:
        if not c.isprintable() or c.isspace():
            self.fail(f"character {c!r} cannot appear in an ID (whitespace or control)", pos)
        return c

    def escape(self, start):
        if not self.peek():
            self.fail("pattern ends with a lone backslash", start)
        c = self.p[self.i]
        self.i += 1
        if c == "d":
            return CharClass(DIGITS, start)
        if c in "123456789":
            if self.peek() and self.p[self.i].isdigit():
                self.fail("back-references go from \\1 to \\9", start)
            index = int(c)
            if index not in self.groups:
                self.fail(f"back-reference \\{index} to a group that does not exist yet", start)
            if self.groups[index] is None:
                self.fail(f"back-reference \\{index} inside the group it refers to", start)
            return BackRef(index, self.groups[index], start)
        if c in _REJECTED_ESCAPES:
            self.fail(f"{_REJECTED_ESCAPES[c]} is not allowed in an ID pattern", start)
        if c.isalnum() or not c.isascii():
            self.fail(f"unknown or unsupported escape \\{c}", start)
        return Literal(self.char(c, start), start)

    def group(self):
        start = self.i
        self.i += 1
        index = None
        if self.peek("?:"):
            self.i += 2
        elif self.peek("?"):
            for prefix, what in _GROUP_PREFIXES:
                if self.peek(prefix):
                    self.fail(f"{what} is not allowed in an ID pattern", start)
            self.fail("inline flags (?...) are not allowed in an ID pattern", start)
        else:
            index = len(self.groups) + 1
            self.groups[index] = None
        body = self.alternation()
        if not self.peek(")"):
            self.fail("missing ')' for the group opened", start)
        self.i += 1
        if index is None:
            return body
        self.groups[index] = Group(index, body, start)
        return self.groups[index]

    def char_class(self):
        start = self.i
        self.i += 1
        if self.peek("^"):
            self.fail("negated class [^...] is not allowed: its complement is not finite", start)
        chars: set[str] = set()
        first = True
        while True:
            if not self.peek():
                self.fail("missing ']' for the character class opened", start)
            if self.peek("]") and not first:
                self.i += 1
                break
            first = False
            item_pos = self.i
            low = self.class_item()
            if self.peek("-") and self.i + 1 < self.end and self.p[self.i + 1] != "]":
                self.i += 1
                high = self.class_item()
                if len(low) != 1 or len(high) != 1 or low > high:
                    self.fail(f"bad range {self.p[item_pos : self.i]!r}", item_pos)
                low = "".join(chr(k) for k in range(ord(low), ord(high) + 1))
            chars.update(self.char(c, item_pos) for c in low)
        return CharClass("".join(sorted(chars)), start)

    def class_item(self) -> str:
        pos, c = self.i, self.p[self.i]
        self.i += 1
        if c != "\\":
            return c
        if not self.peek():
            self.fail("pattern ends with a lone backslash", pos)
        c = self.p[self.i]
        self.i += 1
        if c == "d":
            return DIGITS
        if c in _REJECTED_ESCAPES or c.isalnum() or not c.isascii():
            self.fail(f"escape \\{c} is not allowed in a character class", pos)
        return c


def _make_sequence(items: list, pos: int):
    """Flatten nested sequences and merge neighbouring literals (fewer nodes, faster unrank)."""
    flat: list = []
    for item in items:
        for part in item.items if isinstance(item, Sequence) else (item,):
            if isinstance(part, Literal) and flat and isinstance(flat[-1], Literal):
                flat[-1] = Literal(flat[-1].text + part.text, flat[-1].pos)
            else:
                flat.append(part)
    if len(flat) == 1:
        return flat[0]
    return Sequence(tuple(flat), pos) if flat else Literal("", pos)


def _check_references(node, pattern: str, path: tuple = (), seen: dict | None = None) -> None:
    """A back-reference needs its group in every ID that reaches it (as ``re`` requires).

    ``path`` lists the alternative branches and repeats around a node; the group's path must
    be a prefix of the reference's path.
    """
    seen = {} if seen is None else seen
    if isinstance(node, Group):
        seen[node.index] = path
    if isinstance(node, BackRef) and seen[node.index] != path[: len(seen[node.index])]:
        raise PatternError(
            f"back-reference \\{node.index} refers to a group inside an alternative, optional "
            "part or repeat that the reference is not in",
            pattern,
            node.pos,
        )
    for k, child in enumerate(_children(node)):
        step = path
        if isinstance(node, Alternation):
            step = (*path, (id(node), k))
        elif isinstance(node, Repeat) and (node.min, node.max) != (1, 1):
            step = (*path, (id(node),))
        _check_references(child, pattern, step, seen)


def parse(pattern: str):
    """Parse ``pattern`` into a syntax tree, or raise ``PatternError`` naming the construct."""
    tree = _Parser(pattern).parse()
    _check_references(tree, pattern)
    return tree


# --- ambiguity -------------------------------------------------------------------------------

PROVEN, AMBIGUOUS, UNKNOWN = "proven", "ambiguous", "unknown"


def _refs(node) -> tuple[set[int], set[int]]:
    """(groups defined, groups referenced) inside ``node``."""
    defined, used = set(), set()
    if isinstance(node, Group):
        defined.add(node.index)
    if isinstance(node, BackRef):
        used.add(node.index)
    for child in _children(node):
        d, u = _refs(child)
        defined |= d
        used |= u
    return defined, used


def _disjoint(a, b) -> bool:
    if not a.lengths & b.lengths:
        return True
    both_empty = 0 in a.lengths and 0 in b.lengths
    return not both_empty and (not a.first & b.first or not a.last & b.last)


def _splits_uniquely(node) -> bool:
    """True when, given unambiguous children, every string of ``node`` has one derivation."""
    if isinstance(node, Sequence):
        prefix = frozenset({0})
        for item in node.items:
            sums = _sumset(prefix, item.lengths)
            if len(sums) != len(prefix) * len(item.lengths):
                return False
            prefix = sums
        return True
    if isinstance(node, Alternation):
        opts = node.options
        return all(_disjoint(a, b) for i, a in enumerate(opts) for b in opts[i + 1 :])
    if isinstance(node, Repeat):
        lengths, lo, hi = node.item.lengths, node.min, node.max
        fixed = len(lengths) == 1
        return (
            (lo == hi and (hi <= 1 or fixed))
            or (fixed and 0 not in lengths)
            or (lo == 0 and hi == 1 and 0 not in lengths)
        )
    return True


def _ambiguity(node) -> tuple[str, object]:
    """Verdict on ``node`` (PROVEN, AMBIGUOUS or UNKNOWN) and the node to blame."""
    verdicts = [_ambiguity(child) for child in _children(node)]
    for verdict in verdicts:
        if verdict[0] == AMBIGUOUS:
            return verdict
    if all(v == PROVEN for v, _ in verdicts) and _splits_uniquely(node):
        return PROVEN, None
    defined, used = _refs(node)
    if used <= defined and node.count <= LOCAL_CHECK_LIMIT:
        distinct = len({text for text, _ in node.expand(EMPTY_ENV)})
        return (PROVEN, None) if distinct == node.count else (AMBIGUOUS, node)
    blame = next((who for v, who in verdicts if v != PROVEN), node)
    return UNKNOWN, blame


# --- the space -------------------------------------------------------------------------------


def _product_slots(node) -> tuple | None:
    """``node`` as a sequence of independent choices (strings or tuples), or None."""
    if isinstance(node, Literal):
        return ((node.text,),) if node.text else ()
    if isinstance(node, CharClass):
        return (node.chars,)
    if isinstance(node, Group):
        return _product_slots(node.body)
    if isinstance(node, Repeat) and node.min == node.max:
        inner = _product_slots(node.item)
        return None if inner is None else inner * node.min
    if isinstance(node, Sequence):
        slots = [_product_slots(item) for item in node.items]
        return None if None in slots else tuple(s for part in slots for s in part)
    return None


@dataclass(frozen=True)
class PatternSpace:
    """The distinct IDs of a pattern, numbered ``0 .. size - 1``.

    ``method`` says how the numbering was obtained: ``"structure"`` (the pattern is proven
    unambiguous; indices are derivations) or ``"enumeration"`` (an ambiguous pattern whose
    distinct IDs were listed and sorted).
    """

    pattern: str
    size: int
    method: str
    max_length: int
    regex: str = field(repr=False)
    tree: object = field(repr=False, compare=False)
    _ids: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def _compiled(self) -> re.Pattern:
        return re.compile(self.regex)

    @functools.cached_property
    def _slots(self) -> tuple | None:
        """The choices per position when the pattern is a plain product (the usual case).

        Unranking such a pattern is a few ``divmod`` calls; generation in a dense space
        unranks many indices, so this fast path is what keeps it cheap.
        """
        return _product_slots(self.tree) if not _refs(self.tree)[1] else None

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {value: i for i, value in enumerate(self._ids or ())}

    def unrank(self, index: int) -> str:
        """The ID numbered ``index``; ``IndexError`` outside ``0 .. size - 1``."""
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} outside the space of {self.size} IDs")
        if self._ids is not None:
            return self._ids[index]
        if self._slots is not None:
            parts = []
            for choices in reversed(self._slots):
                index, digit = divmod(index, len(choices))
                parts.append(choices[digit])
            return "".join(reversed(parts))
        return self.tree.unrank(index, EMPTY_ENV)[0]

    def rank(self, value: str) -> int | None:
        """The number of ``value`` in the space, or None when it is not one of its IDs."""
        if not self.contains(value):
            return None
        if self._ids is not None:
            return self._index[value]
        for end, index, _ in self.tree.match(value, 0, EMPTY_ENV):
            if end == len(value):
                return index
        return None  # unreachable while the regex and the tree agree

    def contains(self, value: str) -> bool:
        """Whether ``value`` is one of the IDs (a full match, never a prefix match)."""
        return isinstance(value, str) and self._compiled.fullmatch(value) is not None

    def ids(self) -> Iterator[str]:
        """Every ID in index order (only sensible for small spaces)."""
        return (self.unrank(i) for i in range(self.size))


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str) -> PatternSpace:
    """Parse and analyse ``pattern`` once; the result is immutable and cached."""
    if not isinstance(pattern, str):
        raise PatternError(f"a pattern must be a string, not {type(pattern).__name__}")
    tree = parse(pattern)
    if 0 in tree.lengths:
        raise PatternError("pattern can produce an empty ID", pattern, 0)
    longest = max(tree.lengths)
    if longest > MAX_ID_LENGTH:
        raise PatternError(f"pattern can produce IDs longer than {MAX_ID_LENGTH}", pattern, 0)
    regex = tree.regex()
    verdict, blame = _ambiguity(tree)
    if verdict == PROVEN:
        return PatternSpace(pattern, tree.count, "structure", longest, regex, tree)
    if tree.count > ENUMERATION_LIMIT:
        what = "can produce one ID in two ways" if verdict == AMBIGUOUS else "may be ambiguous"
        raise PatternError(
            f"the part starting here {what}, and the pattern is too large "
            f"({tree.count:,} derivations) to count its distinct IDs; rewrite it so that "
            "each ID has one spelling",
            pattern,
            getattr(blame, "pos", 0),
        )
    ids = tuple(sorted({text for text, _ in tree.expand(EMPTY_ENV)}))
    return PatternSpace(pattern, len(ids), "enumeration", longest, regex, tree, ids)
