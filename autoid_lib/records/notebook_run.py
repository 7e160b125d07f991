"""Recorded notebook runs: execute (papermill), export the HTML report, write summary.json.

``execute_notebook(notebook, parameters, mode=..., reports_dir=..., title=...)`` is the one
entry point for every recorded notebook: ``execute_run`` (``autoid run``, ``autoid demo``)
wraps it under the run lock, ``audit_cli.execute_audit`` (``autoid audit``) calls it directly.
It creates the run folder ``<reports_dir>/<UTC timestamp>-<mode>/`` and fills it with::

    run.ipynb     the executed notebook, the run record (parameters: the config *path*, no token)
    report.html   the notebook's outputs without code, self-contained (``html_export``)
    summary.json  counts and status for monitoring (docs/summary.md)
    run.log       the kit's log lines from the kernel (no patient data, no tokens)

then calls the ``notify`` hook (the e-mail step) and rewrites ``<reports_dir>/index.html``. A
failed run (REDCap error, or a notebook cell raising) still leaves all of these, with the error
in the report and ``status: failed``.

The kernel side is ``run_in_kernel``: the call that loads the config, runs the job and writes
``summary.json`` (the notebook reaches it through ``recorded_run.run_cell``, which records the
whole run as ``autoid run`` does when someone other than the kit executed the notebook).
Tracebacks in the executed notebook are reduced to code locations plus, for the kit's own
errors, their message (which never holds patient data); any other exception text is withheld,
since it may quote data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from autoid_lib import errors, wall_clock
from autoid_lib.kernel_transport import private_kernel_config
from autoid_lib.lock import environment_for_child, run_lock
from autoid_lib.package_data import notebook_path
from autoid_lib.private_files import private_umask, write_private
from autoid_lib.records.folders import (
    LOG_FILE,
    NOTEBOOK_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    new_run_folder,
    read_summary,
    run_sequence,
    write_json,
)
from autoid_lib.records.html_export import RUN_TITLE, export_html, fallback_report
from autoid_lib.records.log_follow import follow_log
from autoid_lib.records.navigation import link_next, nav_html, report_title
from autoid_lib.records.summary import (
    ErrorEntry,
    Summary,
    finish_summary,
    run_summary,
    unknown_summary,
)
from autoid_lib.safe_text import PrintableFormatter
from autoid_lib.secret import Secret, redact
from autoid_lib.status import ExitStatus
from autoid_lib.vocab import Detail, RunMode, Status, parse_utc

if TYPE_CHECKING:
    from autoid_lib.config import Settings
    from autoid_lib.result import RunResult

log = logging.getLogger("autoid.notebook")

NOTEBOOK = notebook_path("populate_autoid.ipynb")
DETAILS: tuple[str, ...] = tuple(Detail)
KERNEL_LOG_FILE = "kernel.log"  # what the kernel process prints itself (not the kit's lines)
Notify = Callable[[Mapping[str, Any], Path], Mapping[str, Any] | None]


@dataclass(frozen=True)
class RunRecord:
    """What one recorded notebook run left behind and how it ended."""

    path: Path  # the run folder
    summary: Summary
    exit_status: ExitStatus
    message: str  # one line for the terminal

    @property
    def report(self) -> Path:
        return self.path / REPORT_FILE

    @property
    def notebook(self) -> Path:
        return self.path / NOTEBOOK_FILE


def execute_notebook(
    notebook: str | Path,
    parameters: Mapping[str, Any],
    *,
    mode: str,
    reports_dir: str | Path,
    title: str = RUN_TITLE,
    secrets: Sequence[Secret] = (),
    progress: bool = True,
    notify: Notify | None = None,
    cell_timeout_s: float | None = None,
) -> RunRecord:
    """Execute ``notebook`` into a new run folder and record it; returns where and how it ended.

    The folder is ``<reports_dir>/<UTC timestamp>-<mode>/``; the notebook gets ``parameters``
    plus ``output_dir`` (that folder), where its kernel side writes summary.json. Then:
    tracebacks scrubbed and ``secrets`` masked in run.ipynb, report.html exported with
    ``title`` (a minimal page naming the error if the export fails), the final summary.json
    (``mode`` set, ``detail`` from ``parameters``, timings, file names, ``email: null``), the
    ``notify`` hook, index.html.
    ``notify(summary, run_folder)`` is called once summary.json is written (the e-mail hook);
    what it returns is stored as the summary's ``email`` entry and summary.json rewritten. A
    hook that raises is logged and recorded there; it never changes how the run ended.
    Takes no lock: ``execute_run`` holds the run lock around this call.
    """
    with private_umask():  # the run folder, its files and what the kernel writes: 0600/0700
        return _execute_notebook(
            notebook, parameters, mode, Path(reports_dir), title, secrets, progress, notify,
            cell_timeout_s,
        )  # fmt: skip


def _execute_notebook(
    notebook, parameters, mode, reports_dir, title, secrets, progress, notify, cell_timeout_s
) -> RunRecord:
    started = datetime.now(UTC)
    command_started = wall_clock.command_started() or started
    run_dir = new_run_folder(reports_dir, mode, started)
    log.info("run folder %s", run_dir)
    parameters = {
        **parameters,
        "output_dir": str(run_dir),
        "command_started": command_started.isoformat(),
    }
    timings, failure = _execute(notebook, run_dir, parameters, progress, cell_timeout_s)
    secrets = list(secrets)
    _scrub_notebook(run_dir / NOTEBOOK_FILE, secrets)
    clock = time.perf_counter()
    kernel_summary = read_summary(run_dir) or {}
    status = Status.FAILED.value if failure else kernel_summary.get("status")
    try:
        export_html(
            run_dir / NOTEBOOK_FILE,
            run_dir / REPORT_FILE,
            title=report_title(mode, status, started),
            nav=nav_html(run_dir),
        )
    except Exception as error:  # the run's record must still exist
        log.error("HTML export failed: %s", type(error).__name__)
        failure = failure or _failure("export", type(error).__name__, "the report not exported")
        fallback_report(run_dir / REPORT_FILE, failure, title=title)
    timings["export"] = time.perf_counter() - clock
    timings["command"] = (datetime.now(UTC) - command_started).total_seconds()
    summary = _final_summary(run_dir, started, mode, timings, failure, secrets)
    summary["detail"] = parameters.get("detail")  # the mail attaches only a summary-detail report
    summary["seq"] = run_sequence(run_dir)  # the run's place in the history (the mail's order)
    if summary["detail"] != "full":  # the summary feeds the mail: no study-to-pseudonym link
        summary["verification"] = without_study_refs(summary.get("verification") or [])
    write_json(run_dir / SUMMARY_FILE, summary)
    if notify is not None:  # the single place the e-mail step hooks in
        summary["email"] = _notified(notify, summary, run_dir)
        write_json(run_dir / SUMMARY_FILE, summary)
    link_next(run_dir)
    rebuild_index(reports_dir)
    return _record(run_dir, summary)


def execute_run(
    settings: Settings,
    *,
    dry_run: bool = False,
    full_read: bool = False,
    lookback_days: int = 0,
    projects: Sequence[str] = (),
    detail: str = Detail.SUMMARY,
    now: datetime | None = None,
    output_dir: str | Path | None = None,
    progress: bool = True,
    notebook: str | Path | None = None,
    notify: Notify | None = None,
) -> RunRecord:
    """Run the job once as a recorded notebook; raises ``LockHeld`` before creating anything.

    ``output_dir`` replaces ``settings.run.reports_dir``; ``lookback_days`` 0 means the config's
    value; ``now`` fixes the run's clock (reproducible windows) but never the folder name.
    ``notify`` is ``execute_notebook``'s hook (``autoid run --email``).
    """
    try:
        detail = Detail.parse(detail)
    except ValueError as error:
        raise errors.ConfigError(str(error)) from None
    if settings.path is None:
        raise errors.ConfigError("the run needs settings loaded from a config file")
    reports_dir = Path(output_dir) if output_dir else Path(settings.run.reports_dir)
    parameters = {
        "config_path": str(settings.path),
        "lookback_days": int(lookback_days or 0),
        "dry_run": bool(dry_run),
        "full_read": bool(full_read),
        "projects": ",".join(projects),
        "now": now.isoformat() if now else "",
        "detail": detail,
    }
    mode = "dry" if dry_run else "live"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(run_lock(settings.run.lock_file))
        except errors.LockHeld as held:
            if held.held_for_s <= lock_stuck_after_s(settings):
                raise  # an ordinary overlap: exit 3, nothing done
            return _record_stuck_lock(held, reports_dir, mode, notify)
        stack.enter_context(_child_environment(settings.run.lock_file))
        return execute_notebook(
            notebook or NOTEBOOK,
            parameters,
            mode=RunMode.DRY if dry_run else RunMode.LIVE,
            reports_dir=reports_dir,
            title=RUN_TITLE,
            secrets=settings.secrets(),
            progress=progress,
            notify=notify,
            cell_timeout_s=settings.run.cell_timeout_s,
        )


_STUDY_REF = re.compile(r"\bstudy …\S+")


def without_study_refs(problems: Sequence[str]) -> list[str]:
    """Verification sentences with each study reference ("study …12345678") made anonymous."""
    return [_STUDY_REF.sub("a study", problem) for problem in problems]


def lock_stuck_after_s(settings: Settings) -> float:
    """Longer than any run can take: four notebook cells each at their time limit."""
    return 4 * settings.run.cell_timeout_s


def _record_stuck_lock(
    held: errors.LockHeld, reports_dir: Path, mode: str, notify: Notify | None
) -> RunRecord:
    """A lock held past any run's length is a failure with a report and a mail, not a silent 3
    (systemd counts 3 as success, so processing would stop unnoticed)."""
    failure = _failure(
        "lock",
        "LockHeld",
        f"the lock {held.lock_file} has been held for {held.held_for_s / 60:.0f} min, longer "
        "than any run takes; find its holder (the PID in that file) and stop it",
    )
    with private_umask():
        run_dir = new_run_folder(reports_dir, mode, datetime.now(UTC))
        fallback_report(run_dir / REPORT_FILE, failure, title=RUN_TITLE)
        summary = unknown_summary(datetime.now(UTC), mode, 0.0)
        summary["error"] = cast("ErrorEntry", failure)
        summary["headline"] = f"FAILED at lock: {failure['message']}"
        summary["report"] = REPORT_FILE
        summary["notebook"] = None  # no notebook ran
        summary["email"], summary["detail"] = None, Detail.SUMMARY
        summary["seq"] = run_sequence(run_dir)
        summary["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json(run_dir / SUMMARY_FILE, summary)
        if notify is not None:
            summary["email"] = _notified(notify, summary, run_dir)
            write_json(run_dir / SUMMARY_FILE, summary)
        rebuild_index(reports_dir)
    return _record(run_dir, summary)


def _notified(notify: Notify, summary: Summary, run_dir: Path) -> Any:
    """The hook's ``email`` entry; a hook that raises is reported, never propagated."""
    try:
        entry = notify(summary, run_dir)
    except Exception as error:  # the run's work is done: the hook cannot undo or fail it
        log.error("the notify hook raised %s", type(error).__name__, exc_info=True)
        return {"sent": False, "reason": None, "error": f"notify hook: {type(error).__name__}"}
    return dict(entry) if entry is not None else None


