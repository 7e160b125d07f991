"""The exhaustion forecast's pure core: the Poisson interval, the dates, the history sources."""

from __future__ import annotations

import json
import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoid_lib.forecast import (
    FORECAST,
    NO_HISTORY,
    NO_NEW_IDS,
    RECORDED_RUNS,
    TRANSFER_REQUESTS,
    RecordedCapacity,
    Usage,
    arrival,
    best_usage,
    first_arrivals,
    forecast,
    poisson_cdf,
    poisson_interval,
    project_forecasts,
    seen_requests,
    usage_from_requests,
    usage_from_runs,
)
from autoid_lib.ids.generate import Capacity
from autoid_lib.plan import ProjectState, TransferRequest
from autoid_lib.records.history import recorded_capacity
from autoid_lib.snapshot import ExistingTransfer, IncomingStudy

TODAY = date(2026, 11, 28)
NOW = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)

counts = st.integers(min_value=1, max_value=5_000)
days = st.floats(min_value=0.5, max_value=3_650, allow_nan=False)
free = st.integers(min_value=1, max_value=10**9)


@given(k=st.integers(min_value=0, max_value=60), mu=st.floats(min_value=0.01, max_value=80))
def test_poisson_cdf_matches_the_sum_of_the_probabilities(k, mu):
    direct = sum(math.exp(-mu + i * math.log(mu) - math.lgamma(i + 1)) for i in range(k + 1))
    assert poisson_cdf(k, mu) == pytest.approx(direct, abs=1e-9)


def test_the_interval_matches_the_published_table():
    """Garwood's 90 % limits (e.g. Gehrels 1986, table 1/2 at S = 1.645)."""
    assert poisson_interval(0) == pytest.approx((0.0, 2.996), abs=1e-3)
    assert poisson_interval(1) == pytest.approx((0.0513, 4.744), abs=1e-3)
    assert poisson_interval(10) == pytest.approx((5.425, 16.962), abs=1e-3)


@given(k=st.integers(min_value=0, max_value=200_000))
def test_the_interval_contains_the_count(k):
    low, high = poisson_interval(k)
    assert 0 <= low <= k < high


def test_the_interval_covers_the_true_mean_about_as_often_as_it_says():
    rng = np.random.default_rng(12)
    for mean in (0.7, 3.0, 12.0, 140.0):
        draws = rng.poisson(mean, size=1_000)
        covered = sum(low <= mean <= high for low, high in map(poisson_interval, draws))
        assert covered / len(draws) >= 0.88  # exact intervals are conservative: >= 90 % nominal


@given(free=free, k=counts, d=days)
def test_the_range_contains_the_date_and_the_rate(free, k, d):
    f = forecast(free, Usage(k, d, TRANSFER_REQUESTS), TODAY)
    assert f.state == FORECAST
    assert f.rate_low < f.rate_per_week < f.rate_high
    assert TODAY <= f.earliest <= f.full_on <= f.latest
    assert f.rate_per_week == pytest.approx(k / d * 7)


@given(free=st.integers(1, 10**6), k=st.integers(1, 500), more=st.integers(2, 20))
def test_more_history_at_the_same_rate_narrows_the_range(free, k, more):
    short = forecast(free, Usage(k, 7.0, TRANSFER_REQUESTS), TODAY)
    long = forecast(free, Usage(k * more, 7.0 * more, TRANSFER_REQUESTS), TODAY)
    assert long.rate_per_week == pytest.approx(short.rate_per_week)
    assert long.rate_high - long.rate_low < short.rate_high - short.rate_low
    assert long.latest - long.earliest <= short.latest - short.earliest


@given(free=free, d=days)
def test_no_new_ids_gives_no_forecast(free, d):
    f = forecast(free, Usage(0, d, TRANSFER_REQUESTS), TODAY)
    assert f.state == NO_NEW_IDS and f.full_on is None and f.as_summary()["range"] is None
    assert f.describe().startswith("no forecast: 0 new IDs over the last")


def test_a_full_space_says_full_and_no_history_says_so():
    assert forecast(0, Usage(5, 7.0, RECORDED_RUNS), TODAY).describe().startswith("full")
    assert forecast(10, None, TODAY).state == NO_HISTORY


def test_the_sentence_states_the_basis_next_to_the_number():
    f = forecast(300, Usage(33, 56.0, TRANSFER_REQUESTS), TODAY)  # 300 / (33 / 56) = 509 days
    assert f.describe() == (
        "runs out around 2028-04-20 (2027-12-13 – 2028-10-23), "
        "at 4.1 new IDs/week over the last 8 weeks, from transfer requests"
    )
    summary = f.as_summary()
    assert summary["full_on"] == "2028-04-20" and summary["basis"] == TRANSFER_REQUESTS
    assert summary["rate_per_week"] == 4.125 and summary["window_days"] == 56.0
    assert json.loads(json.dumps(summary)) == summary


