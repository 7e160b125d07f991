r"""The ID pattern language's grammar: parse a pattern into a ``pattern_tree`` or say why not.

The kit reads patterns with its own parser (``re._parser`` is private and changes between
Python versions). It accepts the finite subset of ``re`` syntax that can *generate* IDs and
rejects everything else with a ``PatternError`` that names the construct and its position:
unbounded repeats, negated sets, lookarounds, anchors inside the pattern, characters that
cannot appear in an ID, and back-references that some ID could reach without their group.

An ID becomes a DICOM PatientID (VR LO, where ``\`` separates values) and PatientName (VR PN,
where ``^`` and ``=`` separate components), and ``*`` and ``?`` are wildcards in C-FIND
queries; so every character a pattern can produce must be printable ASCII other than the
space and ``\ ^ = * ?`` (``ID_CHARACTERS``). Patterns are also bounded (``MAX_PATTERN_LENGTH``
characters, ``MAX_NESTING`` levels of groups) so that no input exhausts the recursion limit.
"""

from __future__ import annotations

import re
import string
from typing import NoReturn

from autoid_lib.errors import PatternError
from autoid_lib.ids.tree import (
    MAX_ID_LENGTH,
    Alternation,
    BackRef,
    CharClass,
    Group,
    Literal,
    Node,
    Repeat,
    Sequence,
    children,
)

__all__ = [
    "ALNUM",
    "DIGITS",
    "FORBIDDEN_CHARACTERS",
    "ID_CHARACTERS",
    "MAX_NESTING",
    "MAX_PATTERN_LENGTH",
    "parse",
]

DIGITS = string.digits
ALNUM = string.digits + string.ascii_uppercase + string.ascii_lowercase  # what "." means

#: Characters that would break the ID in DICOM, with the reason given in the error message.
FORBIDDEN_CHARACTERS = {
    "\\": "it separates the values of a DICOM PatientID (LO)",
    "^": "it separates the components of a DICOM PatientName (PN)",
    "=": "it separates the component groups of a DICOM PatientName (PN)",
    "*": "it is a wildcard in DICOM C-FIND queries",
    "?": "it is a wildcard in DICOM C-FIND queries",
}
#: Every character an ID may contain: printable ASCII without the space and the above.
ID_CHARACTERS = frozenset(chr(k) for k in range(0x21, 0x7F)) - set(FORBIDDEN_CHARACTERS)
#: Longest pattern accepted (real ones are a few dozen characters).
MAX_PATTERN_LENGTH = 200
#: Deepest nesting of groups accepted.
MAX_NESTING = 20

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
        self.depth = 0  # groups open around the current position

    def fail(self, message: str, pos: int) -> NoReturn:
        raise PatternError(message, self.p, pos)

    def peek(self, text: str = "") -> bool:
        return self.i < self.end and (not text or self.p.startswith(text, self.i))

    def parse(self) -> Node:
        if self.i >= self.end:
            self.fail("empty pattern", 0)
        node = self.alternation()
        if self.peek():  # only a ')' stops the top level early
            self.fail("unbalanced ')' with no group to close", self.i)
        return node

    def alternation(self) -> Node:
        start, options = self.i, [self.sequence()]
        while self.peek("|"):
            self.i += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alternation(tuple(options), start)

    def sequence(self) -> Node:
        start = self.i
        items: list[Node] = []
        while self.peek() and self.p[self.i] not in "|)":
            items.append(self.quantified(self.atom()))
        return _make_sequence(items, start)

    def quantified(self, atom: Node) -> Node:
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

    def atom(self) -> Node:
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

    def char(self, c: str, pos: int, where: str = "") -> str:
        """``c`` if an ID may contain it; ``where`` names the class range it comes from."""
        if c in ID_CHARACTERS:
            return c
        if not c.isprintable() or c.isspace():
            why = "whitespace or control"
        elif c in FORBIDDEN_CHARACTERS:
            why = FORBIDDEN_CHARACTERS[c]
        else:
            why = "only printable ASCII can"
        self.fail(f"character {c!r}{where} cannot appear in an ID ({why})", pos)

    def escape(self, start: int) -> Node:
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
            group = self.groups[index]
            if group is None:
                self.fail(f"back-reference \\{index} inside the group it refers to", start)
            return BackRef(index, group, start)
        if c in _REJECTED_ESCAPES:
            self.fail(f"{_REJECTED_ESCAPES[c]} is not allowed in an ID pattern", start)
        if c.isalnum() or not c.isascii():
            self.fail(f"unknown or unsupported escape \\{c}", start)
        return Literal(self.char(c, start), start)

    def group(self) -> Node:
        start = self.i
        if self.depth >= MAX_NESTING:
            self.fail(f"groups nested more than {MAX_NESTING} deep", start)
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
        self.depth += 1
        body = self.alternation()
        self.depth -= 1
        if not self.peek(")"):
            self.fail("missing ')' for the group opened", start)
        self.i += 1
        if index is None:
            return body
        group = self.groups[index] = Group(index, body, start)
        return group

    def char_class(self) -> CharClass:
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
                text = self.p[item_pos : self.i]
                if len(low) != 1 or len(high) != 1 or low > high:
                    self.fail(f"bad range {text!r}", item_pos)
                # one by one: the first bad character stops a range as wide as all of Unicode
                for k in range(ord(low), ord(high) + 1):
                    chars.add(self.char(chr(k), item_pos, f" (in the range {text!r})"))
            else:
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


def _make_sequence(items: list[Node], pos: int) -> Node:
    """Flatten nested sequences and merge neighbouring literals (fewer nodes, faster unrank)."""
    flat: list[Node] = []
    for item in items:
        for part in item.items if isinstance(item, Sequence) else (item,):
            if isinstance(part, Literal) and flat and isinstance(flat[-1], Literal):
                flat[-1] = Literal(flat[-1].text + part.text, flat[-1].pos)
            else:
                flat.append(part)
    if len(flat) == 1:
        return flat[0]
    return Sequence(tuple(flat), pos) if flat else Literal("", pos)


#: The alternative branches (node id, branch) and repeats (node id) around a node.
_Path = tuple[tuple[int, ...], ...]


def _check_references(
    node: Node, pattern: str, path: _Path = (), seen: dict[int, _Path] | None = None
) -> None:
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
    for k, child in enumerate(children(node)):
        step = path
        if isinstance(node, Alternation):
            step = (*path, (id(node), k))
        elif isinstance(node, Repeat) and (node.min, node.max) != (1, 1):
            step = (*path, (id(node),))
        _check_references(child, pattern, step, seen)


def parse(pattern: str) -> Node:
    """Parse ``pattern`` into a syntax tree, or raise ``PatternError`` naming the construct."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(
            f"pattern is {len(pattern)} characters long; at most {MAX_PATTERN_LENGTH} are allowed",
            pattern,
            MAX_PATTERN_LENGTH,
        )
    tree = _Parser(pattern).parse()
    _check_references(tree, pattern)
    return tree
