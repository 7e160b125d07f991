"""Compose the report e-mail of a run or an audit from its ``summary.json`` alone.

The composer never sees the notebook or the report: it reads a fixed list of keys from the
summary (``summary_view`` for a run, ``audit_view`` for an audit), so a key that should never
be there (a study row, a patient ID) cannot reach a mail even if a future writer puts it into
the summary. Which of the two a summary is gets decided once, in ``_composer``
(``mode == "audit"``); each has its own view, subject and template pair (``mail.*.j2``,
``mail_audit.*.j2``). The HTML part is rendered with jinja2, its CSS inlined with
``css_inline`` (no ``<style>``, no scripts, no ``data:`` URIs), and kept under ``HTML_BUDGET``
bytes (Gmail clips bodies over ~100 KB) by showing fewer projects and anomalies (findings),
each list ending with "… and N more".
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote

from autoid_lib.environment import describe
from autoid_lib.failures import cause_of, written_after
from autoid_lib.records.summary import planned
from autoid_lib.vocab import (
    YIELD_EXIT,
    YIELD_NEXT,
    YIELD_TODO,
    Status,
    nothing_to_list,
    plural,
    verified_counts,
)

if TYPE_CHECKING:
    import css_inline
    import jinja2

    from autoid_lib.mail.settings import EmailSettings

HTML_BUDGET = 90_000  # bytes of the HTML part; Gmail clips at ~102 KB
_MAX_RESOLVED = 20
_LIMITS = ((60, 50), (30, 25), (15, 10), (5, 5), (0, 0))  # (projects, anomalies) shown
_MAX_SKIPPED_REASONS = 20
_MAX_TEXT = 300  # characters of any one string taken from the summary
_MAX_ACTION = 1000  # an audit finding's "what to do" is the kit's own text: show it whole

# status -> (banner text colour, banner background); the label is Status.label in capitals
_STATUS = {
    Status.OK: ("#14532d", "#dcfce7"),
    Status.ATTENTION: ("#713f12", "#fef3c7"),
    Status.FAILED: ("#7f1d1d", "#fee2e2"),
    Status.YIELDED: ("#1e3a5f", "#e5ecf4"),  # blue-grey: no alarm
}
_LEVEL_COLOURS = {"ok": "#14532d", "warning": "#92400e", "critical": "#b91c1c"}

_PROJECT_INTS = (
    "incoming",
    "already_transferred",
    "transfers_created",
    "ids_reused",
    "ids_created",
    "capacity_size",
    "capacity_used",
)
_AUDIT_PROJECT_INTS = ("studies", "transferred", "ids")
_AUDIT_MODE = "audit"
_NOTICE = "notice"  # an audit finding's severity that needs no action; anything else is a problem
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class _Composer(NamedTuple):
    """How one kind of summary becomes a mail: its view, its subject, its templates."""

    view: Callable[[Mapping[str, Any]], dict[str, Any]]
    subject: Callable[[Mapping[str, Any], str], str]
    template: str  # <template>.html.j2 and <template>.txt.j2
    rows: str  # the view's second trimmed list (after "projects")


def _composer(summary: Mapping[str, Any]) -> _Composer:
    """The one place a run's summary and an audit's summary part ways."""
    if summary.get("mode") == _AUDIT_MODE:
        return _Composer(audit_view, audit_subject_line, "mail_audit", "findings")
    return _Composer(summary_view, subject_line, "mail", "anomalies")


def compose_message(
    summary: Mapping[str, Any],
    settings: EmailSettings,
    report_path: Path | str,
    *,
    now: datetime | None = None,
) -> EmailMessage:
    """The whole mail for one run or audit: subject, plain text + HTML alternatives, optional
    attachment.

    ``report_path`` is the run's ``report.html`` on the server; the body links it through
    ``settings.report_url_base`` when set, else shows the path. The report is attached only if
    ``settings.attach_report`` is true, the report has no study-level data (``_attach_refusal``:
    a run's report at ``detail: "summary"``, never an audit's) and the file exists and is
    small enough; otherwise it is linked, with a one-line note why. An audit's summary
    (``mode: "audit"``) gets the audit's view, subject and templates.
    """
    report_path = Path(report_path)
    composer = _composer(summary)
    view = composer.view(summary)
    view["links"] = _links(report_path, settings.report_url_base)
    subject = composer.subject(view, settings.subject_prefix)
    attachment, attach_note = _attachment(summary, report_path, settings)
    view["attach_note"] = attach_note
    view["attached"] = attachment is not None  # the footer's promise covers the body only then

    text, html = _render_within_budget(view, subject, composer.template, composer.rows)

    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.sender
    message["To"] = ", ".join(settings.recipients)
    message["Date"] = format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = make_msgid("autoid", domain=settings.sender.rpartition("@")[2] or None)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies
    message["X-Auto-Response-Suppress"] = "All"  # the same for Exchange
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if attachment is not None:
        message.add_attachment(
            attachment, maintype="text", subtype="html", filename=report_path.name
        )
    return message


def subject_line(view: Mapping[str, Any], prefix: str = "[autoid]") -> str:
    """``[autoid] OK: 12 transfers created, 0 anomalies`` and its variants."""
    label = view["status_label"]
    if view["dry_run"]:
        label = f"DRY RUN {label}"
    if view["status"] == Status.YIELDED:
        return f"{prefix} {label}: nothing written, {YIELD_NEXT}"
    if view["status"] == "failed":
        error = view["error"] or {}
        step, cause = error.get("step", ""), error.get("cause", "")
        where = f" at {step}" if step else ""
        return f"{prefix} {label}{where}: {cause}" if cause else f"{prefix} {label}{where}"
    count = view["transfers_created"]
    noun = "transfer" if count == 1 else "transfers"
    verb = "planned" if view["dry_run"] else "created"
    # "7 anomalies", not "7 need attention": the count names its unit (issue 24, item 8);
    # short enough that the header is not folded before its first word (a leading space)
    return f"{prefix} {label}: {count:,} {noun} {verb}, {view['attention_count_text']}"


def summary_view(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The only keys of ``summary.json`` a mail may show, cleaned and typed.

    Anything else in the summary is ignored on purpose (see the module docstring).
    """
    window = _mapping(summary.get("window"))
    anomalies = [_anomaly(a) for a in _list(summary.get("anomalies"))]
    projects = [_project(p) for p in _list(summary.get("projects"))]
    skipped_raw = _mapping(summary.get("skipped"))
    skipped = sorted(
        ((_text(reason), _int(count)) for reason, count in skipped_raw.items()),
        key=lambda item: (-item[1], item[0]),
    )
    return {
        **_status_fields(summary),
        "dry_run": _text(summary.get("mode")) == "dry",
        "mode": _text(summary.get("mode")) or "unknown",
        "started": _when(summary.get("started")),
        "finished": _when(summary.get("finished")),
        "duration": _duration(summary.get("duration_s")),
        "window_begin": _text(window.get("begin")),
        "window_end": _text(window.get("end")),
        "lookback_days": _int(window.get("lookback_days")),
        "api_requests": _int(summary.get("api_requests")),
        "counts_known": _counts_known(summary),  # a failed run: "—", never a 0 that misleads
        "transfers_created": _int(summary.get("transfers_created")),
        "ids_created": _int(summary.get("ids_created")),
        "ids_reused": _int(summary.get("ids_reused")),
        "skipped": skipped[:_MAX_SKIPPED_REASONS],
        "skipped_more": max(0, len(skipped) - _MAX_SKIPPED_REASONS),
        "skipped_total": sum(count for _, count in skipped),
        "anomalies": anomalies,
        "attention_count": len(anomalies),
        "attention_count_text": plural(len(anomalies), "anomaly", "anomalies"),  # with its unit
        **_changes(summary.get("anomaly_changes")),
        "projects": _attention_first(projects),
        "error": _error(summary.get("error"), _text(summary.get("mode"))),
        "not_planned": _not_planned(summary),
        "yield_todo": YIELD_TODO,
        "yield_exit": YIELD_EXIT,
        "total_s": _duration(_timings(summary).get("command")),
        "produced_by": describe(summary.get("environment")),
        "verified": _verified(summary.get("verified")),
    }


