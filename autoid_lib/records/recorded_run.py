"""One recorded run with its mail, metrics and pings: what ``autoid run`` does, for every caller.

``record_run`` is the single path from "run the job now" to a run folder (run.ipynb, report.html,
summary.json, run.log), an index row, the mail (``email=True``) and the ``[monitoring]`` metrics
and pings. ``autoid run`` calls it, and so does the run notebook when someone other than the kit
executes it (plain papermill, Airflow's PapermillOperator, JupyterLab's scheduler, a person in
Jupyter): its run cell, ``run_cell``, then records the run by this function in a nested kernel,
so a scheduled notebook leaves exactly what ``autoid run`` leaves.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from autoid_lib.status import ExitStatus
from autoid_lib.vocab import Detail

if TYPE_CHECKING:
    from autoid_lib.config import Settings
    from autoid_lib.monitoring import Monitor
    from autoid_lib.records.notebook_run import Notify, RunRecord
    from autoid_lib.result import RunResult


def record_run(
    settings: Settings,
    *,
    email: bool = False,
    dry_run: bool = False,
    full_read: bool = False,
    lookback_days: int = 0,
    projects: Sequence[str] = (),
    detail: str = Detail.SUMMARY,
    now: datetime | None = None,
    reports_dir: str | Path | None = None,
    progress: bool = True,
) -> RunRecord:
    """Run the job once as a recorded notebook, mail it if asked, and ping and write metrics.

    Raises ``ConfigError`` (a bad ``[email]`` or ``[monitoring]`` table, before anything runs),
    ``LockHeld`` (another run holds the lock; nothing done) and ``OSError`` (the run could not be
    recorded; the monitor is told it failed).
    """
    from autoid_lib.records.notebook_run import execute_run

    notify = email_hook(settings) if email else None
    monitor = command_monitor(settings, reports_dir, pings=not dry_run)
    monitor.started()
    try:
        record = execute_run(
            settings,
            dry_run=dry_run,
            full_read=full_read,
            lookback_days=lookback_days,
            projects=projects,
            detail=detail,
            now=now,
            output_dir=reports_dir or None,
            progress=progress,
            notify=notify,
        )
    except OSError:  # the lock file or the report folder cannot be written
        monitor.finished(False, "the run could not be recorded")
        raise
    # a yield (exit 3) is no failure: the job is alive, another run is writing (docs/operations.md)
    monitor.finished(record.exit_status != ExitStatus.FAILED, record.summary.get("headline") or "")
    return record


def command_monitor(settings: Settings, reports_dir: str | Path | None, *, pings: bool) -> Monitor:
    """The ``[monitoring]`` table checked now (a bad one is exit 2, before anything runs)."""
    from autoid_lib.monitoring import Monitor, monitoring_settings

    base = settings.path.parent if settings.path else Path.cwd()
    folder = Path(reports_dir) if reports_dir else Path(settings.run.reports_dir)
    return Monitor(monitoring_settings(settings.monitoring, base), reports_dir=folder, pings=pings)


def email_hook(settings: Settings) -> Notify:
    """The ``notify`` hook that mails a run's summary; checks ``[email]`` now, not after the run.

    Raises ``ConfigError`` if the config has no ``[email]`` table or a bad setting in it
    (including a password reference that does not resolve).
    """
    from autoid_lib.errors import ConfigError
    from autoid_lib.mail.send import notify
    from autoid_lib.mail.settings import email_settings_from_config

    if not settings.email:
        raise ConfigError(
            "--email needs an [email] table in the config (smtp_host, sender, recipients, …); "
            "see docs/operations.md"
        )
    email_settings = email_settings_from_config(settings.email)
    return lambda summary, run_dir: notify(summary, run_dir, email_settings)


def run_cell(
    config_path: str,
    *,
    lookback_days: int = 0,
    dry_run: bool = True,
    full_read: bool = False,
    projects: str = "",
    now: str = "",
    detail: str = Detail.SUMMARY,
    output_dir: str = "",
    email: bool = False,
    reports_dir: str = "",
) -> RunResult | None:
    """The run notebook's run cell, whoever executes the notebook.

    The kit (``execute_run`` sets ``output_dir``, this run's folder): ``run_in_kernel`` runs the
    job and returns the result for the display cells. Anyone else (plain papermill, a
    scheduler, a person in Jupyter): ``record_from_notebook`` records the run as ``autoid run``
    does (``email``, ``reports_dir`` as its ``--email``, ``--reports-dir``), shows its report
    and raises if it failed; None tells the display cells that there is nothing more to show.
    """
    from autoid_lib.records.notebook_run import run_in_kernel

    if output_dir:
        return run_in_kernel(
            config_path, lookback_days=lookback_days, dry_run=dry_run, full_read=full_read,
            projects=projects, now=now, output_dir=output_dir,
        )  # fmt: skip
    record_from_notebook(
        config_path, lookback_days=lookback_days, dry_run=dry_run, full_read=full_read,
        projects=projects, now=now, detail=detail, email=email, reports_dir=reports_dir,
    )  # fmt: skip
    return None


def record_from_notebook(
    config_path: str,
    *,
    lookback_days: int = 0,
    dry_run: bool = True,
    full_read: bool = False,
    projects: str = "",
    now: str = "",
    detail: str = Detail.SUMMARY,
    email: bool = False,
    reports_dir: str = "",
) -> RunRecord:
    """The run notebook executed by someone other than the kit: ``record_run`` with the
    notebook's parameters, the recorded report shown in this notebook, and ``RunFailed`` raised
    if the run failed (``LockHeld`` if another run holds the lock), so that papermill and
    schedulers count it as failed. A run that yielded to another (exit 3 on the command line)
    did not fail: its notebook ends normally, as the systemd unit counts exit 3 as done."""
    from autoid_lib.config import load_settings
    from autoid_lib.errors import RunFailed
    from autoid_lib.vocab import parse_utc

    settings = load_settings(config_path)
    record = record_run(
        settings,
        email=email,
        dry_run=dry_run,
        full_read=full_read,
        lookback_days=lookback_days,
        projects=[name.strip() for name in projects.split(",") if name.strip()],
        detail=detail,
        now=parse_utc(now),
        reports_dir=reports_dir or None,
        progress=False,
    )
    show_recorded(record, outputs=detail != Detail.FULL)
    if record.exit_status == ExitStatus.FAILED:
        raise RunFailed(f"{record.message} (report: {record.report})")
    return record


def show_recorded(record: RunRecord, *, outputs: bool = True) -> None:
    """The recorded run's report in this notebook: its run.ipynb's shown outputs (cells tagged
    ``hide`` left out, as in report.html), then where the report is. ``outputs=False`` (detail
    full, whose tables link studies to pseudonyms) shows only where: the scheduler's copy of
    the notebook is not written privately as the run folder is."""
    import nbformat
    from IPython.display import Markdown, display, publish_display_data

    shown = outputs and record.notebook.exists()
    cells = nbformat.read(record.notebook, as_version=4).cells if shown else []
    for cell in cells:
        if cell.cell_type != "code" or "hide" in cell.metadata.get("tags", ()):
            continue
        for output in cell.get("outputs", ()):
            if output.output_type in ("display_data", "execute_result"):
                publish_display_data(output.get("data", {}), output.get("metadata", {}))
    display(Markdown(f"Recorded run: {record.message}  \nReport: `{record.report}`"))
