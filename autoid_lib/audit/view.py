"""The audit report's display: status box, tables with plain-words headers, run details.

Formats an ``AuditReport`` the way ``autoid_lib.report`` formats a run: the same coloured box,
the same table markup (styled by ``templates/report/report.css``), headers in words instead of
column names, commands as ``<code>`` instead of literal backticks. It decides nothing: which rows
and columns a detail level shows is ``checks.shown_table``'s rule.
"""

from __future__ import annotations

import html
import re

import pandas as pd
from IPython.display import HTML

from autoid_lib import report as run_report
from autoid_lib.audit.checks import (
    DETAILS,
    PROBLEM,
    AuditReport,
    Finding,
    shown_table,
)
from autoid_lib.environment import describe
from autoid_lib.vocab import plural

#: a column's header in words; a column not listed keeps its name with spaces for underscores
HEADERS = {
    "ae_title": "AE title",
    "study_date": "study date",
    "study_ref": "study",
    "study_uid": "study UID",
    "autoid_records": "AutoID records",
    "autoid_record": "AutoID record",
    "values": "IDs",
    "value": "ID",
    "ids": "IDs",
    "requested_projects": "requested for",
    "requested": "requested on",
    "transfer_date": "sent on",
    "sent_under": "sent under",
    "requested_again": "requested again under",
    "stored_as": "stored as",
    "transfers": "transfers",
    "transferred": "with a transfer",
}
NUMERIC = frozenset({"studies", "transferred", "ids", "transfers", "rows"})
MONO = frozenset({"ae_title", "pattern", "study_ref", "study_uid", "value", "values"})
_CODE = re.compile(r"`([^`]+)`")


def header(column: str) -> str:
    """``ae_title`` → ``AE title``; ``study_ref`` → ``study``."""
    return HEADERS.get(column, column.replace("_", " "))