def _record(run_dir: Path, summary: Summary) -> RunRecord:
    error = summary.get("error")
    if summary.get("status") == Status.YIELDED:  # RunResult.status decided it: exit 3
        message = error["message"] if error else "another run holds the REDCap lease"
        return RunRecord(run_dir, summary, ExitStatus.LOCKED, f"nothing was done: {message}")
    if summary.get("status") == Status.FAILED:
        if error:
            message = f"run failed at {error['step']}: {error['message']}"
            if error.get("action"):
                message += f" — what to do: {error['action']}"
        else:
            message = (
                f"run failed: {len(summary.get('verification') or [])} verification problem(s)"
            )
        return RunRecord(run_dir, summary, ExitStatus.FAILED, message)
    return RunRecord(
        run_dir, summary, ExitStatus.OK, summary.get("headline") or summary.get("status", "")
    )


# -- the kernel side ---------------------------------------------------------------------------


def run_in_kernel(
    config_path: str,
    *,
    lookback_days: int = 0,
    dry_run: bool = True,
    full_read: bool = False,
    projects: str = "",
    now: str = "",
    output_dir: str = "",
) -> RunResult:
    """The run cell when the kit executes the notebook: load the config, run the job, write
    summary.json into ``output_dir`` (if given)."""
    from autoid_lib.config import load_settings
    from autoid_lib.environment import environment
    from autoid_lib.run import run_autoid

    if output_dir:
        _log_to_file(Path(output_dir) / LOG_FILE)
    settings = load_settings(config_path)
    moment = parse_utc(now)
    names = [p.strip() for p in projects.split(",") if p.strip()]
    result = run_autoid(
        settings,
        dry_run=dry_run,
        full_read=full_read,
        now=moment,
        lookback_days=lookback_days or None,
        projects=names or None,
        history_dir=Path(output_dir).parent if output_dir else None,
        recorded=_recorded(settings, output_dir, moment),
    )
    result.environment = environment(settings)
    if output_dir:
        write_json(Path(output_dir) / SUMMARY_FILE, run_summary(result))
    return result


