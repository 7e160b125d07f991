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
from pathlib import Path
from zoneinfo import ZoneInfo

from autoid_lib.apply import apply_plan, verify_plan
from autoid_lib.config import Settings
from autoid_lib.errors import AutoIdError, LeaseHeld
from autoid_lib.failures import FailureKind, failure_kind
from autoid_lib.forecast import (
    RecordedCapacity,
    forecast_anomalies,
    project_forecasts,
    seen_requests,
)
from autoid_lib.lock import run_lock
from autoid_lib.plan import Anomaly, PlanSettings, plan
from autoid_lib.records.anomaly_log import remember_run
from autoid_lib.records.last_success import read_last_success, record_success
from autoid_lib.redcap import clock as redcap_clock
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.redcap.table_read import TableReader
from autoid_lib.result import RunError, RunResult
from autoid_lib.server_clock import confirmation_key, judge, tolerance, zone_offset
from autoid_lib.snapshot import Snapshot, with_transfers
from autoid_lib.vocab import AnomalyKind, plural
from autoid_lib.window import gap_anomaly, run_window

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
    history_dir: Path | None = None,
    recorded: Iterable[RecordedCapacity] = (),
    full_read: bool = False,
) -> RunResult:
    """Run the job once under the lock; raises ``LockHeld`` if another run holds it.

    ``history_dir`` (default: the config's reports folder) keeps where the last successful live
    run's window ended, so that the window reaches back over an outage. ``recorded`` is what
    earlier runs' summary.json files say about capacity (the forecast's best history,
    ``records.history``); without it the forecast uses the transfer requests.
    """
    started = now or datetime.now(UTC)
    if started.tzinfo is None:  # as on the command line: a naive time is UTC
        started = started.replace(tzinfo=UTC)
    history_dir = history_dir or settings.run.reports_dir
    clock = time.perf_counter()
    with run_lock(settings.run.lock_file):  # the cheap local gate first, then the REDCap lease
        window = run_window(
            server_time(started, settings.run.server_timezone),
            lookback_days or settings.run.lookback_days,
            read_last_success(history_dir),
            settings.run.max_catchup_days,
        )
        result = RunResult(
            mode="dry" if dry_run else "live",
            started=started,
            window_begin=window.begin,
            window_end=window.end,
            lookback_days=window.lookback_days,
            window=window,
        )
        gateway = RedcapGateway(settings.redcap)
        zone = settings.run.server_timezone
        # the run's clock against the machine's: 0, unless a caller passed ``now``
        shift = started - datetime.now(UTC) if now is not None else timedelta(0)
        tables = TableReader(
            gateway,
            settings.cache,
            now=started,
            server_now=server_time(started, zone),
            full_read=full_read,
            clock_key=confirmation_key(settings.redcap.urls["autoid"], zone),
            kit_offset=zone_offset(zone, started),
            **_mark_settings(settings),
        )
        lease = None if dry_run else redcap_lease(settings, gateway)
        checked = _ClockCheck(settings, gateway, tables, shift)
        try:
            _steps(
                result, settings, gateway, tables, dry_run, projects, rng, lease, recorded, checked
            )
        finally:
            result.api_requests = gateway.requests
            result.api_bytes = gateway.bytes_received
            result.table_reads = {name: read.describe() for name, read in tables.reads.items()}
            result.duration_s = time.perf_counter() - clock
        if not dry_run and result.status.completed and not projects:  # not failed, not yielded
            record_success(history_dir, window.end)
        if result.status.completed and not projects:  # a partial view resolves nothing
            anomalies = [a.__dict__ for a in result.all_anomalies()]
            result.changes = remember_run(history_dir, anomalies, started, save=not dry_run)
    log.info("%s", result.headline)
    return result


