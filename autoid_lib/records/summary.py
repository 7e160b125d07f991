"""``summary.json``, typed: the contract monitoring, the mail, the index and explore read.

``Summary`` lists every key a run or an audit may write (docs/summary.md documents each; a test
keeps the two in step). It is built here and only here: ``run_summary`` (the kernel side of a
run), ``audit_summary`` (of an audit), ``unknown_summary`` (a notebook that stopped before
writing one) and ``finish_summary`` (the parent's additions: mode, times, file names). Counts
are JSON integers (``with_integer_counts``), also when read back from an older file that wrote
``10000.0``.

Pure: no I/O, no clock (the caller passes every time). Reading and writing the file is
``records.folders``' job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict, cast

from autoid_lib.vocab import RunMode, Status

if TYPE_CHECKING:
    from autoid_lib.audit.checks import AuditReport
    from autoid_lib.forecast import Forecast
    from autoid_lib.result import RunResult

# The layout's version: it changes only if a key's meaning changes (keys are added, never
# renamed or removed).
SUMMARY_SCHEMA = 1


class Window(TypedDict, total=False):
    begin: str  # YYYY-MM-DD HH:MM:SS, REDCap server time
    end: str
    lookback_days: int
    catch_up_days: int  # days the window reached back beyond lookback_days after an outage
    last_success_end: str | None  # where the last successful live run's window ended


class ErrorEntry(TypedDict):
    step: str
    type: str
    message: str
    kind: NotRequired[str]  # a failures.FailureKind (absent in summaries before it existed)
    cause: NotRequired[str]
    action: NotRequired[str]


class ResolvedEntry(TypedDict):
    key: str
    kind: str
    project: str
    message: str
    first_seen: str


class AnomalyChanges(TypedDict):
    since: str | None  # the previous recorded run (ISO 8601, UTC); None: the first one
    new: int
    still_open: int
    resolved: list[ResolvedEntry]
    changed: bool  # the set of open anomalies changed (not merely a text or a count)
    text: str


class Summary(TypedDict, total=False):
    """Every key of ``summary.json``; runs and audits each write the ones that apply."""

    schema: int
    status: str  # a Status
    mode: str  # a RunMode
    kind: str  # "audit" for an audit
    detail: str | None  # a Detail
    started: str  # ISO 8601, UTC
    finished: str
    duration_s: float
    window: Window | None
    api_requests: int | None
    api_bytes: int | None  # answer bytes REDCap sent to the run
    table_reads: dict[str, str]  # AutoID / Projects: whole, or what changed (table_read)
    transfers_created: int | None
    ids_created: int | None
    ids_reused: int | None
    studies_in_window: int | None
    skipped: dict[str, int]
    anomalies: list[dict[str, Any]]
    anomaly_changes: AnomalyChanges | None
    projects: list[dict[str, Any]]
    verification: list[str]
    timings_s: dict[str, float]
    error: ErrorEntry | None
    headline: str | None
    report: str
    notebook: str | None  # None when no notebook ran (a stuck lock)
    email: dict[str, Any] | None
    seq: int | None  # the run's sequence number: its place in the run history
    environment: dict[str, str] | None  # environment.Environment: kit, REDCap host, config
    verified: dict[str, Any] | None  # the re-read after writing: autoid_rows, transfers, matched
    lease: dict[str, Any] | None  # the REDCap lease: ticket, renewals, released (None: no lease)
    # an audit's
    studies: int
    autoid_rows: int
    findings: dict[str, int]
    pending_in_window: int
    peak_rss_mb: float  # the kernel's peak resident memory
    paced_s: float  # waited for [redcap] max_requests_per_minute


SUMMARY_KEYS: frozenset[str] = frozenset(Summary.__annotations__)

# Keys holding a whole number, at the top level and in each ``projects`` entry.
COUNT_KEYS = frozenset(
    {
        "schema", "seq", "api_requests", "api_bytes", "transfers_created", "ids_created",
        "ids_reused", "studies_in_window", "studies", "autoid_rows", "pending_in_window",
    }
)  # fmt: skip
PROJECT_COUNT_KEYS = frozenset(
    {
        "incoming", "already_transferred", "transfers_created", "ids_reused", "ids_created",
        "skipped", "capacity_size", "capacity_used", "studies", "transferred", "ids",
    }
)  # fmt: skip


# -- building ----------------------------------------------------------------------------------


def run_summary(result: RunResult) -> Summary:
    """The kernel side of a run's summary: counts, window, anomalies, the headline."""
    plan = result.plan
    summary: Summary = {
        "schema": SUMMARY_SCHEMA,
        "status": result.status,
        "mode": result.mode,
        "started": result.started.isoformat(timespec="seconds"),
        "duration_s": round(result.duration_s, 3),
        "window": {
            "begin": f"{result.window_begin:%Y-%m-%d %H:%M:%S}",
            "end": f"{result.window_end:%Y-%m-%d %H:%M:%S}",
            "lookback_days": result.lookback_days,
            "catch_up_days": result.window.catch_up_days if result.window else 0,
            "last_success_end": _server_time(result.window.last_success_end)
            if result.window
            else None,
        },
        "api_requests": result.api_requests,
        "api_bytes": result.api_bytes,
        "table_reads": dict(result.table_reads),
        **result.counts(),  # type: ignore[typeddict-item]
        "skipped": plan.skipped_by_reason() if plan else {},
        "anomalies": _plain_records(result.anomalies().to_dict("records")),
        "anomaly_changes": cast(AnomalyChanges, result.changes.as_summary())
        if result.changes is not None
        else None,
        "projects": [
            {**row, "forecast": _forecast_entry(result.forecasts.get(str(row["project"])))}
            for row in _plain_records(result.projects().to_dict("records"))
        ],
        "verification": list(result.problems),
        "verified": result.verified(),
        "lease": dict(result.lease) if result.lease is not None else None,
        "environment": result.environment,
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "error": cast(ErrorEntry, result.error.as_entry()) if result.error else None,
        "headline": result.headline,
    }
    return with_integer_counts(summary)