def _not_planned(summary: Mapping[str, Any]) -> str:
    """The report's one line for a run that stopped before planning (``vocab.nothing_to_list``),
    or "" for a run that planned."""
    error = _mapping(summary.get("error"))
    if not error or planned(summary):
        return ""
    yielded = summary.get("status") == Status.YIELDED
    return nothing_to_list(_text(error.get("step")), yielded=yielded)


def _verified(raw: Any) -> str:
    """``after writing: 2 patients' AutoID rows, 1 kit record (the hash scheme's) and 3
    transfer requests match``."""
    if not isinstance(raw, Mapping):
        return ""
    if not raw.get("matched"):
        return "after writing, REDCap did not hold what the run planned (see the report)"
    return f"after writing: {verified_counts(raw)} match"


def _status_fields(summary: Mapping[str, Any]) -> dict[str, str]:
    """The status and how the banner shows it; an unknown status asks for a human."""
    status = Status.parse(_text(summary.get("status")) or Status.FAILED) or Status.ATTENTION
    colour, background = _STATUS[status]
    return {
        "status": status.value,
        "status_label": status.label.upper(),
        "status_colour": colour,
        "status_background": background,
    }


def audit_subject_line(view: Mapping[str, Any], prefix: str = "[autoid]") -> str:
    """``[autoid] AUDIT NEEDS ATTENTION: 3 problems, 1 notice`` and its variants.

    Problems and notices count findings (kinds of problem), not the studies or rows in them.
    """
    label = f"AUDIT {view['status_label']}"
    if view["status"] == "failed":
        step = view["error"]["step"] if view["error"] else ""
        return f"{prefix} {label} at {step}" if step else f"{prefix} {label}"
    if view["status"] == "ok" and not view["findings"]:
        return f"{prefix} {label}: no findings"
    return f"{prefix} {label}: {view['problems_text']}"


