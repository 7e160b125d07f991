"""Unique generation, exhaustion, capacity and the external generator adapter.

The external generator tests run real programs: small Python scripts written by the test.
"""

import collections
import os
import random
import re
import sys
import textwrap

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from strategies import any_char_patterns, small_patterns, small_space

from autoid_lib.errors import ExternalGeneratorError, IdSpaceExhausted, PatternError
from autoid_lib.ids.generate import Capacity, ExternalGenerator, IdAllocator, capacity, generate_ids
from autoid_lib.ids.space import compile_pattern
from autoid_lib.ids.syntax import FORBIDDEN_CHARACTERS, ID_CHARACTERS

# --- properties -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(small_patterns(), st.data())
def test_generation_is_unique_and_exhaustion_is_exact(pattern, data):
    space = small_space(pattern)
    ids = list(space.ids())
    in_use = set(data.draw(st.lists(st.sampled_from(ids), max_size=len(ids)))) if ids else set()
    in_use |= {"zz", "A-1", "", "abcabcabcabc"}  # values that do not match take no room
    free = space.size - len(in_use & set(ids))
    count = data.draw(st.integers(1, space.size + 1))
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    if count <= free:
        got = generate_ids(pattern, in_use, count, rng)
        assert len(got) == len(set(got)) == count
        assert not set(got) & in_use
        assert all(re.fullmatch(pattern, value) for value in got)
    else:
        with pytest.raises(IdSpaceExhausted) as caught:
            generate_ids(pattern, in_use, count, rng)
        assert (caught.value.size, caught.value.used) == (space.size, space.size - free)
    report = capacity(pattern, in_use)
    assert (report.size, report.used, report.free) == (space.size, space.size - free, free)


@settings(max_examples=50, deadline=None)
@given(small_patterns())
def test_drawing_the_whole_space_in_one_call_gives_every_id(pattern):
    space = small_space(pattern)
    got = generate_ids(space, set(), space.size, random.Random(0))
    assert sorted(got) == sorted(space.ids())


@settings(max_examples=300, deadline=None)
@given(any_char_patterns(), st.data())
def test_no_generated_id_contains_a_character_that_breaks_dicom(pattern, data):
    """Whatever characters a pattern names, an ID holds only printable ASCII without the
    space and ``\\ ^ = * ?`` (PatientID/PatientName separators and C-FIND wildcards)."""
    try:
        space = compile_pattern(pattern)
    except PatternError as exc:
        message = str(exc)
        if "cannot appear in an ID" in message:  # a rejection names a character re can match
            bad = re.match(r"character '(.+?)'", message)[1].encode().decode("unicode_escape")
            assert bad not in ID_CHARACTERS
            return
        assert "two ways" in message or "ambiguous" in message, message
        assume(False)
    count = data.draw(st.integers(1, min(space.size, 50)))
    for value in generate_ids(space, set(), count, random.Random(data.draw(st.integers(0, 99)))):
        assert set(value) <= ID_CHARACTERS, value
        assert not set(value) & set(FORBIDDEN_CHARACTERS)
        assert re.fullmatch(pattern, value)


# --- the fill test from the issue -------------------------------------------------------------


def test_filling_p0_d4_one_call_at_a_time():
    pattern = r"P_0\d{4}"
    in_use: set[str] = set()
    for _ in range(10_000):
        (value,) = generate_ids(pattern, in_use)
        assert value not in in_use
        in_use.add(value)
    assert len(in_use) == 10_000
    assert all(re.fullmatch(pattern, value) for value in in_use)
    with pytest.raises(IdSpaceExhausted, match="space exhausted: 10000 of 10000 used"):
        generate_ids(pattern, in_use)


def test_allocator_fills_the_space_and_then_reports_exhaustion():
    allocator = IdAllocator(r"Q\d{3}", in_use=["Q000", "legacy-1"], rng=7)
    got = [allocator.allocate()[0] for _ in range(999)]
    assert len(set(got)) == 999 and "Q000" not in got
    assert allocator.capacity().level == "exhausted"
    with pytest.raises(IdSpaceExhausted):
        allocator.allocate()


