"""One auto-ID run: lock, read everything, plan, apply, verify — in that order, fail closed.

Reads happen first and completely; any failed or invalid read ends the run before a single
write. Each step is timed and the result records the step that failed, so the report and the
exit status can say where. Unexpected errors are recorded by type only: their text may hold
data the kit must not show.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from autoid_lib.apply import apply_plan, verify_plan
from autoid_lib.config import Settings
from autoid_lib.errors import AutoIdError
from autoid_lib.forecast import (
    RecordedCapacity,
    forecast_anomalies,
    project_forecasts,
)
from autoid_lib.lock import run_lock
from autoid_lib.plan import PlanSettings, plan
from autoid_lib.redcap import RedcapGateway
from autoid_lib.result import RunError, RunResult
from autoid_lib.snapshot import Snapshot

log = logging.getLogger("autoid.run")


def server_time(moment: datetime, timezone: str = "") -> datetime:
    """``moment`` as REDCap's naive local time (its clock filters dateRangeBegin)."""
    zone = ZoneInfo(timezone) if timezone else None
    return moment.astimezone(zone).replace(tzinfo=None, microsecond=0)


def run_autoid(
    settings: Settings,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    lookback_days: int | None = None,
    projects: Iterable[str] | None = None,
    rng: random.Random | None = None,
    recorded: Iterable[RecordedCapacity] = (),
) -> RunResult:
    """Run the job once under the lock; raises ``LockHeld`` if another run holds it.

    ``recorded`` is what earlier runs' summary.json files say about capacity (the forecast's
    best history, ``records.history``); without it the forecast uses the transfer requests.
    """
    started = now or datetime.now(UTC)
    if started.tzinfo is None:  # as on the command line: a naive time is UTC
        started = started.replace(tzinfo=UTC)
    days = lookback_days or settings.run.lookback_days
    window_end = server_time(started, settings.run.server_timezone)
    result = RunResult(
        mode="dry" if dry_run else "live",
        started=started,
        window_begin=window_end - timedelta(days=days),
        window_end=window_end,
        lookback_days=days,
    )
    clock = time.perf_counter()
    with run_lock(settings.run.lock_file):
        gateway = RedcapGateway(settings.redcap)
        try:
            _steps(result, settings, gateway, dry_run, projects, rng, recorded)
        finally:
            result.api_requests = gateway.requests
            result.duration_s = time.perf_counter() - clock
    log.info("%s", result.headline)
    return result


def _steps(result, settings, gateway, dry_run, projects, rng, recorded=()) -> None:
    step = "read"
    try:
        with _timed(result, "read"):
            step = "read projects"
            project_records = gateway.project_records()
            step = "read incoming studies"
            studies = gateway.incoming_studies(result.window_begin, result.window_end)
            step = "read AutoID table"
            autoid_rows = gateway.autoid_rows()
        snapshot = Snapshot(
            projects=tuple(project_records),
            studies=tuple(studies),
            autoid_rows=tuple(autoid_rows),
            window_begin=result.window_begin,
            window_end=result.window_end,
        )
        step = "plan"
        with _timed(result, "plan"):
            result.plan = plan(snapshot, _plan_settings(settings, result, projects, rng))
            _forecast(result, settings, snapshot, recorded)
        log.info("plan: %s", result.plan.describe())
        if dry_run or result.plan.is_empty:
            return
        step = "write"
        with _timed(result, "write"):
            applied = apply_plan(result.plan, gateway)
        log.info(
            "wrote %d AutoID row(s) and transfer requests on %d study(ies)",
            len(applied.autoid_records),
            applied.transfer_studies,
        )
        step = "verify"
        with _timed(result, "verify"):
            result.problems = verify_plan(result.plan, gateway)
    except AutoIdError as error:
        result.error = RunError(step, type(error).__name__, str(error))
        log.error("run failed at %s: %s", step, error)
    except Exception as error:  # recorded by type only: see module docstring
        result.error = RunError(step, type(error).__name__, "internal error; see the log")
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("run failed at %s with %s:\n%s", step, type(error).__name__, frames)


def _forecast(result: RunResult, settings: Settings, snapshot: Snapshot, recorded) -> None:
    """Each project's exhaustion forecast, and an anomaly for a date inside the warning window.

    Advisory: a bug here is logged (by type) and leaves the run without forecasts; it never
    stops the run from serving studies.
    """
    try:
        _forecast_steps(result, settings, snapshot, recorded)
    except Exception as error:
        result.forecasts = {}
        log.error("forecast skipped after %s", type(error).__name__)


def _forecast_steps(result: RunResult, settings: Settings, snapshot: Snapshot, recorded) -> None:
    requests = [
        (t.project_name, t.name, t.requested_date)
        for study in snapshot.studies
        for t in study.transfer_requests
    ]
    requests += [(t.project_name, t.pseudonym, t.requested_date) for t in result.plan.transfers]
    result.forecasts = project_forecasts(
        result.plan.projects,
        requests,
        recorded,
        now=result.started,
        window_begin=result.window_begin,
        window_end=result.window_end,
        window_days=7.0 * settings.run.forecast_weeks,
    )
    warnings = forecast_anomalies(
        result.forecasts,
        result.plan.anomalies,
        result.window_end.date(),
        settings.run.forecast_warn_days,
    )
    if warnings:
        result.plan = replace(result.plan, anomalies=(*result.plan.anomalies, *warnings))


def _plan_settings(settings: Settings, result: RunResult, projects, rng) -> PlanSettings:
    generator = None
    if settings.run.external_generator:
        from autoid_lib.ids.generate import ExternalGenerator

        generator = ExternalGenerator(settings.run.external_generator).generate_ids
    return PlanSettings(
        hasher=settings.run.hasher(),
        requested_at=f"{result.window_end:%Y-%m-%d %H:%M}",
        capacity_warn_at=settings.run.capacity_warn_at,
        projects=frozenset(projects) if projects else None,
        generate_ids=generator,
        rng=rng,
    )


class _timed:
    """Adds the block's wall time to ``result.timings[name]``."""

    def __init__(self, result: RunResult, name: str):
        self.result, self.name = result, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.result.timings[self.name] = time.perf_counter() - self.start
        return False