def audit_view(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The only keys of an audit's ``summary.json`` a mail may show, cleaned and typed.

    The findings are the summary's ``anomalies`` (one per kind found), problems before
    notices; anything else in the summary is ignored on purpose (see the module docstring).
    """
    window = _mapping(summary.get("window"))
    findings = sorted(
        (_finding(f) for f in _list(summary.get("anomalies"))), key=lambda f: not f["problem"]
    )
    problems = sum(1 for f in findings if f["problem"])
    return {
        **_status_fields(summary),
        "started": _when(summary.get("started")),
        "duration": _duration(summary.get("duration_s")),
        "window_begin": _text(window.get("begin")),
        "lookback_days": _int(window.get("lookback_days")),
        "api_requests": _int(summary.get("api_requests")),
        "studies": _int(summary.get("studies")),
        "autoid_rows": _int(summary.get("autoid_rows")),
        "pending_in_window": _int(summary.get("pending_in_window")),
        "findings": findings,
        "problem_count": problems,
        "notice_count": len(findings) - problems,
        "problems_text": (
            f"{plural(problems, 'problem')}, {plural(len(findings) - problems, 'notice')}"
        ),
        "projects": [_audit_project(p) for p in _list(summary.get("projects"))],
        "error": _error(summary.get("error"), _text(summary.get("mode"))),
        "full_detail": summary.get("detail") == "full",
        "total_s": _duration(_timings(summary).get("command")),
        "produced_by": describe(summary.get("environment")),
    }


def _timings(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(summary.get("timings_s"))


def _render_within_budget(
    view: dict[str, Any], subject: str, template: str = "mail", rows: str = "anomalies"
) -> tuple[str, str]:
    """Render both parts of ``template``, showing fewer projects and ``rows`` (the view's
    anomalies or findings) until the HTML part fits ``HTML_BUDGET``; ``<list>_more`` says how
    many each list left out."""
    env = _environment()
    all_projects, all_rows = view["projects"], view[rows]
    for max_projects, max_rows in _LIMITS:
        shown = dict(
            view,
            subject=subject,
            projects=all_projects[:max_projects],
            projects_more=max(0, len(all_projects) - max_projects),
            **{rows: all_rows[:max_rows], f"{rows}_more": max(0, len(all_rows) - max_rows)},
        )
        html = _inline(env.get_template(f"{template}.html.j2").render(shown))
        if len(html.encode("utf-8")) <= HTML_BUDGET:
            break
    text = env.get_template(f"{template}.txt.j2").render(shown)
    return text, html


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("autoid_lib", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


@functools.lru_cache(maxsize=1)
def _inliner() -> css_inline.CSSInliner:
    import css_inline

    return css_inline.CSSInliner(
        load_remote_stylesheets=False,
        keep_style_tags=False,
        keep_link_tags=False,
        keep_at_rules=False,
        minify_css=True,
        apply_width_attributes=True,
    )


def _inline(html: str) -> str:
    return _inliner().inline(html)


def _links(report_path: Path, url_base: str | None) -> dict[str, str | None]:
    run_folder = report_path.parent.name
    if url_base:
        base = url_base if url_base.endswith("/") else url_base + "/"
        return {
            "report_url": f"{base}{quote(run_folder)}/{quote(report_path.name)}",
            "index_url": f"{base}index.html",
            "report_path": None,
        }
    return {"report_url": None, "index_url": None, "report_path": str(report_path)}


def _attach_refusal(summary: Mapping[str, Any]) -> str | None:
    """Why the report must not be attached (it holds study UIDs), or None if it may be."""
    if summary.get("mode") == _AUDIT_MODE:
        return (
            "The audit's report lists the studies of each finding, so it is not attached; "
            "open the report (above) instead."
        )
    detail = summary.get("detail")
    if detail == "full":
        return (
            "The report has study-level rows and study UIDs (detail = full), so it is not "
            "attached; open the full report (above) instead."
        )
    if detail != "summary":
        return (
            "The summary does not say the report's detail level, so it is not attached; "
            "open the full report (above) instead."
        )
    return None


def _attachment(
    summary: Mapping[str, Any], report_path: Path, settings: EmailSettings
) -> tuple[bytes | None, str | None]:
    if not settings.attach_report:
        return None, None
    refusal = _attach_refusal(summary)
    if refusal is not None:
        return None, refusal
    try:
        size = report_path.stat().st_size
        if size > settings.attach_max_bytes:
            return None, (
                f"The report ({size / 1e6:.1f} MB) is larger than attach_max_bytes "
                f"({settings.attach_max_bytes / 1e6:.1f} MB) and is not attached."
            )
        return report_path.read_bytes(), "The full report is attached."
    except OSError:
        return None, "The report could not be read and is not attached."


def _attention_first(projects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Projects that need a look first, then those with activity, each in summary order."""

    def rank(project: dict[str, Any]) -> int:
        if project["capacity_level"] not in ("ok", "") or project["skipped"]:
            return 0
        return 1 if project["transfers_created"] or project["ids_created"] else 2

    return sorted(projects, key=rank)


def _project(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, Mapping) else {}
    project: dict[str, Any] = {key: _int(raw.get(key)) for key in _PROJECT_INTS}
    skipped = raw.get("skipped")
    project["skipped"] = (
        sum(_int(v) for v in skipped.values()) if isinstance(skipped, Mapping) else _int(skipped)
    )
    project["incoming_text"] = plural(project["incoming"], "study", "studies")  # with its unit
    project["project"] = _text(raw.get("project"))
    project["ae_title"] = _text(raw.get("ae_title"))
    project["pattern"] = _text(raw.get("pattern"))
    shared = raw.get("shares_ae_title_with")
    project["shared_with"] = ", ".join(_text(n) for n in shared) if isinstance(shared, list) else ""
    level = _text(raw.get("capacity_level")).lower()
    project["capacity_level"] = level
    project["capacity_colour"] = _LEVEL_COLOURS.get(level, "#92400e" if level else "#1f2328")
    fraction = raw.get("capacity_fraction")
    project["capacity_percent"] = f"{fraction * 100:.0f}%" if _finite(fraction) else ""
    forecast = _mapping(raw.get("forecast"))
    project["forecast"] = _text(forecast.get("text"))
    project["full_on"] = _text(forecast.get("full_on"))  # the short form, in the table
    return project


def _audit_project(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, Mapping) else {}
    project: dict[str, Any] = {key: _int(raw.get(key)) for key in _AUDIT_PROJECT_INTS}
    for key in ("project", "ae_title", "pattern"):
        project[key] = _text(raw.get(key))
    return project


def _finding(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, Mapping) else {}
    finding: dict[str, Any] = {key: _text(raw.get(key)) for key in ("kind", "project", "message")}
    finding["action"] = _text(raw.get("action"), _MAX_ACTION)
    finding["problem"] = _text(raw.get("severity")).lower() != _NOTICE
    finding["count"] = _int(raw.get("count"))
    return finding


def _anomaly(raw: Any) -> dict[str, str]:
    raw = raw if isinstance(raw, Mapping) else {}
    return {key: _text(raw.get(key)) for key in ("kind", "project", "message", "action", "seen")}


def _counts_known(summary: Mapping[str, Any]) -> bool:
    """False for a run that stopped before planning or whose write failed part-way."""
    if summary.get("transfers_created") is None:
        return False
    return planned(summary)


def _changes(raw: Any) -> dict[str, Any]:
    """``changes_text`` ("since the last run …: 1 new, …") and the ``resolved`` anomalies."""
    if not isinstance(raw, Mapping):
        return {"changes_text": "", "resolved": [], "resolved_more": 0}
    resolved = [
        {key: _text(r.get(key)) for key in ("kind", "project", "message")}
        for r in _list(raw.get("resolved"))
        if isinstance(r, Mapping)
    ]
    text = _text(raw.get("text"))
    return {
        "changes_text": text[:1].upper() + text[1:],
        "resolved": resolved[:_MAX_RESOLVED],
        "resolved_more": max(0, len(resolved) - _MAX_RESOLVED),
    }


def _error(raw: Any, mode: str = "") -> dict[str, str] | None:
    if not isinstance(raw, Mapping):
        return None
    error = {key: _text(raw.get(key)) for key in ("step", "type", "message")}
    error["written"] = written_after(error["step"], mode)  # the report's very words
    cause = cause_of(_text(raw.get("kind")) or None, error["type"])  # older summaries: by type
    error["cause"] = _text(raw.get("cause")) or cause.label
    error["action"] = _text(raw.get("action"), _MAX_ACTION) or cause.action
    return error


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a table, else an empty one: a summary from an older or broken
    writer must not stop the mail."""
    return value if isinstance(value, Mapping) else {}


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _text(value: Any, limit: int = _MAX_TEXT) -> str:
    if value is None or isinstance(value, Mapping | list | tuple):
        return ""
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if _finite(value) and abs(value) < 1e18:
        return int(value)
    return 0


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _when(value: Any) -> str:
    text = _text(value)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _duration(value: Any) -> str:
    if not _finite(value) or value < 0:
        return ""
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    return f"{minutes} min {seconds} s"
