"""The full-history audit as a recorded notebook, like a run (``autoid audit`` is its command).

``execute_audit(settings, ...)`` runs ``notebooks/audit.ipynb`` with papermill into
``<reports_dir>/<UTC timestamp>-audit/`` (run.ipynb, report.html titled "Auto-ID audit report",
summary.json) and rebuilds the reports index through the run's public entry point,
``notebook_run.execute_notebook`` (execution, scrubbing, HTML export, summary). The
kernel side is ``audit_in_kernel``: four reads (Projects, all of Incoming with the forwarder's
fields, the AutoID table, the UIDs a run would read now) and the pure checks. All of Incoming is
streamed, one checked chunk at a time, into ``audit.checks.HistoryFold``, so memory follows the
studies the checks keep, not the raw rows of all history. The audit only reads, so it takes no
run lock and may run next to the job.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from autoid_lib.package_data import notebook_path
from autoid_lib.vocab import Detail, RunMode, as_utc, parse_utc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from autoid_lib.audit.checks import AuditReport, HistoryFold
    from autoid_lib.config import Settings
    from autoid_lib.hashing import PatientHasher
    from autoid_lib.records.notebook_run import Notify, RunRecord
    from autoid_lib.redcap.gateway import RedcapGateway
    from autoid_lib.snapshot import ProjectRecord, Snapshot

log = logging.getLogger("autoid.audit")
NOTEBOOK = notebook_path("audit.ipynb")
MODE = RunMode.AUDIT
TITLE = "Auto-ID audit report"


# -- the parent side ----------------------------------------------------------------------------


def execute_audit(
    settings: Settings,
    *,
    output_dir: str | Path | None = None,
    detail: str = Detail.SUMMARY,
    progress: bool = False,
    now: datetime | None = None,
    notify: Notify | None = None,
) -> RunRecord:
    """Run the audit notebook into a new report folder; returns where and how it ended.

    ``notify`` is ``execute_notebook``'s hook (``autoid audit --email``).
    """
    from autoid_lib.errors import ConfigError
    from autoid_lib.records.notebook_run import execute_notebook

    try:
        detail = Detail.parse(detail)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if settings.path is None:
        raise ConfigError("the audit needs settings loaded from a config file")
    parameters = {
        "config_path": str(settings.path),
        "detail": detail,
        "now": now.isoformat() if now else "",
    }
    return execute_notebook(
        NOTEBOOK,
        parameters,
        mode=MODE,
        reports_dir=Path(output_dir) if output_dir else Path(settings.run.reports_dir),
        title=TITLE,
        secrets=settings.secrets(),
        progress=progress,
        cell_timeout_s=settings.run.cell_timeout_s,
        notify=notify,
    )


# -- the kernel side ----------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (Linux counts KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def fold_history(gateway: RedcapGateway, projects: Sequence[ProjectRecord]) -> HistoryFold:
    """All of Incoming, streamed chunk by chunk into a ``HistoryFold``. A read that starts over
    (a chunk failed its check) starts a new fold, so nothing of the failed attempt is counted."""
    from autoid_lib.audit.checks import HistoryFold

    fold, attempt = HistoryFold(projects), 1
    for read, studies in gateway.iter_history_chunks():
        if read != attempt:
            fold, attempt = HistoryFold(projects), read
        fold.add(studies)
    return fold


def audit_history(
    gateway: RedcapGateway,
    hasher: PatientHasher,
    window_begin: datetime,
    window_end: datetime,
    lookback_days: int,
) -> AuditReport:
    """The audit's four reads and its checks, Incoming streamed (``fold_history``): Projects,
    all of Incoming (with history), the AutoID table, and the UIDs a run would read now."""
    from autoid_lib.audit.checks import AuditSettings

    projects = gateway.project_records()
    fold = fold_history(gateway, projects)
    rows = gateway.autoid_rows()
    in_window = gateway.study_uids(window_begin, window_end)
    return fold.report(rows, AuditSettings(hasher, window_begin, lookback_days, in_window))


def read_history(
    gateway: RedcapGateway, window_begin: datetime, window_end: datetime
) -> tuple[Snapshot, frozenset[str]]:
    """The same four reads with all of Incoming in one list, for ``checks.audit``: the
    unstreamed reference (tests compare the two; the benchmark measures both)."""
    from autoid_lib.snapshot import Snapshot

    projects = gateway.project_records()
    studies = gateway.incoming_studies(None, None, history=True)
    rows = gateway.autoid_rows()
    in_window = gateway.study_uids(window_begin, window_end)
    snapshot = Snapshot(tuple(projects), tuple(studies), tuple(rows), window_begin, window_end)
    return snapshot, in_window


def audit_in_kernel(config_path: str, *, output_dir: str = "", now: str = "") -> AuditReport:
    """The notebook's audit cell: load the config, read, audit, write summary.json (if asked)."""
    from autoid_lib.audit.checks import AuditRun
    from autoid_lib.config import load_settings
    from autoid_lib.environment import environment
    from autoid_lib.records.folders import SUMMARY_FILE, write_json
    from autoid_lib.records.summary import audit_summary
    from autoid_lib.redcap.gateway import RedcapGateway
    from autoid_lib.run import server_time

    settings = load_settings(config_path)
    moment = parse_utc(now) or as_utc(datetime.now(UTC))
    end = server_time(moment, settings.run.server_timezone)
    begin = end - timedelta(days=settings.run.lookback_days)
    gateway = RedcapGateway(settings.redcap)
    clock = time.perf_counter()
    report = audit_history(gateway, settings.run.hasher(), begin, end, settings.run.lookback_days)
    duration_s, peak_mb = time.perf_counter() - clock, peak_rss_mb()
    log.info(
        "audit: %s requests, %.1f s (%.1f s paced), peak memory %.0f MiB",
        gateway.requests,
        duration_s,
        gateway.paced_s,
        peak_mb,
    )
    run = AuditRun(
        started=moment,
        duration_s=duration_s,
        api_requests=gateway.requests,
        environment=environment(settings),
        peak_rss_mb=peak_mb,
    )
    report = replace(report, run=run)
    if output_dir:
        summary = audit_summary(
            report,
            started=moment,
            api_requests=run.api_requests,
            duration_s=run.duration_s,
            peak_rss_mb=peak_mb,
            paced_s=gateway.paced_s,
        )
        summary["environment"] = environment(settings)
        write_json(Path(output_dir) / SUMMARY_FILE, summary)
    return report