def _forecast_entry(forecast: Forecast | None) -> dict[str, Any] | None:
    return forecast.as_summary() if forecast is not None else None


def _server_time(moment: datetime | None) -> str | None:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else None


def audit_summary(
    report: AuditReport,
    *,
    started: datetime,
    api_requests: int,
    duration_s: float,
    peak_rss_mb: float = 0.0,
    paced_s: float = 0.0,
) -> Summary:
    """An audit's summary: the report's own keys plus when it ran and what it cost."""
    summary = cast(Summary, {"schema": SUMMARY_SCHEMA, **report.summary()})
    summary["kind"] = "audit"
    summary["mode"] = RunMode.AUDIT.value
    summary["started"] = started.isoformat(timespec="seconds")
    summary["api_requests"] = api_requests
    summary["duration_s"] = round(duration_s, 3)
    summary["peak_rss_mb"] = round(peak_rss_mb, 1)
    summary["paced_s"] = round(paced_s, 3)
    summary["error"] = None
    summary["projects"] = _plain_records(summary.get("projects") or [])
    return with_integer_counts(summary)


def unknown_summary(started: datetime, mode: str, notebook_s: float) -> Summary:
    """The summary of a run whose notebook stopped before writing one: counts unknown."""
    return {
        "schema": SUMMARY_SCHEMA,
        "status": Status.FAILED.value,
        "mode": mode,
        "started": started.isoformat(timespec="seconds"),
        "duration_s": round(notebook_s, 3),
        "window": None,
        "api_requests": None,
        "transfers_created": None,
        "ids_created": None,
        "ids_reused": None,
        "studies_in_window": None,
        "skipped": {},
        "anomalies": [],
        "anomaly_changes": None,
        "projects": [],
        "verification": [],
        "timings_s": {},
        "error": None,
        "headline": None,
    }


def finish_summary(
    summary: Summary,
    *,
    mode: str,
    failure: Mapping[str, str] | None,
    timings: Mapping[str, float],
    finished: datetime,
    report: str,
    notebook: str,
    detail: str | None,
) -> Summary:
    """The parent's additions once the notebook ran and the report is exported."""
    done: Summary = with_integer_counts(cast(Summary, dict(summary)))
    done["mode"] = mode
    if failure is not None:
        done["status"] = Status.FAILED.value
        done["error"] = done.get("error") or cast(ErrorEntry, dict(failure))
        headline = done.get("headline")
        if headline is None or not headline.startswith(Status.FAILED.label):
            done["headline"] = f"{Status.FAILED.label} at {failure['step']}: {failure['message']}"
    done["timings_s"] = {
        **(done.get("timings_s") or {}),
        **{k: round(v, 3) for k, v in timings.items()},
    }
    done["report"] = report
    done["notebook"] = notebook
    done["finished"] = finished.isoformat(timespec="seconds")
    done["email"] = None
    done["detail"] = detail
    return done


# -- reading -----------------------------------------------------------------------------------


def planned(summary: Mapping[str, Any]) -> bool:
    """Whether the run got as far as a plan, so that its counts are known: a run that failed or
    yielded before planning counts nothing ("—" on every screen, never a 0 that misleads). The
    one rule for the index, its charts and the mail."""
    stopped = summary.get("status") in (Status.FAILED, Status.YIELDED)
    return not stopped or bool(summary.get("studies_in_window"))


def as_summary(data: object) -> Summary | None:
    """Parsed JSON as a ``Summary`` (counts as integers), or None if it is not an object."""
    if not isinstance(data, dict):
        return None
    return with_integer_counts(cast(Summary, data))


def with_integer_counts(summary: Summary) -> Summary:
    """``summary`` with every whole-number count an ``int`` (pandas leaves ``10000.0``)."""
    fixed = cast(dict[str, Any], dict(summary))
    for key in COUNT_KEYS & fixed.keys():
        fixed[key] = _integral(fixed[key])
    projects = fixed.get("projects")
    if isinstance(projects, list):
        fixed["projects"] = [
            {k: _integral(v) if k in PROJECT_COUNT_KEYS else v for k, v in p.items()}
            if isinstance(p, dict)
            else p
            for p in projects
        ]
    return cast(Summary, fixed)


def _integral(value: object) -> object:
    """A float holding a whole number as an int; anything else unchanged."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _plain_records(rows: list[Any]) -> list[dict[str, Any]]:
    """DataFrame records as plain JSON values: numpy scalars unwrapped, NaN as None."""
    return [{str(k): _plain(v) for k, v in row.items()} for row in rows]


def _plain(value: object) -> object:
    if hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