def test_a_huge_space_is_beyond_the_horizon_without_overflow():
    f = forecast(10**400, Usage(5, 7.0, TRANSFER_REQUESTS), TODAY)
    assert f.beyond_horizon and f.describe().startswith("not within 100 years")
    assert not f.within(TODAY, 50_000)  # a clipped date is no date


def test_within_uses_the_point_date():
    f = forecast(100, Usage(10, 7.0, TRANSFER_REQUESTS), TODAY)  # 70 days
    assert f.full_on == TODAY + timedelta(days=70)
    assert f.within(TODAY, 70) and not f.within(TODAY, 69)


# -- the history sources -----------------------------------------------------------------------


def test_first_arrivals_keeps_each_names_earliest_date_and_drops_the_names():
    found = first_arrivals(
        [
            ("A", "P001", "2026-11-20 10:00"),
            ("A", "P001", "2026-10-01 09:00"),
            ("A", "P002", "2026-11-21"),
            ("B", "P001", "2026-11-22 07:00:05"),
            ("A", "P003", "not a date"),
            ("", "P004", "2026-11-22"),
        ]
    )
    assert found == {
        "A": [datetime(2026, 10, 1, 9, 0), datetime(2026, 11, 21)],
        "B": [datetime(2026, 11, 22, 7, 0, 5)],
    }


def test_an_id_counts_when_its_study_arrived_not_when_a_catch_up_requested_it():
    requested = datetime(2026, 11, 28, 8, 0)
    # a catch-up serving a study of 20 days ago: its day, at noon
    assert arrival(requested, "20261108") == datetime(2026, 11, 8, 12, 0)
    assert arrival(requested, "2026-11-08") == datetime(2026, 11, 8, 12, 0)
    # dated today, requested before noon; dated later; no date: the request's time
    for dated in ("20261128", "20270101", "", "garbage"):
        assert arrival(requested, dated) == requested
    # a prior taken long before any catch-up reaches: needed when it was requested
    assert arrival(requested, "20150301") == requested
    assert arrival(requested, "20261001", reach_days=60) == datetime(2026, 10, 1, 12, 0)
    assert arrival(requested, "20261001", reach_days=30) == requested
    found = first_arrivals(
        [
            ("A", "P001", "2026-11-28 08:00", "20261108"),
            ("A", "P001", "2026-11-28 08:00", "20261110"),
            ("A", "P002", "2026-11-28 08:00"),  # without a study date: the request
        ]
    )
    assert found == {"A": [datetime(2026, 11, 8, 12, 0), requested]}


def test_requests_count_only_names_first_seen_in_the_window():
    begin, end = datetime(2026, 11, 14), datetime(2026, 11, 28)
    usage = usage_from_requests(
        [datetime(2026, 11, 1), datetime(2026, 11, 14), datetime(2026, 11, 27)], begin, end
    )
    assert usage == Usage(2, 14.0, TRANSFER_REQUESTS)


def test_recorded_runs_use_the_oldest_point_in_the_window_under_the_same_pattern():
    points = [
        RecordedCapacity(NOW - timedelta(days=80), "A", r"P\d{3}", 500),  # before the window
        RecordedCapacity(NOW - timedelta(days=50), "A", r"P\d{2}", 10),  # another pattern
        RecordedCapacity(NOW - timedelta(days=42), "A", r"P\d{3}", 640),
        RecordedCapacity(NOW - timedelta(days=7), "A", r"P\d{3}", 690),
        RecordedCapacity(NOW - timedelta(days=42), "B", r"P\d{3}", 1),
    ]
    usage = usage_from_runs(points, "A", r"P\d{3}", 700, NOW, 56.0)
    assert usage == Usage(60, 42.0, RECORDED_RUNS)
    assert usage_from_runs(points, "C", r"P\d{3}", 700, NOW, 56.0) is None
    # IDs removed since: no negative count
    assert usage_from_runs(points, "A", r"P\d{3}", 600, NOW, 56.0).new_ids == 0


def test_a_catch_up_reaching_before_the_oldest_recorded_run_spreads_over_what_it_covered():
    """The only recorded run is 2 days old, but this run's window reached back 30 days over an
    outage: its 90 new IDs came from 30 days of studies, not 2."""
    points = [RecordedCapacity(NOW - timedelta(days=2), "A", r"P\d{3}", 610)]
    usage = usage_from_runs(points, "A", r"P\d{3}", 700, NOW, 56.0, NOW - timedelta(days=30))
    assert usage == Usage(90, 30.0, RECORDED_RUNS)
    # an ordinary window, or one that began after the oldest point: the recorded span
    later = usage_from_runs(points, "A", r"P\d{3}", 700, NOW, 56.0, NOW - timedelta(days=1))
    assert usage_from_runs(points, "A", r"P\d{3}", 700, NOW, 56.0).days == 2.0 == later.days


