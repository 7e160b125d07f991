"""The pattern language: parsing, rejection with positions, exact size, unrank/rank bijection.

The property tests compare the space with brute force: every string over the pattern's small
alphabet up to its longest ID that the real ``re`` fully matches.
"""

import itertools
import re
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import small_patterns, small_space

from autoid_lib.errors import PatternError
from autoid_lib.ids.space import ENUMERATION_LIMIT, MAX_ID_LENGTH, compile_pattern, parse
from autoid_lib.ids.syntax import ID_CHARACTERS, MAX_NESTING, MAX_PATTERN_LENGTH

# --- properties: the space against brute force over "abc" -----------------------------------


def brute_force(pattern: str, alphabet: str, max_length: int) -> set[str]:
    found = set()
    for n in range(max_length + 1):
        for letters in itertools.product(alphabet, repeat=n):
            word = "".join(letters)
            if re.fullmatch(pattern, word):
                found.add(word)
    return found


@settings(max_examples=300, deadline=None)
@given(small_patterns())
def test_space_is_exactly_the_set_re_fullmatches(pattern):
    space = small_space(pattern)
    ids = list(space.ids())
    assert len(set(ids)) == len(ids) == space.size
    assert set(ids) == brute_force(pattern, "abc", max(parse(pattern).lengths))


@settings(max_examples=200, deadline=None)
@given(small_patterns())
def test_rank_inverts_unrank(pattern):
    space = small_space(pattern)
    for index in range(space.size):
        assert space.rank(space.unrank(index)) == index
    assert space.rank("abcabcabc") is None


WIDE_PIECES = st.sampled_from(
    [
        "P_",
        "X",
        r"\d",
        ".",
        "[A-Z0-9_]",
        "[a-f]",
        "-",
        r"\.",
        "(?:AB|CD)",
        "(x|yz)",
        r"\d{2}",
        "[xy]{1,2}",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(WIDE_PIECES, min_size=1, max_size=5).map("".join), st.data())
def test_sampled_ids_of_wide_patterns_fullmatch_and_rank_back(pattern, data):
    try:
        space = compile_pattern(pattern)
    except PatternError as exc:  # ambiguous and too large to deduplicate: a rejection, not a bug
        assert "ambiguous" in str(exc) or "two ways" in str(exc)
        assume(False)
    for _ in range(20):
        index = data.draw(st.integers(0, space.size - 1))
        value = space.unrank(index)
        assert re.fullmatch(pattern, value)
        assert space.contains(value)
        assert space.rank(value) == index


# --- examples from the domain notes -----------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "size"),
    [
        (r"P_0\d{4}", 10_000),
        (r"P_([0-9]{4})_\1", 10_000),
        (r"[A-Z]{2}\d{3}", 676_000),
        (r"PROJ_[A-Z0-9_]{2}", 37 * 37),
        (r"P.", 62),
        (r"^P_0\d{4}$", 10_000),
        (r"(abc|def)\d{6}", 2_000_000),
        (r"\d{64}", 10**64),
    ],
)
def test_sizes(pattern, size):
    assert compile_pattern(pattern).size == size


def test_legacy_misreadings_are_read_right():
    assert list(compile_pattern("X(abc)Y").ids()) == ["XabcY"]
    assert list(compile_pattern(r"A(x|y)\1").ids()) == ["Axx", "Ayy"]
    space = compile_pattern(r"P_([0-9]{4})_\1")
    for index in (0, 1234, 9999):
        value = space.unrank(index)
        assert re.fullmatch(r"P_(\d{4})_\1", value)
    assert compile_pattern("P_(a|b)?c").size == 3  # '?' produces something


def test_dot_means_letters_and_digits_only():
    space = compile_pattern("P.")
    assert space.contains("Pz") and space.contains("P0")
    assert not space.contains("P-") and not space.contains("P\n")
    assert r"\d" not in space.regex  # re's \d would match other Unicode digits


def test_prefix_is_not_a_match():  # legacy defect 4
    assert not compile_pattern(r"P_0\d{4}").contains("P_012345")