# --- behaviour --------------------------------------------------------------------------------


def test_the_last_free_id_is_always_found():
    space = compile_pattern(r"P_\d{3}")
    everything = set(space.ids())
    for seed in range(20):
        last = random.Random(seed).choice(sorted(everything))
        assert generate_ids(space, everything - {last}) == [last]


def test_k_ids_never_repeat_and_too_many_is_all_or_nothing():
    got = generate_ids("[A-C][1-3]", [], 9, rng=1)
    assert len(set(got)) == 9
    with pytest.raises(IdSpaceExhausted) as caught:
        generate_ids("[A-C][1-3]", ["A1", "B2"], 8, rng=1)
    assert caught.value.used == 2 and caught.value.free == 7
    assert "8 IDs were asked for, 7 are free" in caught.value.__notes__


def test_in_use_may_be_any_collection():
    for in_use in (["P_1", "P_2"], ("P_1", "P_2"), {"P_1": 1, "P_2": 2}, frozenset({"P_1", "P_2"})):
        assert generate_ids("P_[1-3]", in_use) == ["P_3"]


def test_seeded_output_repeats_and_default_output_does_not():
    assert generate_ids(r"\d{6}X", [], 5, rng=42) == generate_ids(r"\d{6}X", [], 5, rng=42)
    assert generate_ids(r"\d{9}X", [], 5) != generate_ids(r"\d{9}X", [], 5)


def test_generation_is_uniform_over_free_ids():
    rng = random.Random(3)
    in_use = {"0", "1"}
    counts = collections.Counter(generate_ids("[0-9]", in_use, 1, rng)[0] for _ in range(8000))
    assert set(counts) == set("23456789")
    assert all(850 < n < 1150 for n in counts.values()), counts


def test_huge_spaces_work():
    got = generate_ids(r"[A-Z]{30}\d{30}", set(), 3, rng=1)
    assert all(re.fullmatch(r"[A-Z]{30}\d{30}", v) for v in got)


def test_bad_arguments():
    with pytest.raises(PatternError):
        generate_ids("P*", [])
    with pytest.raises(ValueError):
        generate_ids("P", [], -1)
    assert generate_ids("P", [], 0) == []
    with pytest.raises(TypeError):
        generate_ids("P", [], rng="seed")


# --- capacity ---------------------------------------------------------------------------------


def test_capacity_levels_and_description():
    in_use = [f"P_0{i:04d}" for i in range(9412)] + ["P_012345", "junk", "P_00001"]
    report = capacity(r"P_0\d{4}", in_use)
    assert (report.size, report.used, report.free, report.level) == (10_000, 9412, 588, "warning")
    assert report.description == "9,412 of 10,000 IDs used (94%) — widen the pattern soon"
    assert report.fraction_used == pytest.approx(0.9412)
    assert capacity(r"P_0\d{4}", ["P_00001"]).description == "1 of 10,000 IDs used (<1%)"
    assert capacity("P_[1-2]", ["P_1", "P_2"]).level == "exhausted"
    assert capacity("P_[1-2]", ["P_1"], warn_at=0.6).level == "ok"
    assert capacity(r"P_\d", [f"P_{i}" for i in range(9)]).description.startswith("9 of 10 ")
    assert capacity(r"\d{30}", []).description == "0 of about 1.0e+30 IDs used (0%)"
    assert isinstance(report, Capacity) and report.as_dict()["level"] == "warning"
    with pytest.raises(ValueError):
        capacity("P", [], warn_at=0)


# --- external generator -----------------------------------------------------------------------