def test_the_longer_history_wins_and_recorded_runs_win_a_tie():
    runs = Usage(3, 14.0, RECORDED_RUNS)
    requests = Usage(9, 14.0, TRANSFER_REQUESTS)
    assert best_usage(runs, requests) is runs
    assert best_usage(Usage(3, 7.0, RECORDED_RUNS), requests) is requests
    assert best_usage(None, Usage(0, 0.0, TRANSFER_REQUESTS)) is None


def _record(reports, name, summary):
    folder = reports / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")


def test_recorded_capacity_reads_the_oldest_usable_live_run_in_the_window(tmp_path):
    def summary(started, used, status="ok", mode="live"):
        project = {"project": "A", "pattern": r"P\d{3}", "capacity_used": used}
        return {"started": started, "status": status, "mode": mode, "projects": [project]}

    now = datetime.now(UTC).replace(microsecond=0)

    def name(days_ago, mode="live"):
        return f"{now - timedelta(days=days_ago):%Y%m%dT%H%M%S}Z-{mode}"

    def iso(days_ago):
        return (now - timedelta(days=days_ago)).isoformat()

    _record(tmp_path, name(90), summary(iso(90), 100))  # older than the window
    _record(tmp_path, name(40, "dry"), summary(iso(40), 200, mode="dry"))
    _record(tmp_path, name(30), summary(iso(30), 300, status="failed"))
    (tmp_path / name(25)).mkdir()  # no summary.json
    _record(tmp_path, name(20), summary(iso(20), 640))
    _record(tmp_path, name(10), summary(iso(10), 690))
    points = recorded_capacity(tmp_path, now, 56.0)
    assert points == [RecordedCapacity(now - timedelta(days=20), "A", r"P\d{3}", 640)]
    assert recorded_capacity(tmp_path / "missing", now, 56.0) == []


@settings(max_examples=50)
@given(k=st.integers(min_value=100, max_value=200_000))
def test_the_interval_of_a_large_count_is_close_to_the_normal_one(k):
    low, high = poisson_interval(k)
    spread = 1.645 * math.sqrt(k)
    assert low == pytest.approx(k - spread, abs=2 + 0.05 * spread)
    assert high == pytest.approx(k + spread, abs=2 + 0.05 * spread)


# -- a catch-up is not a rate (issue 24, item 9) -----------------------------------------------

RUN_AT = datetime(2026, 11, 28, 8, 0)  # REDCap server time of the run that forecasts
LOOKBACK = 14


def _served(arrivals, served_at):
    """The studies and planned transfers a run at RUN_AT sees, when the study that arrived
    ``i`` days ago (``arrivals[i]`` new patients that day) was served at ``served_at(i)``:
    studies served in the look-back window carry their request; those served by this run are
    its planned transfers. Each patient is new to the project."""
    studies, planned = [], []
    for days_ago, count in enumerate(arrivals, start=1):
        when = served_at(days_ago)
        if when < RUN_AT - timedelta(days=LOOKBACK):
            continue  # not modified within the window: the run does not read it
        for n in range(count):
            uid, name = f"1.2.{days_ago}.{n}", f"P{days_ago:03d}{n}"
            dated = f"{RUN_AT - timedelta(days=days_ago):%Y%m%d}"
            requested = f"{when:%Y-%m-%d %H:%M}"
            if when == RUN_AT:
                studies.append(IncomingStudy(uid, "A", "", dated))
                planned.append(TransferRequest(uid, 1, "A", name, requested))
            else:
                request = ExistingTransfer(1, "A", name, requested_date=requested)
                studies.append(IncomingStudy(uid, "A", "", dated, (request,)))
    return seen_requests(studies, planned)


def _forecast_at_run(requests, used):
    project = ProjectState("A", "A", r"P\d{4}", capacity=Capacity(r"P\d{4}", 10_000, used))
    return project_forecasts(
        [project],
        requests,
        (),
        now=RUN_AT.replace(tzinfo=UTC),
        window_begin=RUN_AT - timedelta(days=LOOKBACK),
        window_end=RUN_AT,
        window_days=56.0,
    )["A"]


@settings(max_examples=60, deadline=None)
@given(
    arrivals=st.lists(st.integers(0, 6), min_size=70, max_size=70),
    outage=st.integers(1, 50),
    since=st.integers(0, LOOKBACK),
)
def test_a_catch_up_gives_the_forecast_daily_runs_give(arrivals, outage, since):
    """The same arrivals served by daily runs (each study the morning after its day) or, after
    runs stopped for ``outage`` days, by one catch-up run ``since`` days before this run: the
    same rate, the same date. On main the catch-up's backlog counted at its request time: N
    days of IDs inside one look-back window."""
    used = 5_000 + sum(arrivals)
    daily = _forecast_at_run(_served(arrivals, lambda i: RUN_AT - timedelta(days=i - 1)), used)
    catch_up_at = RUN_AT - timedelta(days=since)

    def caught_up(i):
        return catch_up_at if since < i <= since + outage else RUN_AT - timedelta(days=i - 1)

    after = _forecast_at_run(_served(arrivals, caught_up), used)
    assert after.usage == daily.usage
    assert after.full_on == daily.full_on