def _recorded(settings: Settings, output_dir: str, moment: datetime | None) -> list:
    """Earlier runs' capacity for the forecast: the reports folder this run is recorded in."""
    from autoid_lib.records.history import recorded_capacity

    reports_dir = Path(output_dir).parent if output_dir else settings.run.reports_dir
    window_days = 7.0 * settings.run.forecast_weeks
    return recorded_capacity(reports_dir, moment or datetime.now(UTC), window_days)


def _log_to_file(path: Path) -> None:
    """Send the kit's log lines to run.log instead of the notebook's stderr (and so the report)."""
    logger = logging.getLogger("autoid")
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


# -- executing ---------------------------------------------------------------------------------


@contextmanager
def _child_environment(lock_file: Path) -> Iterator[None]:
    """Let the kernel (a direct child) run under the lock this process holds."""
    entries = environment_for_child(lock_file)
    saved = {key: os.environ.get(key) for key in entries}
    os.environ.update(entries)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _execute(
    notebook: str | Path,
    run_dir: Path,
    parameters: dict,
    progress: bool,
    cell_timeout_s: float | None,
) -> tuple[dict[str, float], dict | None]:
    """Run the notebook into run.ipynb; timings and the failure (None if every cell ran)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    output = run_dir / NOTEBOOK_FILE
    clock = time.perf_counter()
    failure = None
    try:
        with (
            private_kernel_config(output.parent / KERNEL_LOG_FILE) as kernel_config,
            follow_log(output.parent / LOG_FILE),  # retries show on stderr as they happen
        ):
            papermill.execute_notebook(
                str(notebook),
                str(output),
                parameters=parameters,
                progress_bar=progress,
                log_output=False,
                report_mode=False,
                execution_timeout=cell_timeout_s,  # a hung cell fails the run instead of the lock
                config=kernel_config,  # ipc sockets in a 0700 folder: no TCP port to listen in on
            )
    except PapermillExecutionError as error:
        failure = _cell_failure(output, error.ename, error.evalue)
    except TimeoutError as error:  # nbclient's CellTimeoutError: the cell was interrupted
        log.error("a notebook cell ran longer than %s s", cell_timeout_s)
        failure = _failure(
            "notebook", type(error).__name__, f"a cell ran longer than {cell_timeout_s:g} s"
        )
    except Exception as error:  # kernel died, would not start, timed out …
        log.error("notebook did not run: %s", type(error).__name__)
        failure = _failure("notebook", type(error).__name__, "the notebook kernel failed")
    total = time.perf_counter() - clock
    _drop_quiet_kernel_log(output.parent / KERNEL_LOG_FILE)
    timings = {"notebook": total, "kernel": max(0.0, total - _cells_time(output))}
    log.info("notebook executed in %.1f s", total)
    return timings, failure


# what ipykernel says when it is shut down as the cells end: its own exit, not the run's
_SHUTDOWN_NOISE = "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel."


def _drop_quiet_kernel_log(kernel_log: Path) -> None:
    """Remove the kernel's own log when it says nothing about the run: empty (the usual case)
    or only ipykernel's line about being interrupted at shutdown, which comes or not with the
    timing, so that two runs of one job leave the same files."""
    try:
        lines = kernel_log.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return
    if all(not line.strip() or line.strip() == _SHUTDOWN_NOISE for line in lines):
        kernel_log.unlink()


def _failure(step: str, error_type: str, message: str, kind: str = "") -> dict[str, str]:
    """summary.json's ``error`` for a failure the parent saw (kind: by type, else notebook)."""
    from autoid_lib.failures import FailureKind, cause_of, failure_kind

    found = failure_kind(error_type, kind)
    if found == FailureKind.INTERNAL and not kind:
        found = FailureKind.NOTEBOOK
    cause = cause_of(found)
    return {
        "step": step, "type": error_type, "message": message,
        "kind": found.value, "cause": cause.label, "action": cause.action,
    }  # fmt: skip


