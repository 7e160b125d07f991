"""Hypothesis strategies for the pattern language, shared by the pattern and ID generation tests.

``small_patterns`` draws short patterns over the alphabet "abc" (with capturing groups and
back-references); ``small_space`` compiles one, skipping examples too large for brute force.
``any_char_patterns`` draws patterns whose literals, classes and ranges may hold any printable
ASCII character, including those that DICOM gives a meaning (``\\ ^ = * ?``).
"""

import functools
import re

from hypothesis import assume
from hypothesis import strategies as st

from autoid_lib.errors import PatternError
from autoid_lib.ids.space import compile_pattern, parse
from autoid_lib.ids.syntax import MAX_PATTERN_LENGTH

ATOMS = st.sampled_from(["a", "b", "c", "[ab]", "[a-c]", "[bc]", "[ca]", "[b]"])
QUANTIFIERS = st.sampled_from(["", "", "", "?", "{2}", "{0,2}", "{1,2}", "{1,3}"])


@functools.cache  # one strategy object per depth: building strategies per draw is slow
def _capture_free(depth: int):
    """Sub-patterns without capturing groups: atoms, repeats, (?:x|y) alternations."""
    if depth == 0:
        return st.tuples(ATOMS, QUANTIFIERS).map("".join)
    inner = st.lists(_capture_free(depth - 1), min_size=1, max_size=2).map("".join)
    alternation = st.lists(inner, min_size=1, max_size=3).map(lambda xs: "(?:" + "|".join(xs) + ")")
    return st.one_of(
        _capture_free(0),
        st.tuples(alternation, QUANTIFIERS).map("".join),
    )


PRINTABLE_ASCII = st.characters(min_codepoint=0x21, max_codepoint=0x7E)


def _quoted(c: str) -> str:
    """``c`` escaped when it is not a letter or digit (a valid escape everywhere)."""
    return c if c.isalnum() else "\\" + c


@st.composite
def _any_char_atom(draw) -> str:
    kind = draw(st.sampled_from(["literal", "escaped", "class", "range", "dot", "digit"]))
    if kind == "dot":
        return "."
    if kind == "digit":
        return "\\d"
    c = draw(PRINTABLE_ASCII)
    if kind == "literal":  # syntax characters are escaped so that the pattern stays a literal
        return _quoted(c) if c in "\\^$.|?*+()[]{}" else c
    if kind == "escaped":
        return _quoted(c)
    if kind == "class":
        return f"[{_quoted(c)}]"
    low, high = sorted([c, draw(PRINTABLE_ASCII)])
    return f"[{_quoted(low)}-{_quoted(high)}]"


def any_char_patterns():
    """Up to four atoms that may name any printable ASCII character, each maybe repeated."""
    piece = st.tuples(_any_char_atom(), st.sampled_from(["", "{2}", "{0,1}", "{1,2}"]))
    return st.lists(piece.map("".join), min_size=1, max_size=4).map(lambda xs: "X" + "".join(xs))


@st.composite
def small_patterns(draw) -> str:
    """Sequences of pieces: plain parts, capturing groups, and back-references to them."""
    parts, groups, referable = [], 0, []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["plain", "plain", "group", "backref", "optional_pair"]))
        if kind == "group" or (kind == "backref" and not referable):
            body = draw(_capture_free(1))
            groups += 1
            referable.append(groups)
            parts.append(f"({body})")
        elif kind == "backref":
            parts.append(f"\\{draw(st.sampled_from(referable))}")
        elif kind == "optional_pair":  # group and reference inside one optional part
            groups += 1
            body = draw(_capture_free(0))
            parts.append(f"(?:({body})\\{groups}){draw(st.sampled_from(['', '?', '{0,2}']))}")
        else:
            parts.append(draw(_capture_free(2)))
    return "".join(parts)


def small_space(pattern: str):
    """The space, or skip the example when the pattern is rejected for a good reason."""
    assume(len(pattern) <= MAX_PATTERN_LENGTH)  # a longer one is rejected outright
    tree = parse(pattern)
    assume(max(tree.lengths) <= 6 and tree.count <= 5000)  # keeps brute force cheap
    try:
        space = compile_pattern(pattern)
    except PatternError as exc:
        assert "empty ID" in str(exc), exc
        assert re.fullmatch(pattern, "") is not None  # the rejection is right
        assume(False)
    return space