def _steps(
    result,
    settings,
    gateway,
    tables,
    dry_run,
    projects,
    rng,
    lease=None,
    recorded=(),
    clock_check=None,
) -> None:
    """Read, plan; then, only when the plan writes: the lease, the decisive reads again, the
    plan again, write, verify (docs/run.md, "Quiet runs" and "Two installations, one REDCap").
    A run whose plan writes nothing takes no lease and writes nothing to REDCap."""
    at = _Step("read")
    drawn = rng.getstate() if rng is not None else None  # the plan again draws as the first
    try:
        with _timed(result, "read"):
            snapshot = _read(result, gateway, tables, at)
        at.step = "plan"
        with _timed(result, "plan"):
            _plan(result, settings, snapshot, projects, rng, recorded, tables)
        log.info("plan: %s", result.plan.describe())
        if dry_run or result.plan.is_empty:
            return  # quiet: nothing to write, so nothing to race for
        if lease is not None:
            with _timed(result, "lease"):
                snapshot = _read_under_lease(
                    result, snapshot, gateway, tables, lease, clock_check, at
                )
            at.step = "plan again"
            if drawn is not None:
                rng.setstate(drawn)
            with _timed(result, "plan"):
                late = clock_check.anomaly if clock_check else None
                _plan(result, settings, snapshot, projects, rng, recorded, tables, late)
            log.info("plan again under the lease: %s", result.plan.describe())
            if result.plan.is_empty:
                return  # another installation did the work meanwhile
        at.step = "write"
        with _timed(result, "write"):
            applied = apply_plan(
                result.plan, gateway, snapshot.autoid_rows, autoid_now=tables.autoid_rows_now
            )
        log.info(
            "wrote %d AutoID row(s) and transfer requests on %d study(ies)",
            len(applied.autoid_records),
            applied.transfer_studies,
        )
        at.step = "verify"
        with _timed(result, "verify"):
            result.problems = verify_plan(
                result.plan, gateway, applied.autoid_rows, autoid_now=tables.autoid_rows_now
            )
        _renew_mark(tables, lease)
    except AutoIdError as error:
        lease_request = " lease " in f" {getattr(error, 'operation', '')} "  # the gateway's
        kind = failure_kind(
            type(error).__name__, getattr(error, "kind", None), lease_request=lease_request
        )
        result.error = RunError(at.step, type(error).__name__, str(error), kind)
        if isinstance(error, LeaseHeld):  # a yield: the plan made before the lease is void
            result.plan, result.forecasts = None, {}
        log.error("run failed at %s: %s", at.step, error)
    except Exception as error:  # recorded by type only: see module docstring
        result.error = RunError(
            at.step, type(error).__name__, "internal error; see the log", FailureKind.INTERNAL
        )
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("run failed at %s with %s:\n%s", at.step, type(error).__name__, frames)
    finally:
        if lease is not None and lease.sent_utc is not None:  # taken, or tried
            gateway.write_guard = None
            _release(result, lease)


class _Step:
    """Where the run is, for the failure's step (the report and exit status name it)."""

    def __init__(self, step: str):
        self.step = step


def _read(result: RunResult, gateway, tables: TableReader, at: _Step) -> Snapshot:
    """The first look, without a lease: AutoID, Projects (both through the local copy) and the
    window's studies."""
    at.step = "read AutoID table"
    autoid_rows, _ = tables.autoid_table()
    at.step = "read projects"
    project_records = tables.project_records()
    tables.save()  # both tables read completely: the next run's local copy
    at.step = "read incoming studies"
    # open-ended: a study modified after the window's end on REDCap's clock (skew, or the hour
    # a DST fall-back repeats) is read now, not an hour later
    studies = gateway.incoming_studies(result.window_begin, None, in_one=tables.window_in_one())
    tables.note_window(len(studies))
    log.info(
        "read %d project(s), %d study(ies) in the window, %d AutoID row(s)",
        len(project_records), len(studies), len(autoid_rows),
    )  # fmt: skip
    return Snapshot(
        projects=tuple(project_records),
        studies=tuple(studies),
        autoid_rows=tuple(autoid_rows),
        window_begin=result.window_begin,
        window_end=result.window_end,
    )


def _read_under_lease(
    result: RunResult,
    snapshot: Snapshot,
    gateway,
    tables: TableReader,
    lease,
    clock_check,
    at: _Step,
) -> Snapshot:
    """The lease, then what another installation may have written since the first look, read
    again (docs/run.md, "Two installations, one REDCap"): AutoID (the decisive read, after the
    ticket) and the transfer requests of the studies the plan writes to. A plan made before
    the lease is never written: the caller plans again from what this returns."""
    at.step = "lease"
    # the lease's reads and writes cost about what the first look did: room for them first,
    # so that no pause for the request ceiling falls while the ticket runs out
    gateway.make_room(gateway.requests + 10)
    lease.take()
    if clock_check is not None:  # before the reads again: they depend on REDCap's clock
        at.step = "read AutoID (REDCap's clock)"
        clock_check.check(lease)
    at.step = "read AutoID table again"
    autoid_rows, lease_rows = tables.autoid_again()
    at.step = "lease"
    reread: list = []
    if lease.settle(lease_rows, lambda: _reread(tables, reread)):
        autoid_rows = reread[0]
    gateway.write_guard = lease.check
    projects = snapshot.projects
    if tables.clock_doubt():  # the first look trusted a confirmation this run disproved
        at.step = "read projects again"
        projects = tuple(tables.project_records_again())
    at.step = "read transfer requests again"
    planned = result.plan.transfers if result.plan else ()
    touched = sorted({t.study_uid for t in planned})
    fresh = gateway.transfers_of(touched) if touched else {}
    return replace(
        snapshot,
        projects=projects,
        autoid_rows=tuple(autoid_rows),
        studies=with_transfers(snapshot.studies, fresh),
    )


