"""The request ceiling (``[redcap] max_requests_per_minute``): the pure pacer with an injected
clock, and the gateway's requests as the real sandbox receives them."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoid_lib.cli.progress_line import ProgressLineHandler
from autoid_lib.config import load_settings
from autoid_lib.errors import ConfigError
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.redcap.pacing import RequestPacer


def paced_run(limit: int, window: float, gaps: list[float], durations: list[float]):
    """Send requests ``gaps`` apart (plus any wait) on a fake clock; each takes a duration.
    Returns (send times, finish times)."""
    pacer = RequestPacer(limit, window)
    now, sent, finished = 0.0, [], []
    for gap, duration in zip(gaps, durations, strict=True):
        now += gap
        while (wait := pacer.wait_s(now)) > 0:
            now += wait  # the injected sleep
        sent.append(now)
        now += duration
        pacer.done(now)
        finished.append(now)
    return sent, finished


times = st.floats(min_value=0, max_value=30, allow_nan=False)


@given(
    limit=st.integers(1, 8),
    window=st.floats(min_value=0.5, max_value=120),
    steps=st.lists(st.tuples(times, times), max_size=60),
)
def test_no_window_ever_holds_more_than_the_limit(limit, window, steps):
    gaps, durations = [s[0] for s in steps], [s[1] for s in steps]
    sent, finished = paced_run(limit, window, gaps, durations)
    # the server sees a request between its sending and its finishing: any `limit + 1`
    # requests span at least a window, from the first one's finish to the last one's sending
    for i in range(len(sent) - limit):
        assert sent[i + limit] >= finished[i] + window


@given(
    limit=st.integers(1, 8),
    window=st.floats(min_value=0.5, max_value=120),
    steps=st.lists(st.tuples(times, times), max_size=60),
)
def test_a_request_waits_only_while_the_window_is_full(limit, window, steps):
    gaps, durations = [s[0] for s in steps], [s[1] for s in steps]
    sent, finished = paced_run(limit, window, gaps, durations)
    ready = 0.0
    for i, (gap, at) in enumerate(zip(gaps, sent, strict=True)):
        ready = (finished[i - 1] if i else 0.0) + gap  # when it would have gone unpaced
        if at > ready:  # it waited: exactly until the request `limit` back left the window
            assert i >= limit and at == pytest.approx(finished[i - limit] + window)
        else:
            assert at == ready


def test_up_to_the_limit_goes_at_once():
    pacer = RequestPacer(3, 60)
    for _ in range(3):
        assert pacer.wait_s(0.0) == 0
        pacer.done(0.0)
    assert pacer.wait_s(10.0) == 50.0
    assert pacer.wait_s(60.0) == 0


@given(
    limit=st.integers(1, 8),
    window=st.floats(min_value=0.5, max_value=120),
    finished=st.lists(times, max_size=12),
    room=st.integers(1, 8),
    now=times,
)
def test_after_making_room_that_many_requests_go_at_once(limit, window, finished, room, now):
    """Before the lease (issue 26): after ``room_s`` a run sends ``room`` requests (up to the
    limit) without one pause for the ceiling, and it waited no longer than it had to."""
    pacer = RequestPacer(limit, window)
    for at in sorted(finished):
        pacer.done(at)
    start = max([now, *finished])
    wait = pacer.room_s(start, room)
    for _ in range(min(room, limit)):
        assert pacer.wait_s(start + wait) == 0
        pacer.done(start + wait)
    if wait > 0:  # a moment earlier, the room was not there yet
        fresh = RequestPacer(limit, window)
        for at in sorted(finished):
            fresh.done(at)
        assert fresh.room_s(start + wait * 0.99 - 1e-9, room) > 0


def test_the_ceiling_is_a_config_key_with_a_default_under_redcaps_limiter(sandbox, tmp_path):
    path = sandbox.write_kit_files(tmp_path)
    assert load_settings(path).redcap.max_requests_per_minute == 120
    text = path.read_text().replace("[redcap]\n", "[redcap]\nmax_requests_per_minute = 0\n", 1)
    path.write_text(text)
    with pytest.raises(ConfigError, match="max_requests_per_minute"):
        load_settings(path)


def test_a_burst_of_reads_reaches_the_sandbox_spaced(sandbox, tmp_path):
    """A long read on a clock that runs 120x fast: a minute is half a second of real time, so
    the ceiling shows in the sandbox's own log of when requests arrived (no duration asserted:
    the log's gaps are what REDCap's limiter would count)."""
    speed, limit = 120.0, 4
    window = 60.0 / speed
    rows = [{"record_id": str(n), "autoid_hash": f"h{n}"} for n in range(1, 31)]
    sandbox.add_rows("autoid", rows)
    settings = load_settings(sandbox.write_kit_files(tmp_path)).redcap
    # a names export and 10 chunks
    settings = replace(settings, read_chunk_records=3, max_requests_per_minute=limit)
    gateway = RedcapGateway(
        settings,
        sleep=lambda s: time.sleep(s / speed),
        clock=lambda: time.monotonic() * speed,
    )
    sandbox.reset_counts()
    gateway.autoid_table()
    arrived = sandbox.request_times()
    assert len(arrived) == gateway.requests == 11
    assert gateway.paced_s > 0
    for i in range(len(arrived) - limit):
        assert arrived[i + limit] - arrived[i] >= window  # at most `limit` in any window


# -- progress of a long read ---------------------------------------------------------------------


def test_a_long_read_logs_its_progress_in_counts(sandbox, tmp_path, caplog):
    patients = [{"record_id": str(n), "autoid_hash": f"PATIENT{n}"} for n in range(1, 31)]
    sandbox.add_rows("autoid", patients)
    settings = load_settings(sandbox.write_kit_files(tmp_path)).redcap
    ticks = iter(range(10_000))  # every reading of the clock is 1 s later
    gateway = RedcapGateway(
        replace(settings, read_chunk_records=3), sleep=lambda _: None, clock=lambda: next(ticks)
    )
    with caplog.at_level(logging.INFO, logger="autoid.progress"):
        gateway.autoid_table()
    lines = [r.getMessage() for r in caplog.records if r.name == "autoid.progress"]
    # 10 chunks, each 3 s of clock (its request's pacing check and finish, then the progress
    # step): a line at most every 10 s, and the last
    assert lines[-1] == "autoid: 30 of 30 records read (10 requests)"
    assert len(lines) == 3
    assert not any("PATIENT" in line for line in lines)


def test_a_one_chunk_read_logs_no_progress(sandbox, tmp_path, caplog):
    sandbox.add_rows("autoid", [{"record_id": "1", "autoid_hash": "h"}])
    gateway = RedcapGateway(load_settings(sandbox.write_kit_files(tmp_path)).redcap)
    with caplog.at_level(logging.INFO, logger="autoid.progress"):
        gateway.autoid_table()
    assert [r for r in caplog.records if r.name == "autoid.progress"] == []


def progress_record(name: str, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_is_one_line_on_a_terminal_and_plain_lines_otherwise(terminal):
    stream = io.StringIO()
    handler = ProgressLineHandler(stream, terminal=terminal)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    for message in ("autoid: 5 of 30 records read", "autoid: 30 of 30 records read"):
        handler.emit(progress_record("autoid.progress", message))
    handler.emit(progress_record("autoid.run", "read done"))
    if terminal:
        assert stream.getvalue() == (
            "\r\x1b[Kautoid.progress: autoid: 5 of 30 records read"
            "\r\x1b[Kautoid.progress: autoid: 30 of 30 records read"
            "\r\x1b[Kautoid.run: read done\n"
        )
    else:
        assert stream.getvalue().splitlines() == [
            "autoid.progress: autoid: 5 of 30 records read",
            "autoid.progress: autoid: 30 of 30 records read",
            "autoid.run: read done",
        ]
