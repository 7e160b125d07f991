"""``autoid repair`` step by step: lock, read all history, plan, (write, re-read), record.

Under the run lock, so no run plans from a half-repaired table. Reads come first and completely
(the whole AutoID table, Projects, all of Incoming with the forwarder's fields) and the hash
scheme recorded in AutoID is checked: a failed read or a changed scheme ends the repair before
any write. An ``--apply`` with something to write takes the REDCap lease, as a run's writes do
(docs/run.md, "Two installations, one REDCap"): its ticket, then everything read again (AutoID
first: the decisive read) and planned again; another installation's live run makes the repair
back off (``LeaseHeld``, exit 3) before any write. A repair with nothing to write leaves no
trace in REDCap. Before it sends studies again it reads AutoID once more, as a run does
(``second_look``).

Writes go in the order that makes a cut-off repair safe and completable: retire rows, then
create rows, then (``resend``) new transfer requests; the plan is derived from state, so the
next ``repair --apply`` finishes whatever was cut off. After writing, everything is read again
and planned again: a repair that is not a fixed point is reported as failed.

The record is a folder ``<reports_dir>/<UTC time>-repair/`` with ``repair.html``,
``worksheet.csv`` and ``summary.json`` (files 0600, folder 0700), listed in ``index.html``.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from autoid_lib.config import Settings
from autoid_lib.errors import AutoIdError, ConcurrentWriter, LeaseHeld
from autoid_lib.hash_scheme import fingerprint_to_record
from autoid_lib.lock import run_lock
from autoid_lib.package_data import templates_dir
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.redcap.second_look import foreign_rows
from autoid_lib.repair.plan import RepairPlan, RepairSettings, plan_repair
from autoid_lib.repair.report import Ending, repair_html, status, worksheet_csv
from autoid_lib.run import redcap_lease, release_lease, server_time
from autoid_lib.snapshot import Snapshot

log = logging.getLogger("autoid.repair")

MODE = "repair"
REPORT_FILE, WORKSHEET_FILE, SUMMARY_FILE = "repair.html", "worksheet.csv", "summary.json"
SUMMARY_SCHEMA = 1


@dataclass
class RepairOutcome:
    """What one ``autoid repair`` did; ``folder`` is its record."""

    plan: RepairPlan | None
    ending: Ending
    folder: Path
    summary: dict

    @property
    def status(self) -> str:
        return self.summary["status"]


def repair(
    settings: Settings,
    *,
    apply: bool = False,
    resend: bool = False,
    now: datetime | None = None,
    reports_dir: str | Path | None = None,
    rng: random.Random | None = None,
) -> RepairOutcome:
    """One repair under the run lock (raises ``LockHeld`` before any request if it is held)."""
    started = now or datetime.now(UTC)
    if started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    clock = time.perf_counter()
    with run_lock(settings.run.lock_file):
        gateway = RedcapGateway(settings.redcap)
        lease = None
        plan, error = None, ""
        problems: list[str] = []
        step = "read"
        try:
            snapshot = _read(gateway, started, settings)
            step = "plan"
            repair_settings = RepairSettings(
                hasher=settings.run.hasher(),
                requested_at=f"{server_time(started, settings.run.server_timezone):%Y-%m-%d %H:%M}",
                rng=rng,
            )
            fingerprint_to_record(snapshot.autoid_rows, repair_settings.hasher)  # raises if unsafe
            plan = plan_repair(snapshot, repair_settings)
            if apply and not plan.is_empty(resend=resend):
                # something to write: under the lease, from a read made after its ticket
                lease = redcap_lease(settings, gateway)
                if lease is not None:
                    step = "lease"
                    snapshot = _read(gateway, started, settings, lease)
                    step = "plan"
                    fingerprint_to_record(snapshot.autoid_rows, repair_settings.hasher)
                    plan = plan_repair(snapshot, repair_settings)
            log.info("repair plan: %s", plan.describe())
            if apply and not plan.is_empty(resend=resend):
                step = "write"
                _write(plan, gateway, resend, snapshot.autoid_rows)
                step = "verify"
                problems = _verify(gateway, started, settings, repair_settings, resend)
        except LeaseHeld:
            raise  # another installation writes: nothing was done, exit 3 as for the lock
        except AutoIdError as failure:
            error = f"{step}: {failure}"
            log.error("repair failed at %s", error)
        except Exception as failure:  # recorded by type only: its text may quote data
            error = f"{step}: internal error ({type(failure).__name__}); see the log"
            log.exception("repair failed at %s", step)
        finally:
            if lease is not None:
                gateway.write_guard = None
                release_lease(lease)
        ending = Ending(
            applied=apply and plan is not None and not error,
            resend=resend,
            error=error,
            problems=tuple(problems),
            api_requests=gateway.requests,
            started=f"{started:%Y-%m-%d %H:%M} UTC",
            config=str(settings.path or ""),
        )
    folder = Path(reports_dir) if reports_dir else Path(settings.run.reports_dir)
    return _record(folder, plan, ending, started, time.perf_counter() - clock)


def _read(gateway: RedcapGateway, started: datetime, settings: Settings, lease=None) -> Snapshot:
    """AutoID first: with the lease it is the decisive read, and every other read after it."""
    if lease is not None:
        lease.take()
    rows, lease_rows = gateway.autoid_table()
    if lease is not None:
        again: list = []
        if lease.settle(lease_rows, lambda: _reread(gateway, again)):
            rows = again[0]
        gateway.write_guard = lease.check
    projects = gateway.project_records()
    studies = gateway.incoming_studies(None, None, history=True)
    moment = server_time(started, settings.run.server_timezone)
    return Snapshot(tuple(projects), tuple(studies), tuple(rows), moment, moment)


def _reread(gateway: RedcapGateway, into: list) -> list[dict]:
    rows, leases = gateway.autoid_table()
    into.append(rows)
    return leases


def _write(plan: RepairPlan, gateway: RedcapGateway, resend: bool, read: tuple) -> None:
    """Retire, then create, then send again: each step only what the state still lacks. Before
    the transfers, AutoID is read again: another writer's rows for the patients about to be
    sent again stop the repair (``second_look``), as they stop a run."""
    if plan.retirements:
        gateway.rename_autoid_rows({r.record_id: r.retired_name for r in plan.retirements})
    if plan.new_rows:
        gateway.create_autoid_rows(plan.new_rows)
    if resend and plan.resend:
        retired = {r.record_id for r in plan.retirements}
        expected = [row for row in read if row.record_id not in retired]
        problems = foreign_rows(plan.new_rows, plan.resend, expected, gateway.autoid_rows())
        if problems:
            raise ConcurrentWriter(
                f"another writer changed AutoID during this repair: {'; '.join(problems[:3])}; "
                "no transfer request was written — stop the other writer, then repair again"
            )
        gateway.create_transfers(plan.resend)
    log.info(
        "repair wrote %d renamed row(s), %d new row(s), %d transfer request(s)",
        len(plan.retirements),
        len(plan.new_rows),
        len(plan.resend) if resend else 0,
    )


def _verify(gateway, started, settings, repair_settings, resend) -> list[str]:
    """Read everything again: the repaired state must plan nothing more."""
    again = plan_repair(_read(gateway, started, settings), repair_settings)
    if again.is_empty(resend=resend):
        return []
    return [f"the re-read still plans: {again.describe()}; run autoid repair --apply again"]


def _record(
    reports_dir: Path, plan: RepairPlan | None, ending: Ending, started: datetime, duration: float
) -> RepairOutcome:
    folder = _new_folder(reports_dir, started)
    css = (templates_dir() / "report" / "report.css").read_text(encoding="utf-8")
    _write_private(folder / REPORT_FILE, repair_html(plan, ending, css))
    if plan is not None:
        _write_private(folder / WORKSHEET_FILE, worksheet_csv(plan, ending))
    summary = _summary(plan, ending, started, duration)
    from autoid_lib.records.notebook_run import rebuild_index, write_json

    write_json(folder / SUMMARY_FILE, summary)
    os.chmod(folder / SUMMARY_FILE, 0o600)
    rebuild_index(reports_dir)
    return RepairOutcome(plan, ending, folder, summary)


def _summary(plan: RepairPlan | None, ending: Ending, started: datetime, duration: float) -> dict:
    projects = [p.__dict__ for p in plan.projects] if plan else []
    applied = ending.applied
    return {
        "schema": SUMMARY_SCHEMA,
        "mode": "repair" if applied else "repair (dry)",
        "status": status(plan, ending),
        "started": started.isoformat(timespec="seconds"),
        "applied": applied,
        "resend": ending.resend,
        "headline": plan.describe() if plan else "",
        "rows_retired": sum(p.retired for p in plan.projects) if plan else 0,
        "ids_created": sum(p.new_ids for p in plan.projects) if plan else 0,
        "transfers_created": len(plan.resend) if plan and applied and ending.resend else 0,
        "resend_planned": len(plan.resend) if plan else 0,
        "wrong_copies": len(plan.wrong_copies) if plan else 0,
        "projects": projects,
        "problems": list(ending.problems),
        "api_requests": ending.api_requests,
        "duration_s": round(duration, 3),
        "report": REPORT_FILE,
        "worksheet": WORKSHEET_FILE if plan else None,
        "error": {"step": ending.error.partition(":")[0], "type": "", "message": ending.error}
        if ending.error
        else None,
    }


def _new_folder(reports_dir: Path, started: datetime) -> Path:
    """A run folder numbered in the run history like every other (``new_run_folder``), so the
    index lists a repair in the order it happened among the runs."""
    from autoid_lib.records.folders import new_run_folder

    return new_run_folder(reports_dir, MODE, datetime.now(UTC))


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