def _plan(
    result: RunResult, settings, snapshot: Snapshot, projects, rng, recorded, tables, late=None
) -> None:
    """The plan of ``snapshot``, with the run's own anomalies and the forecast."""
    result.plan = plan(snapshot, _plan_settings(settings, result, projects, rng))
    gap = gap_anomaly(result.window) if result.window else None
    found = [a for a in (gap, late, *copy_anomalies(tables)) if a is not None]
    if found:
        result.plan = replace(result.plan, anomalies=(*result.plan.anomalies, *found))
    _forecast(result, settings, snapshot, recorded)


def _mark_settings(settings: Settings) -> dict:
    """Whose marks the local copy keeps (the lease's installation label), and whether by a
    fixed name (the AutoID token may not delete its older marks): ``redcap.copy_mark``."""
    from autoid_lib.lease import lease_settings
    from autoid_lib.redcap.lease import LeaseState, state_path

    chosen = lease_settings(settings.lease, timeout_s=settings.redcap.timeout_s)
    may_delete = chosen.delete
    if may_delete is None:
        may_delete = LeaseState(state_path(settings.run.lock_file)).may_delete
    return {"installation": chosen.installation, "mark_fixed": may_delete is False}


def _renew_mark(tables: TableReader, lease=None) -> None:
    """The copy's new mark after a live run (``TableReader.renew_mark``); the older mark goes
    in the lease's release, one delete for both. A mark that cannot be written costs the next
    run a whole read (AutoID's copy stays as it was), never the run."""
    try:
        tables.renew_mark(lease.also_give_back if lease is not None else None)
    except AutoIdError as error:
        log.warning("could not write the local copy's mark (the next run reads whole): %s", error)


def copy_anomalies(tables: TableReader) -> list[Anomaly]:
    """What the AutoID read saw that a data manager must hear of: REDCap went back in time
    (restored from a backup), or AutoID rows were deleted since the last read."""
    found = []
    if tables.went_back:
        found.append(
            Anomaly(
                AnomalyKind.REDCAP_WENT_BACK,
                "",
                f"{tables.went_back}. This run read AutoID whole and planned from what REDCap "
                "holds now",
                "Ask REDCap's administrators what was restored and from when; studies sent "
                "since then may carry pseudonyms AutoID no longer holds (autoid audit lists "
                "them)",
            )
        )
    read = tables.reads.get("autoid")
    if read is not None and read.deleted:
        found.append(
            Anomaly(
                AnomalyKind.AUTOID_ROWS_DELETED,
                "",
                f"{plural(read.deleted, 'AutoID row')} deleted in REDCap since the last run "
                "(pseudonyms of patients the kit had served)",
                "Find out who deleted them and why; a patient whose row is gone gets a new ID "
                "at the next study, and autoid audit lists what was sent under the old one",
            )
        )
    return found


def redcap_lease(settings: Settings, gateway: RedcapGateway):
    """The run's REDCap lease, or None if ``[lease] enabled = false``."""
    from autoid_lib.lease import lease_settings
    from autoid_lib.redcap.lease import LeaseState, RedcapLease, state_path

    chosen = lease_settings(settings.lease, timeout_s=settings.redcap.timeout_s)
    if not chosen.enabled:
        return None
    state = LeaseState(state_path(settings.run.lock_file))
    return RedcapLease(gateway, chosen, state, timeout_s=settings.redcap.timeout_s)