def rich_text(text: str) -> str:
    """Escaped text with each `command` as <code> (never a literal backtick)."""
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def table_html(frame: pd.DataFrame, totals: dict | None = None) -> str:
    """A DataFrame as the report's table: word headers, numbers right-aligned, codes mono."""
    columns = list(frame.columns)
    head = "".join(
        f"<th{' class=num' if c in NUMERIC else ''}>{html.escape(header(c))}</th>" for c in columns
    )
    rows = [_row(record, columns) for record in frame.to_dict("records")]
    if totals is not None:
        rows.append(_row(totals, columns, css=' class="total"'))
    body = "\n".join(rows)
    return (
        f'<div class="table-wrap"><table class="autoid"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def _row(record: dict, columns: list[str], css: str = "") -> str:
    cells = []
    for column in columns:
        names = [n for n, s in (("num", NUMERIC), ("mono", MONO)) if column in s]
        cls = f' class="{" ".join(names)}"' if names else ""
        cells.append(f"<td{cls}>{_cell(record.get(column))}</td>")
    return f"<tr{css}>{''.join(cells)}</tr>"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


# -- the report's parts ---------------------------------------------------------------------------


def status_box(report: AuditReport) -> HTML:
    """The coloured box: OK / Needs attention, what was found, and how the audit ran."""
    if report.findings:
        counts = "; ".join(f"{f.title}: {f.count:,}" for f in report.findings)
        what = f"{html.escape(report.outcome.capitalize())}. {html.escape(counts)}."
    else:
        what = "Nothing found: every invariant holds over all history."
    facts = f"audit of all history ({report.scope})"
    facts += f" · window from {report.window_begin:%Y-%m-%d %H:%M} ({report.lookback_days} days)"
    if report.run is not None:
        facts += (
            f" · started {report.run.started:%Y-%m-%d %H:%M:%S} UTC · "
            f"{report.run.duration_s:.1f} s · {plural(report.run.api_requests, 'API request')}"
        )
    return HTML(run_report.status_box(report.status, what, facts))


def projects_table(report: AuditReport) -> HTML:
    """One row per auto-ID project (a shared AE title's studies in their own row) and totals:
    each study counted once."""
    frame = report.projects
    if frame.empty:
        return HTML('<p class="note">No auto-ID project is configured.</p>')
    totals = {
        "project": "total (each study once)",
        "studies": int(frame["studies"].sum()),
        "transferred": int(frame["transferred"].sum()),
        "ids": int(frame["ids"].sum()),
    }
    return HTML(table_html(frame, totals))


def findings_html(report: AuditReport, detail: str = "summary") -> str:
    """Every finding: title, count, what to do, its table (the report's main part)."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {DETAILS}, not {detail!r}")
    if not report.findings:
        return "<p><b>Nothing found.</b> Every invariant holds over all history.</p>"
    return "\n".join(_finding_html(f, detail) for f in report.findings)


def _finding_html(finding: Finding, detail: str) -> str:
    label = "Problem" if finding.severity == PROBLEM else "Notice"
    parts = [
        f"<h3>{html.escape(finding.title)} — {finding.count:,}</h3>"
        f"<p><i>{label}.</i> <b>What to do:</b> {rich_text(finding.action)}</p>"
    ]
    if finding.groups is not None:
        parts.append(table_html(finding.groups))
    table = shown_table(finding.table, detail)
    parts.append(table_html(table))
    notes = []
    hidden = len(finding.table) - len(table)
    if hidden > 0:
        notes.append(f"… and {hidden:,} more")
    if len(table.columns) < len(finding.table.columns) - 1:  # more than the study UID left out
        notes.append("pseudonyms are left out beside study references")
    if notes:
        parts.append(
            f'<p class="note">{"; ".join(notes)} at detail = summary '
            "(<code>autoid audit --detail full</code> lists them).</p>"
        )
    return "\n".join(parts)


def pending_table(report: AuditReport, detail: str = "summary") -> HTML:
    """Studies in the window still without a transfer (not a finding), counted, with what the
    next run does with each (the planner's word) and how many are not shown."""
    if report.pending.empty:
        return HTML('<p class="note">None: every study in the window has its transfer.</p>')
    total = len(report.pending)
    table = shown_table(report.pending, detail)
    skipped = int(report.pending["reason"].str.startswith("the next run skips it").sum())
    head = (
        f"<p><b>{plural(total, 'study', 'studies')}</b> in the run window without a transfer "
        f"request: the next run serves {total - skipped:,} and skips {skipped:,} "
        "(the reason says why).</p>"
    )
    more = ""
    if len(table) < total:
        more = (
            f'<p class="note">… and {total - len(table):,} more at detail = summary '
            "(<code>autoid audit --detail full</code> lists them).</p>"
        )
    return HTML(head + table_html(table) + more)


def run_details(report: AuditReport, detail: str = "summary", command_started: str = "") -> HTML:
    """API requests, duration (the audit's and the whole command's so far), detail level and
    which kit, REDCap and config produced it."""
    pairs = [("Detail", detail), ("Scope", f"all history: {report.scope}")]
    if report.run is not None:
        pairs[:0] = [
            ("API requests", f"{report.run.api_requests:,} (the audit only reads)"),
            ("Duration", f"{report.run.duration_s:.2f} s (REDCap reads and checks)"),
        ]
        if report.run.peak_rss_mb:
            peak = f"{report.run.peak_rss_mb:,.0f} MiB (the audit's kernel, reads and checks)"
            pairs.insert(2, ("Peak memory", peak))
        whole = run_report.command_time(command_started)
        if whole:
            pairs.insert(2, ("Whole command", whole))
        env = describe(report.run.environment)
        if env:
            pairs.append(("Produced by", env))
    items = "".join(f"<li><b>{html.escape(k)}:</b> {html.escape(v)}</li>" for k, v in pairs)
    return HTML(f'<ul class="facts-list">{items}</ul>')