def _script(tmp_path, body: str) -> list[str]:
    """A fake legacy generator: ``gen.py -r PATTERN -e FILE -a`` running ``body``."""
    path = tmp_path / "gen.py"
    header = """\
        import os, stat, sys
        pattern, exclusion = sys.argv[2], sys.argv[4]
        used = [line.strip() for line in open(exclusion)]
        state = os.path.join(os.path.dirname(__file__), "calls")
        n = int(open(state).read()) if os.path.exists(state) else 0
        open(state, "w").write(str(n + 1))
        with open(os.path.join(os.path.dirname(__file__), "log"), "a") as log:
            log.write(f"{exclusion} {stat.S_IMODE(os.stat(exclusion).st_mode):o}\\n")
    """
    path.write_text(textwrap.dedent(header) + textwrap.dedent(body))
    return [sys.executable, str(path), "-r", "{pattern}", "-e", "{exclusion_file}", "-a"]


def _files_seen(tmp_path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in (tmp_path / "log").read_text().splitlines()]


def test_external_answer_in_use_is_refused_then_a_good_one_accepted(tmp_path):
    command = _script(tmp_path, 'print(used[0] if n == 0 else "P_3")\n')
    got = ExternalGenerator(command).generate_ids("P_[1-3]", ["P_1", "P_2"])
    assert got == ["P_3"]
    seen = _files_seen(tmp_path)
    assert len(seen) == 2
    for path, mode in seen:
        assert mode == "600"
        assert not os.path.exists(path)  # always removed


def test_external_answers_are_checked_and_attempts_bounded(tmp_path):
    command = _script(tmp_path, 'print(["P_012345", "P_01", "", "a\\nb", "P_00001"][n % 5])\n')
    with pytest.raises(ExternalGeneratorError) as caught:
        ExternalGenerator(command, attempts=5).generate_ids(r"P_0\d{4}", ["P_00001"])
    message = str(caught.value)
    assert "attempt 1: answer 'P_012345' does not fully match" in message  # defect 4
    assert "attempt 3: expected one ID on standard output, got 0 lines" in message
    assert "attempt 4: expected one ID on standard output, got 2 lines" in message
    assert "attempt 5: answer 'P_00001' is already in use" in message
    assert int((tmp_path / "calls").read_text()) == 5


def test_external_ids_in_one_call_are_distinct(tmp_path):
    command = _script(tmp_path, 'print(["Q1", "Q1", "Q2"][n])\n')
    assert ExternalGenerator(command).generate_ids(r"Q\d", [], 2) == ["Q1", "Q2"]


def test_external_failure_and_timeout_still_remove_the_file(tmp_path):
    command = _script(tmp_path, "import time\nif n == 0:\n    time.sleep(30)\nsys.exit(3)\n")
    with pytest.raises(ExternalGeneratorError) as caught:
        ExternalGenerator(command, timeout=1, attempts=2).generate_ids("P_[1-3]", [])
    assert "attempt 1: no answer within 1 s" in str(caught.value)
    assert "attempt 2: exit status 3" in str(caught.value)
    assert all(not os.path.exists(path) for path, _ in _files_seen(tmp_path))


def test_external_program_missing_leaves_no_file(tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    generator = ExternalGenerator([str(tmp_path / "nope"), "{exclusion_file}"], temp_dir=private)
    with pytest.raises(ExternalGeneratorError, match="cannot run external generator"):
        generator.generate_ids("P[12]", ["P1"])
    assert list(private.iterdir()) == []


def test_external_generator_rejects_bad_settings():
    with pytest.raises(ValueError):
        ExternalGenerator([])
    with pytest.raises(ValueError):
        ExternalGenerator(["x"], attempts=0)


def test_external_generator_is_not_called_when_the_space_is_full(tmp_path):
    command = _script(tmp_path, 'print("P_1")\n')
    with pytest.raises(IdSpaceExhausted):
        ExternalGenerator(command).generate_ids("P_[12]", ["P_1", "P_2"])
    assert not (tmp_path / "calls").exists()