class _ClockCheck:
    """Every writing run's check of REDCap's clock (docs/run.md, "REDCap's clock"): its own
    lease ticket, written a moment ago, must be among REDCap's changes since the kit's idea
    of REDCap's time when it was sent, minus the tolerance. 1 request; when it is missing,
    6-7 more measure the offset, and the run reads whole with an anomaly naming the setting."""

    def __init__(self, settings: Settings, gateway: RedcapGateway, tables: TableReader, shift):
        self.settings, self.gateway, self.tables, self.shift = settings, gateway, tables, shift
        self.anomaly: Anomaly | None = None

    def check(self, lease) -> None:
        sent = getattr(lease, "sent_utc", None)
        if sent is None or not lease.record:
            return
        zone, overlap = self.settings.run.server_timezone, self.settings.cache.overlap_minutes
        bound = server_time(sent + self.shift, zone) - tolerance(overlap)
        if redcap_clock.confirm(self.gateway, lease.record, bound):
            self.tables.confirm_clock(True)
            return
        measured = redcap_clock.measure(self.gateway, lease.record, sent)
        verdict = judge(measured, zone, sent, overlap, shift=self.shift)
        why = "REDCap's clock is not confirmed (this run's lease ticket was not among its changes)"
        self.tables.confirm_clock(False, why)
        log.warning("%s: %s", why, verdict.message)
        if verdict.within:  # one answer lacked the ticket, seven agree on the clock: read whole
            return
        self.anomaly = Anomaly(
            AnomalyKind.REDCAP_CLOCK,
            "",
            f"this run's own lease ticket was missing from REDCap's changes since it was "
            f"written: {verdict.message}. This run read AutoID and Projects whole",
            "Set [run] server_timezone to REDCap's PHP date.timezone (autoid check measures "
            "it); until then every run reads whole",
        )


def _reread(tables: TableReader, into: list) -> list[dict]:
    rows, leases = tables.autoid_again()
    into.append(rows)
    return leases


def _release(result: RunResult, lease) -> None:
    """Give the lease back. A failed release is an anomaly of the run (``lease_not_released``,
    with REDCap's cause and what to change): the ticket stays in REDCap until it expires or
    this installation's next run removes it."""
    release_lease(lease)
    try:
        result.lease = lease.summary()
        anomaly = release_anomaly(lease)
        if anomaly is not None:
            result.run_anomalies.append(anomaly)
    except Exception as error:  # never hide the run's own outcome behind the release's
        log.warning("could not report the REDCap lease's release: %s", type(error).__name__)


def release_lease(lease) -> None:
    """Give the lease back, for every writer (run, repair); never hides the writer's own
    outcome: a failure is kept in ``lease.release_failure`` (``release_anomaly``)."""
    try:
        lease.release()
    except Exception as error:  # release() keeps REDCap's failures itself; anything else
        log.warning("could not release the REDCap lease: %s", type(error).__name__)


def release_anomaly(lease) -> Anomaly | None:
    """The ``lease_not_released`` anomaly of a release that failed, or None."""
    from autoid_lib.lease import not_released_anomaly

    failure = lease.release_failure
    if failure is None:
        return None
    return not_released_anomaly(
        failure.record,
        failure.cause,
        failure.expires,
        kind=failure.kind,
        token=lease.gateway.settings.tokens["autoid"].source,
        tried_delete=failure.tried_delete,
    )


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
    """The forecast over the look-back span, never the catch-up window (``autoid_lib.forecast``
    module docstring): ``autoid check`` counts the same way, so both give the same date."""
    plan = result.plan
    if plan is None:
        return
    window = result.window
    caught_up = window is not None and window.extended
    result.forecasts = project_forecasts(
        plan.projects,
        seen_requests(snapshot.studies, plan.transfers),
        recorded,
        now=result.started,
        window_begin=result.window_end - timedelta(days=result.lookback_days),
        window_end=result.window_end,
        window_days=7.0 * settings.run.forecast_weeks,
        reach_days=settings.run.max_catchup_days,
        since=result.started - (result.window_end - result.window_begin) if caught_up else None,
    )
    warnings = forecast_anomalies(
        result.forecasts,
        plan.anomalies,
        result.window_end.date(),
        settings.run.forecast_warn_days,
    )
    if warnings:
        result.plan = replace(plan, anomalies=(*plan.anomalies, *warnings))


def _plan_settings(settings: Settings, result: RunResult, projects, rng) -> PlanSettings:
    generator = None
    if settings.run.external_generator:
        from autoid_lib.ids.generate import ExternalGenerator

        generator = ExternalGenerator(
            settings.run.external_generator, env_names=settings.run.external_generator_env
        ).generate_ids
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
