"""The run window: lookback, catch-up after an outage, and the gap beyond the maximum (pure)."""

from datetime import datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from autoid_lib.window import OVERLAP, gap_anomaly, run_window

END = datetime(2026, 12, 4, 12, 0)


def test_an_ordinary_run_reads_lookback_days():
    window = run_window(END, 14, END - timedelta(minutes=5), 60)
    assert window.begin == END - timedelta(days=14)
    assert not window.extended and window.describe() == "" and gap_anomaly(window) is None


def test_a_first_run_and_a_clock_stepped_back_read_lookback_days():
    assert run_window(END, 14, None, 60).begin == END - timedelta(days=14)
    stepped_back = run_window(END, 14, END + timedelta(hours=1), 60)
    assert stepped_back.begin == END - timedelta(days=14) and not stepped_back.extended


def test_after_a_20_day_outage_the_window_reaches_back_to_the_last_success():
    window = run_window(END, 14, END - timedelta(days=20), 60)
    assert window.begin == END - timedelta(days=20) - OVERLAP
    assert window.extended and window.catch_up_days == 7
    assert window.describe() == "extended to cover the 20 days since the last successful run"
    assert gap_anomaly(window) is None


def test_beyond_the_maximum_the_gap_is_reported_with_the_command_that_closes_it():
    window = run_window(END, 14, END - timedelta(days=100), 60)
    assert window.begin == END - timedelta(days=60)
    gap = gap_anomaly(window)
    assert gap is not None and gap.kind == "window_gap"
    assert gap.action.endswith("--lookback-days 101")  # 100 days and the hour of overlap


@given(
    lookback=st.integers(1, 400),
    extra=st.integers(0, 400),
    since=st.one_of(st.none(), st.integers(-10_000, 600_000)),  # minutes before END
)
def test_the_window_covers_everything_since_the_last_success_or_reports_the_gap(
    lookback, extra, since
):
    maximum = lookback + extra
    last = None if since is None else END - timedelta(minutes=since)
    window = run_window(END, lookback, last, maximum)
    assert window.end == END
    assert END - timedelta(days=maximum) <= window.begin <= END - timedelta(days=lookback)
    if last is not None and last <= END:
        covered = window.begin <= last - OVERLAP
        assert covered != (gap_anomaly(window) is not None)