@pytest.mark.parametrize(
    ("pattern", "size", "method"),
    [
        ("(a|a)", 1, "enumeration"),
        ("ba?a?", 3, "enumeration"),
        ("(ab|a)b?", 3, "enumeration"),
        (r"(c|d)(c|\1)", 3, "enumeration"),
        ("(a|bc){2}", 4, "structure"),
        (r"(P\d{3}X|P\d{3}Y)", 2000, "structure"),
        ("x(){0,3}", 1, "enumeration"),
    ],
)
def test_ambiguous_patterns_count_distinct_ids(pattern, size, method):
    space = compile_pattern(pattern)
    assert (space.size, space.method) == (size, method)
    assert len(set(space.ids())) == size


def test_large_ambiguous_pattern_is_rejected_with_a_position():
    with pytest.raises(PatternError, match="one ID in two ways") as caught:
        compile_pattern("Q(a|a){20}")
    assert caught.value.position == 2
    assert ENUMERATION_LIMIT < 2**20


@pytest.mark.parametrize(
    ("pattern", "position", "words"),
    [
        ("P_\\d*", 4, "unbounded repeat '*'"),
        ("P_\\d+", 4, "unbounded repeat '+'"),
        ("P_\\d{2,}", 4, "unbounded repeat '{2,}'"),
        ("P_[^0-9]", 2, "negated class"),
        ("P(?=A)B", 1, "lookahead"),
        ("P(?!A)B", 1, "negative lookahead"),
        ("P(?<=A)B", 1, "lookbehind"),
        ("P(?<!A)B", 1, "negative lookbehind"),
        ("P(?P<x>A)", 1, "named group"),
        ("P(?i)a", 1, "inline flags"),
        ("P^A", 1, "anchor '^'"),
        ("P$A", 1, "anchor '$'"),
        ("P\\bA", 1, "\\b"),
        ("P_\\w{3}", 2, "\\w"),
        ("P_\\s", 2, "\\s"),
        ("P_\\D", 2, "\\D"),
        ("P_\\W", 2, "\\W"),
        ("P_(A\\1)", 4, "inside the group"),
        ("P_\\1(A)", 2, "does not exist"),
        ("(A)|B\\1", 5, "alternative, optional part or repeat"),
        ("(A)?\\1", 4, "alternative, optional part or repeat"),
        ("(A){2}\\1", 6, "alternative, optional part or repeat"),
        ("P_\\12", 2, "\\1 to \\9"),
        ("P_ A", 2, "' ' cannot appear"),
        ("P_[A-C ]", 6, "' ' cannot appear"),
        ("P_[C-A]", 3, "bad range"),
        ("P_[\\d-z]", 3, "bad range"),
        ("P_(A", 2, "missing ')'"),
        ("P_A)", 3, "unbalanced ')'"),
        ("P_[AB", 2, "missing ']'"),
        ("P_{x}", 2, "'{' must start"),
        ("*P", 0, "nothing to repeat"),
        ("P_A{3,2}", 3, "minimum above its maximum"),
        ("P_A{65}", 3, "exceeds the longest ID"),
        ("P_A??{2}", 5, "multiple repeat"),
        ("P_\\q", 2, "unknown or unsupported escape"),
        ("P_\\", 2, "lone backslash"),
        ("", 0, "empty pattern"),
        ("^$", 0, "empty pattern"),
        ("A?", 0, "empty ID"),
        ("[A-Z]{40}\\d{30}", 0, "longer than 64"),
        # characters that break DICOM: PatientID's value separator, PatientName's component
        # separators, C-FIND wildcards; and anything that is not printable ASCII
        ("P\\^\\d", 1, "character '^' cannot appear in an ID (it separates the components"),
        ("P\\\\1", 1, "character '\\\\' cannot appear in an ID (it separates the values"),
        ("P=1", 1, "character '=' cannot appear in an ID (it separates the component groups"),
        ("P_\\*", 2, "character '*' cannot appear in an ID (it is a wildcard"),
        ("P_\\?", 2, "character '?' cannot appear in an ID (it is a wildcard"),
        ("P_é", 2, "character 'é' cannot appear in an ID (only printable ASCII"),
        ("P_\u00a0", 2, "character '\\xa0' cannot appear in an ID (whitespace or control"),
        ("P_[A=]", 4, "character '='"),
        ("P_[A^]", 4, "character '^'"),
        ("P_[\\^A]", 3, "character '^'"),
        ("P_[\\\\A]", 3, "character '\\\\'"),
        ("P_[A\\?]", 4, "character '?'"),
        ("P_[\\*]", 3, "character '*'"),
        ("P_[Aé]", 4, "character 'é'"),
        ("P_[!-~]", 3, "character '*' (in the range '!-~') cannot appear"),
        ("P_[<->]", 3, "character '=' (in the range '<->') cannot appear"),
        ("P_[Z-a]", 3, "character '\\\\' (in the range 'Z-a') cannot appear"),
        ("P_[x-é]", 3, "character '\\x7f' (in the range 'x-é') cannot appear"),
        ("P_[!-\U0010ffff]", 3, "character '*' (in the range"),
        # bounded size, so that no pattern exhausts the recursion limit
        ("(?:" * 21 + "a" + ")" * 21, 60, "groups nested more than 20 deep"),
        ("(" * 21 + "a" + ")" * 21, 20, "groups nested more than 20 deep"),
        ("(?:" * 250 + "a" + ")" * 250, 200, "1001 characters long; at most 200 are allowed"),
        ("A" * 201, 200, "201 characters long; at most 200 are allowed"),
    ],
)
def test_rejected_constructs_name_the_construct_and_its_position(pattern, position, words):
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    assert caught.value.position == position
    assert words in str(caught.value)
    assert caught.value.pattern == pattern