def _cell_failure(output: Path, ename: str, evalue: str) -> dict[str, str]:
    """The failing cell's step (from its ``autoid.step`` metadata) and a safe message."""
    step = "notebook"
    try:
        nb = json.loads(output.read_text(encoding="utf-8"))
        for cell in nb["cells"]:
            if any(o.get("output_type") == "error" for o in cell.get("outputs", ())):
                step = cell.get("metadata", {}).get("autoid", {}).get("step", step)
    except (OSError, ValueError, KeyError):
        pass
    message = evalue if ename in _kit_error_names() else "a notebook cell raised an error"
    return _failure(step, ename, f"{message} (see run.ipynb)")


def _cells_time(output: Path) -> float:
    try:
        nb = json.loads(output.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0
    return sum(
        (c.get("metadata", {}).get("papermill", {}).get("duration") or 0.0) for c in nb["cells"]
    )


def _kit_error_names() -> frozenset[str]:
    """Names of the kit's own exceptions, whose messages are designed to be shown."""
    names, todo = set(), [errors.AutoIdError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return frozenset(names)


# -- privacy of the record ---------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# kept from a traceback: separators, the header, frame locations and the failing line's code
_FRAME_LINE = re.compile(
    r"-{5,}|\w+\s+Traceback \(most recent call last\)|File \S.*, in \w.*"
    r"|Cell In\[\d+\], line \d+|-+> ?\d+ .*|\s*"
)


def _scrub_notebook(path: Path, secrets: list[Secret]) -> None:
    """Reduce tracebacks to code locations and the kit's messages; mask any secret value."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    nb = json.loads(text)
    kit_errors = _kit_error_names()
    for cell in nb.get("cells", ()):
        for output in cell.get("outputs", ()):
            if output.get("output_type") == "error":
                _scrub_error(output, kit_errors)
    text = redact(json.dumps(nb, indent=1, ensure_ascii=False), secrets)
    write_private(path, text + "\n")


def _scrub_error(output: dict, kit_errors: frozenset[str]) -> None:
    ename = output.get("ename", "Error")
    if ename not in kit_errors:
        output["evalue"] = "(message withheld: it may quote data; see the code location above)"
    lines = []
    for chunk in output.get("traceback", ()):
        kept = [line for line in chunk.split("\n") if _FRAME_LINE.fullmatch(_ANSI.sub("", line))]
        if any(line.strip() for line in kept):
            lines.append("\n".join(kept))
    lines.append(f"{ename}: {output['evalue']}")
    output["traceback"] = lines


# -- report and summary ------------------------------------------------------------------------


def _final_summary(
    run_dir: Path,
    started: datetime,
    mode: str,
    timings: dict[str, float],
    failure: dict | None,
    secrets: list[Secret],
) -> Summary:
    summary = read_summary(run_dir) or unknown_summary(started, mode, timings.get("notebook", 0.0))
    summary = finish_summary(
        summary,
        mode=mode,
        failure=failure,
        timings=timings,
        finished=datetime.now(UTC),
        report=REPORT_FILE,
        notebook=NOTEBOOK_FILE,
        detail=None,
    )
    # the kernel's summary is data-free by construction; mask secrets all the same
    return json.loads(redact(json.dumps(summary), secrets))


def rebuild_index(reports_dir: Path) -> None:
    from autoid_lib.records.index import rebuild_index as rebuild

    try:
        rebuild(reports_dir)
    except OSError as error:
        log.warning("index.html not rebuilt: %s", error.strerror)
