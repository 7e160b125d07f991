"""The forecast in a real run: a sandbox whose IDs were first used at a known rate."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from scenarios import autoid, project, study, transfer

from autoid_lib.config import load_settings
from autoid_lib.forecast import FORECAST, FULL, NO_NEW_IDS, TRANSFER_REQUESTS
from autoid_lib.records.summary import run_summary
from autoid_lib.run import run_autoid

NOW = datetime(2026, 11, 28, 8, 0)  # the sandbox's local time; the run's clock is this in UTC
WEEKS, PER_WEEK, USED, SIZE = 12, 5, 700, 1000


@pytest.fixture
def paced(sandbox_factory):
    """Pilot (P\\d{3}): 640 IDs from long ago, then 5 a week for 12 weeks, each first requested
    on its own day; Quiet: IDs but no study lately; Full: every ID of F\\d in use."""
    sb = sandbox_factory(seed="empty", now=NOW - timedelta(weeks=WEEKS + 4))
    sb.add_rows(
        "projects",
        [
            project("1", "Pilot", "PILOT", r"P\d{3}"),
            project("2", "Quiet", "QUIET", r"Q\d{3}"),
            project("3", "Full", "FULL", r"F\d"),
        ],
    )
    old = USED - WEEKS * PER_WEEK
    rows = [autoid(n, "Pilot", f"old{n}", f"P{n:03d}") for n in range(old)]
    rows += [autoid(1000 + n, "Quiet", f"q{n}", f"Q{n:03d}") for n in range(40)]
    rows += [autoid(2000 + n, "Full", f"f{n}", f"F{n}") for n in range(10)]
    sb.add_rows("autoid", rows)
    for n in range(WEEKS * PER_WEEK):  # evenly: one new patient every 1.4 days
        when = NOW - timedelta(days=WEEKS * 7) + timedelta(days=n * 7 / PER_WEEK, hours=1)
        sb.set_now(when)
        uid, value = f"1.2.826.0.1.{n}", f"P{old + n:03d}"
        sb.add_rows("autoid", [autoid(3000 + n, "Pilot", f"new{n}", value)])
        sb.add_rows(
            "incoming",
            [
                study(uid, "PILOT", f"new{n}", date=f"{when:%Y%m%d}"),
                transfer(uid, 1, "Pilot", value, transfer_requested_date=f"{when:%Y-%m-%d %H:%M}"),
            ],
        )
    sb.set_now(NOW)
    return sb


def _settings(sb, tmp_path, **run):
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    return replace(settings, run=replace(settings.run, server_timezone="UTC", **run))


def test_the_forecast_date_is_in_its_range_and_the_range_covers_the_true_date(paced, tmp_path):
    result = run_autoid(
        _settings(paced, tmp_path),
        dry_run=True,
        now=NOW.replace(tzinfo=UTC),
        lookback_days=WEEKS * 7,
    )
    assert result.error is None
    pilot = result.forecasts["Pilot"]
    true_date = NOW.date() + timedelta(weeks=(SIZE - USED) / PER_WEEK)  # 60 weeks from now
    assert pilot.state == FORECAST and pilot.usage.basis == TRANSFER_REQUESTS
    assert pilot.usage.new_ids == WEEKS * PER_WEEK
    assert pilot.rate_per_week == pytest.approx(PER_WEEK)
    assert pilot.earliest <= pilot.full_on <= pilot.latest
    assert pilot.earliest <= true_date <= pilot.latest
    assert abs((pilot.full_on - true_date).days) <= 1
    assert result.forecasts["Quiet"].state == NO_NEW_IDS
    assert result.forecasts["Full"].state == FULL
    # the forecast reads nothing more: the dry run's three table reads (names, one chunk each)
    assert result.api_requests == 6 == paced.total_requests()
    entry = next(p for p in run_summary(result)["projects"] if p["project"] == "Pilot")
    assert entry["forecast"]["full_on"] == pilot.full_on.isoformat()
    assert (
        "at 5 new IDs/week over the last 12 weeks, from transfer requests"
        in (entry["forecast"]["text"])
    )
    assert not any(a.kind == "forecast_warning" for a in result.plan.anomalies)


def test_a_date_inside_the_warning_window_is_an_anomaly(paced, tmp_path):
    settings = _settings(paced, tmp_path, forecast_warn_days=500)
    result = run_autoid(
        settings, dry_run=True, now=NOW.replace(tzinfo=UTC), lookback_days=WEEKS * 7
    )
    warnings = [a for a in result.plan.anomalies if a.kind == "forecast_warning"]
    assert [a.project for a in warnings] == [
        "Pilot"
    ]  # Full has no date: it is full, flagged as exhausted
    assert "runs out around" in warnings[0].message
    assert result.status == "attention"


def test_the_default_lookback_sees_two_weeks_and_still_covers_the_true_date(paced, tmp_path):
    result = run_autoid(_settings(paced, tmp_path), dry_run=True, now=NOW.replace(tzinfo=UTC))
    pilot = result.forecasts["Pilot"]
    true_date = NOW.date() + timedelta(weeks=(SIZE - USED) / PER_WEEK)
    assert pilot.usage.days == 14 and 9 <= pilot.usage.new_ids <= 11
    assert pilot.earliest <= true_date <= pilot.latest


def test_the_report_shows_the_forecast_and_its_basis(paced, tmp_path):
    from autoid_lib import report

    result = run_autoid(
        _settings(paced, tmp_path), dry_run=True, now=NOW.replace(tzinfo=UTC), lookback_days=84
    )
    notes = report.forecast_notes(result).data
    assert result.forecasts["Pilot"].describe() in notes
    assert "no forecast: 0 new IDs over the last 12 weeks, from transfer requests" in notes
    assert "full: no free ID left" in notes
    assert report.capacity_chart(result).data[:4] == b"\x89PNG"


def test_a_broken_forecast_never_stops_the_run(paced, tmp_path, caplog):
    settings = _settings(paced, tmp_path)
    result = run_autoid(settings, dry_run=True, now=NOW.replace(tzinfo=UTC), recorded=[None])
    assert result.error is None and result.plan is not None
    assert result.forecasts == {} and "forecast skipped after AttributeError" in caplog.text


def test_after_an_outage_the_catch_up_forecasts_what_check_said_and_does_not_swing(
    sandbox_factory, tmp_path
):
    """Issue 24, item 9: one new patient a day; runs stopped for 30 days (more than the
    14-day look-back) while studies kept arriving. check just before the catch-up and the
    catch-up run itself give the same date, and the next day's run does not swing to an early
    date and warn (on main: check saw 0 new IDs, the next run counted 30 days of IDs in 14)."""
    from autoid_lib.check import check_setup

    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)  # check reads the real clock
    outage, served_days = 30, 30
    sb = sandbox_factory(seed="empty", now=now - timedelta(days=outage + served_days + 1))
    sb.add_rows("projects", [project("1", "Pilot", "PILOT", r"P\d{3}")])
    sb.add_rows("autoid", [autoid(n, "Pilot", f"old{n}", f"P{n:03d}") for n in range(600)])
    for days_ago in range(outage + served_days, 0, -1):  # each day's patient, at 10:00
        when = (now - timedelta(days=days_ago)).replace(hour=10, minute=0, second=0)
        sb.set_now(when)
        n, uid = 600 + days_ago, f"1.2.826.0.2.{days_ago}"
        rows = [study(uid, "PILOT", f"new{days_ago}", date=f"{when:%Y%m%d}")]
        if days_ago > outage:  # served the next morning by the daily runs before the outage
            sb.add_rows("autoid", [autoid(n, "Pilot", f"new{days_ago}", f"P{n:03d}")])
            served = when + timedelta(hours=22)
            rows.append(
                transfer(
                    uid, 1, "Pilot", f"P{n:03d}", transfer_requested_date=f"{served:%Y-%m-%d %H:%M}"
                )
            )
        sb.add_rows("incoming", rows)
        if days_ago == outage + 1:  # the last successful run before the outage
            last = when + timedelta(hours=22)
            sb.set_now(last)
            settings = _settings(sb, tmp_path, forecast_warn_days=250)
            assert run_autoid(settings, now=last.replace(tzinfo=UTC)).error is None
    sb.set_now(None)

    checked = check_setup(settings)
    said = next(text for line, text in checked.forecasts.items() if line.startswith("Pilot:"))
    caught_up = run_autoid(settings)
    assert caught_up.error is None and caught_up.window.extended
    pilot = caught_up.forecasts["Pilot"]
    assert said == pilot.describe()
    assert pilot.usage.basis == TRANSFER_REQUESTS and pilot.usage.days == 14
    assert 13 <= pilot.usage.new_ids <= 15  # one a day, not the 30 days served at once
    assert pilot.earliest <= now.date() + timedelta(days=pilot.free) <= pilot.latest

    sb.set_now(now + timedelta(days=1))
    next_day = run_autoid(settings, now=(now + timedelta(days=1)).replace(tzinfo=UTC))
    after = next_day.forecasts["Pilot"]
    assert pilot.rate_low <= after.rate_per_week <= pilot.rate_high  # the same rate, no swing
    assert not any(a.kind == "forecast_warning" for a in caught_up.all_anomalies())
    assert not any(a.kind == "forecast_warning" for a in next_day.all_anomalies())