def test_escapes_and_classes():
    space = compile_pattern(r"A\.B\-[\]x-z_]")
    assert sorted(space.ids()) == sorted(f"A.B-{c}" for c in "]xyz_")
    assert compile_pattern("[]a]").size == 2  # a leading ']' is a character, as in re
    assert compile_pattern("[a-]").size == 2
    assert compile_pattern(r"[\d_]").size == 11


def test_lazy_quantifier_and_anchors_are_accepted():
    assert compile_pattern("Pa{1,2}?").size == 2
    assert compile_pattern(r"^P\$$").size == 1
    assert list(compile_pattern(r"^P\$$").ids()) == ["P$"]


def test_parse_returns_a_plain_tree():
    tree = parse(r"P_0\d{4}")
    assert tree == parse(r"P_0[0-9]{4}")
    assert MAX_ID_LENGTH == 64


def test_unrank_outside_the_space_is_an_index_error():
    space = compile_pattern("[ab]")
    with pytest.raises(IndexError):
        space.unrank(2)
    with pytest.raises(IndexError):
        space.unrank(-1)


# --- only characters that are safe in DICOM; only PatternError on any input -------------------


def test_every_allowed_character_can_be_written_and_is_safe_in_dicom():
    assert set(map(chr, range(0x21, 0x7F))) - set("\\^=*?") == ID_CHARACTERS
    escaped = "".join(c if c.isalnum() else "\\" + c for c in sorted(ID_CHARACTERS))
    assert compile_pattern(f"[{escaped}]").size == len(ID_CHARACTERS) == 89
    assert compile_pattern("[!-)+-<>@-[\\]_-~]").size == 89  # every range avoiding the five
    assert compile_pattern(r"^P\$$").size == 1  # "^" and "$" as anchors, "$" escaped: allowed


def test_patterns_up_to_the_limits_are_accepted():
    assert compile_pattern("(?:" * MAX_NESTING + "a" + ")" * MAX_NESTING).size == 1
    assert compile_pattern("(" * 9 + "a" + ")" * 9 + "\\9").size == 1
    assert compile_pattern("(?:a|b)" * (MAX_PATTERN_LENGTH // 7)).size == 2**28
    assert compile_pattern("A" * 64).size == 1


def test_nested_repeats_of_an_empty_part_are_rejected_at_once():
    # each level raises the derivation count to the 64th power: uncapped, four levels took
    # minutes and three raised ValueError when the count was printed
    for levels in range(1, 11):
        pattern = "A" + "(?:" * levels + "(|)" + "){0,64}" * levels
        started = time.monotonic()
        with pytest.raises(PatternError, match="one ID in two ways"):
            compile_pattern(pattern)
        assert time.monotonic() - started < 2


@settings(max_examples=1000, deadline=None)
@given(st.text(max_size=300) | st.text(alphabet="(?:|)[]{}-\\^$*+.ab019,", max_size=300))
def test_any_string_either_compiles_or_raises_pattern_error(text):
    try:
        space = compile_pattern(text)
    except PatternError:
        return
    value = space.unrank(space.size - 1)
    assert set(value) <= ID_CHARACTERS
    assert space.rank(value) == space.size - 1
