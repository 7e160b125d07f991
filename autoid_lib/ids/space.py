"""gen-id's pattern language read as a finite, countable space of IDs.

A project's naming pattern (``project_patient_naming``) is a regular expression, but the kit
uses it the other way round: as a *generator*. ``compile_pattern`` parses the pattern
(``pattern_syntax``, which refuses what cannot generate a finite set of IDs, into the node
classes of ``pattern_tree``) and turns the tree into a ``PatternSpace``: the exact number of
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
from collections.abc import Iterator
from dataclasses import dataclass, field

from autoid_lib.errors import PatternError
from autoid_lib.ids.syntax import parse
from autoid_lib.ids.tree import (
    EMPTY_ENV,
    MAX_COUNT,
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
    sumset,
)

__all__ = ["ENUMERATION_LIMIT", "MAX_ID_LENGTH", "PatternSpace", "compile_pattern", "parse"]

#: Largest number of derivations of an ambiguous pattern that is enumerated and deduplicated.
ENUMERATION_LIMIT = 200_000
#: Largest self-contained part that is enumerated to prove it unambiguous.
LOCAL_CHECK_LIMIT = 20_000


# --- ambiguity -------------------------------------------------------------------------------

PROVEN, AMBIGUOUS, UNKNOWN = "proven", "ambiguous", "unknown"


def _refs(node: Node) -> tuple[set[int], set[int]]:
    """(groups defined, groups referenced) inside ``node``."""
    defined: set[int] = set()
    used: set[int] = set()
    if isinstance(node, Group):
        defined.add(node.index)
    if isinstance(node, BackRef):
        used.add(node.index)
    for child in children(node):
        d, u = _refs(child)
        defined |= d
        used |= u
    return defined, used


def _disjoint(a: Node, b: Node) -> bool:
    if not a.lengths & b.lengths:
        return True
    both_empty = 0 in a.lengths and 0 in b.lengths
    return not both_empty and (not a.first & b.first or not a.last & b.last)


def _splits_uniquely(node: Node) -> bool:
    """True when, given unambiguous children, every string of ``node`` has one derivation."""
    if isinstance(node, Sequence):
        prefix = frozenset({0})
        for item in node.items:
            sums = sumset(prefix, item.lengths)
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


def _ambiguity(node: Node) -> tuple[str, Node | None]:
    """Verdict on ``node`` (PROVEN, AMBIGUOUS or UNKNOWN) and the node to blame."""
    verdicts = [_ambiguity(child) for child in children(node)]
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


#: Independent choices, one per position of the ID: a string of characters or a 1-tuple of text.
Slots = tuple[str | tuple[str], ...]


def _product_slots(node: Node) -> Slots | None:
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
        slots: list[str | tuple[str]] = []
        for item in node.items:
            part = _product_slots(item)
            if part is None:
                return None
            slots.extend(part)
        return tuple(slots)
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
    regex: str = field(repr=False)
    tree: Node = field(repr=False, compare=False)
    _ids: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    @functools.cached_property
    def _compiled(self) -> re.Pattern[str]:
        return re.compile(self.regex)

    @functools.cached_property
    def _slots(self) -> Slots | None:
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
    if max(tree.lengths) > MAX_ID_LENGTH:
        raise PatternError(f"pattern can produce IDs longer than {MAX_ID_LENGTH}", pattern, 0)
    regex = tree.regex()
    verdict, blame = _ambiguity(tree)
    if verdict == PROVEN:
        return PatternSpace(pattern, tree.count, "structure", regex, tree)
    if tree.count > ENUMERATION_LIMIT:
        what = "can produce one ID in two ways" if verdict == AMBIGUOUS else "may be ambiguous"
        raise PatternError(
            f"the part starting here {what}, and the pattern is too large "
            f"({_amount(tree.count)} derivations) to count its distinct IDs; rewrite it so that "
            "each ID has one spelling",
            pattern,
            getattr(blame, "pos", 0),
        )
    ids = tuple(sorted({text for text, _ in tree.expand(EMPTY_ENV)}))
    return PatternSpace(pattern, len(ids), "enumeration", regex, tree, ids)


def _amount(n: int) -> str:
    if n >= MAX_COUNT:
        return f"at least {MAX_COUNT:.1e}"
    return f"{n:,}" if n < 10**15 else f"about {n:.1e}"
