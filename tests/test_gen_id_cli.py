"""``autoid gen-id`` run as a real subprocess, with the legacy tool's flags."""

import fcntl
import re
import subprocess
import sys
import time

import pytest


def gen_id(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autoid_lib.cli", "gen-id", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def test_one_id_per_line_and_exit_zero():
    done = gen_id("-r", r"P_0\d{4}", "-n", "5")
    assert done.returncode == 0, done.stderr
    ids = done.stdout.splitlines()
    assert len(ids) == len(set(ids)) == 5
    assert all(re.fullmatch(r"P_0\d{4}", value) for value in ids)
    assert done.stderr == ""


def test_long_flags_and_method_and_seed_are_accepted():
    first = gen_id("--regexp", "Q[0-9]{3}", "--number", "3", "--method", "random-id", "--seed", "9")
    second = gen_id("-r", "Q[0-9]{3}", "-n", "3", "-m", "random-id", "--seed", "9")
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout


def test_exclusion_file_with_crlf_and_whitespace_is_honoured(tmp_path):  # legacy defect 1
    exclusion = tmp_path / "used.txt"
    exclusion.write_bytes(b"\xef\xbb\xbfP_1\r\n   P_2 \t\r\n\r\n")
    for _ in range(5):
        done = gen_id("-r", "P_[1-3]", "-e", str(exclusion))
        assert (done.returncode, done.stdout) == (0, "P_3\n")


def test_auto_add_appends_and_ten_calls_never_repeat(tmp_path):  # legacy defect 1, with -a
    exclusion = tmp_path / "q.txt"
    seen = []
    for _ in range(10):
        done = gen_id("-r", "Q[0-9]", "-e", str(exclusion), "-a")
        assert done.returncode == 0, done.stderr
        seen.append(done.stdout.strip())
    assert sorted(seen) == [f"Q{i}" for i in range(10)]
    assert exclusion.read_text().splitlines() == seen
    done = gen_id("-r", "Q[0-9]", "-e", str(exclusion), "-a")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.strip() == (
        "autoid gen-id: space exhausted: 10 of 10 used for pattern 'Q[0-9]'; "
        "widen the project's naming pattern"
    )


def test_concurrent_auto_add_calls_take_turns_and_never_share_an_id(tmp_path):
    """Two ``gen-id -a`` started at once on a nearly full space get the two free IDs.

    The test holds the exclusion file's lock while both start, so both have read nothing yet
    when it lets go; with the same seed, two calls that did not lock would both read eight
    used IDs and pick the same one.
    """
    exclusion = tmp_path / "shared.txt"
    exclusion.write_text("".join(f"Q{i}\n" for i in range(8)))
    command = [sys.executable, "-m", "autoid_lib.cli", "gen-id", "-r", "Q[0-9]"]
    command += ["-e", str(exclusion), "-a", "--seed", "5"]
    with exclusion.open("a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        calls = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        time.sleep(3)  # long enough for both to start and reach the lock
        assert [call.poll() for call in calls] == [None, None], "gen-id -a did not wait"
    outputs = [call.communicate(timeout=60) for call in calls]
    assert [call.returncode for call in calls] == [0, 0], outputs
    ids = [out.strip() for out, _ in outputs]
    assert sorted(ids) == ["Q8", "Q9"]
    lines = exclusion.read_text().splitlines()
    assert len(lines) == len(set(lines)) == 10
    assert sorted(lines) == [f"Q{i}" for i in range(10)]


def test_auto_add_on_an_unreadable_or_non_utf8_file_appends_nothing(tmp_path):
    exclusion = tmp_path / "used.txt"
    exclusion.write_bytes(b"P_1\n\xff\n")
    done = gen_id("-r", "P_[1-3]", "-e", str(exclusion), "-a")
    assert done.returncode == 2 and done.stdout == ""
    assert "cannot read exclusion file" in done.stderr
    assert exclusion.read_bytes() == b"P_1\n\xff\n"
    done = gen_id("-r", "P_[1-3]", "-e", str(tmp_path), "-a")  # a directory
    assert done.returncode == 2 and "cannot read exclusion file" in done.stderr


def test_exhausted_auto_add_keeps_the_file_and_capacity_does_not_create_it(tmp_path):
    exclusion = tmp_path / "used.txt"
    exclusion.write_bytes(b"P_1\r\nP_2")
    done = gen_id("-r", "P_[12]", "-e", str(exclusion), "-a")
    assert done.returncode == 1
    assert exclusion.read_bytes() == b"P_1\r\nP_2"
    missing = tmp_path / "missing.txt"
    done = gen_id("-r", "P_[12]", "-e", str(missing), "-a", "--capacity")
    assert done.returncode == 0 and "free: 2" in done.stdout
    assert not missing.exists()


def test_auto_add_keeps_crlf_and_closes_an_open_last_line(tmp_path):
    exclusion = tmp_path / "used.txt"
    exclusion.write_bytes(b"P_1\r\nP_2")
    done = gen_id("-r", "P_[1-3]", "-e", str(exclusion), "-a")
    assert done.stdout == "P_3\n"
    assert exclusion.read_bytes() == b"P_1\r\nP_2\r\nP_3\r\n"


def test_missing_exclusion_file_is_empty_and_auto_add_creates_it(tmp_path):
    exclusion = tmp_path / "new.txt"
    done = gen_id("-r", "X[ab]", "-e", str(exclusion), "-n", "2", "-a")
    assert done.returncode == 0
    assert sorted(done.stdout.split()) == ["Xa", "Xb"]
    assert sorted(exclusion.read_text().split()) == ["Xa", "Xb"]


def test_asking_for_more_than_is_free_fails_and_writes_nothing(tmp_path):
    exclusion = tmp_path / "used.txt"
    exclusion.write_text("P_1\n")
    done = gen_id("-r", "P_[1-3]", "-e", str(exclusion), "-a", "-n", "3")
    assert done.returncode == 1
    assert "space exhausted: 1 of 3 used" in done.stderr
    assert "3 IDs were asked for, 2 are free" in done.stderr
    assert exclusion.read_text() == "P_1\n"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (
            r"P_\d*",
            "unbounded repeat '*' (zero or more) cannot be generated; use {m,n} at position 4",
        ),
        (
            "P_[^0-9]{3}",
            "negated class [^...] is not allowed: its complement is not finite at position 2",
        ),
        ("P(?=A)", "lookahead (?=...) is not allowed in an ID pattern at position 1"),
    ],
)
def test_bad_pattern_exits_2_with_a_one_line_message_and_position(pattern, message):
    done = gen_id("-r", pattern)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("autoid gen-id: " + message)


def test_capacity_prints_size_used_free(tmp_path):
    exclusion = tmp_path / "used.txt"
    exclusion.write_text("P_00001\nP_00002\nP_012345\nlegacy\n")
    done = gen_id("-r", r"P_0\d{4}", "-e", str(exclusion), "--capacity")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert "size: 10000" in lines and "used: 2" in lines and "free: 9998" in lines
    assert "level: ok" in lines
    assert "description: 2 of 10,000 IDs used (<1%)" in lines


def test_command_line_errors_exit_2(tmp_path):
    assert gen_id("-r", "P", "-a").returncode == 2
    assert gen_id("-r", "P", "-n", "0").returncode == 2
    assert gen_id("-r", "P", "-m", "sequential").returncode == 2
    assert gen_id("-n", "1").returncode == 2
    done = gen_id("-r", "P_[1-3]", "-e", str(tmp_path))  # a directory, not a file
    assert done.returncode == 2
    assert "cannot read exclusion file" in done.stderr
