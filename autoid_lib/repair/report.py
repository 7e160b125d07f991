"""The repair's record for people: ``repair.html`` for the PI, ``worksheet.csv`` for the PACS team.

Pure: a ``RepairPlan`` and how the repair ended in, text out. Neither carries a patient ID, a
patient name or a hash. The page shows a study by project, short reference (the UID's last 8
characters) and dates; the worksheet adds the full study UID, which the PACS team needs to find
the copy to delete. IDs shown are research pseudonyms, as in every run report.
"""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from dataclasses import dataclass

from autoid_lib.repair.plan import RESEND_PLANNED, RepairPlan
from autoid_lib.report import html_table
from autoid_lib.result import study_ref
from autoid_lib.retired import RETIRED_PREFIX, name_key
from autoid_lib.snapshot import is_kit_project_name

WORKSHEET_COLUMNS = (
    "study_ref",
    "study_uid",
    "project",
    "sent_under",
    "belongs_under",
    "requested",
    "sent",
    "new_request",
)
DRAWN_AT_APPLY = "new ID drawn by --apply"  # the dry worksheet's belongs_under for one
HTML_ROWS = 500  # rows per table on the page; the worksheet always has all of them

RULE = (
    "For each auto-ID project, every pairing of a patient with an ID (from AutoID rows and "
    "from transfer requests) is ranked: pairings a study was sent under come first, by the "
    "earliest request date, then by the lowest AutoID record number. Going down that list, a "
    "pairing is kept when neither its patient nor its ID is taken yet: an ID stays with the "
    "patient first sent under it, and a patient keeps the first ID it was sent under among "
    "those still free. Every other pairing is retired: its AutoID row is renamed to "
    "autoid-kit:retired:&lt;project&gt;, so the ID is never handed out again and nobody is "
    "served under it. A patient left without an ID gets a new one from the project's pattern. "
    "Rows for an empty patient ID are retired."
)


@dataclass(frozen=True)
class Ending:
    """How the repair ended, for the page's status box."""

    applied: bool
    resend: bool
    error: str = ""  # "step: message" of a failure, never patient data
    problems: tuple[str, ...] = ()  # differences found by the re-read after writing
    api_requests: int = 0
    started: str = ""
    config: str = ""  # the config file, for the command that applies a dry repair


def status(plan: RepairPlan | None, ending: Ending) -> str:
    """ok | attention | failed, as summary.json and the index show it."""
    if ending.error or ending.problems or plan is None:
        return "failed"
    pending = not plan.is_empty(resend=ending.resend) if not ending.applied else False
    unresolved = any(p.unresolved for p in plan.projects)
    if pending or unresolved or plan.wrong_copies:
        return "attention"
    return "ok"


RESEND_CREATED = "new request created"


def _request_state(value: str, ending: Ending | None) -> str:
    """A planned resend that this repair wrote is reported as written."""
    if value == RESEND_PLANNED and ending and ending.applied and ending.resend:
        return RESEND_CREATED
    return value


def _example(plan: RepairPlan, project: str, value: str, ending: Ending | None) -> bool:
    """A dry run's newly drawn ID: an example, ``--apply`` draws the real one."""
    applied = ending is not None and ending.applied
    return not applied and (name_key(project), value) in plan.drawn


def worksheet_csv(plan: RepairPlan, ending: Ending | None = None) -> str:
    """Every wrong copy in the research PACS, one line each, for the PACS team.

    A dry run's worksheet says ``new ID drawn by --apply`` where the patient gets a new ID:
    the dry run's draw is only an example and would mislead the PACS team."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(WORKSHEET_COLUMNS)
    for c in _sorted_copies(plan):
        writer.writerow(
            [
                study_ref(c.study_uid),
                c.study_uid,
                c.project_name,
                c.sent_under,
                DRAWN_AT_APPLY
                if _example(plan, c.project_name, c.belongs_under, ending)
                else c.belongs_under,
                c.requested_date,
                c.sent_date,
                _request_state(c.new_request, ending),
            ]
        )
    return out.getvalue()


def _sorted_copies(plan: RepairPlan):
    return sorted(plan.wrong_copies, key=lambda c: (c.project_name, c.requested_date, c.study_uid))


def repair_html(plan: RepairPlan | None, ending: Ending, css: str) -> str:
    """The PI's page: what changes in AutoID, what is sent again, what the PACS must delete."""
    state = status(plan, ending)
    when = f" — {ending.started}" if ending.started else ""
    title = f"Auto-ID repair: {_LABEL[state]}{' (dry run)' if not ending.applied else ''}{when}"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{css}</style></head><body>"
        '<main class="report"><nav class="runs"><a href="../index.html">all runs</a> · '
        '<a href="worksheet.csv">worksheet.csv</a> · <a href="summary.json">summary.json</a>'
        "</nav><h1>Auto-ID repair report</h1>",
        _status_box(plan, ending, state),
    ]
    if plan is not None:
        parts += [
            "<h2>The rule</h2>",
            f"<p>{RULE}</p>",
            "<h2>Per project</h2>",
            _projects_table(plan),
            "<h2>What changes in AutoID</h2>",
            _autoid_table(plan, ending),
            "<h2>What the research PACS team must do</h2>",
            _pacs_text(plan, ending),
            _copies_table(plan, ending),
        ]
    parts.append("</main></body></html>\n")
    return "".join(parts)


_LABEL = {"ok": "Nothing to repair", "attention": "Needs attention", "failed": "FAILED"}


def _status_box(plan: RepairPlan | None, ending: Ending, state: str) -> str:
    if ending.applied:
        mode = "applied" + (" with --resend" if ending.resend else " (no transfer sent again)")
    else:
        mode = "dry run: nothing was written"
    label = _LABEL[state]
    if state == "attention" and ending.applied and not ending.problems:
        label = "Repaired"
    facts = [mode, f"{ending.api_requests} API request(s)"]
    if ending.started:
        facts.insert(0, f"started {ending.started}")
    lines = [f'<div class="status {state}"><span class="label">{_e(label)}</span>']
    if plan is not None:
        done = _applied_text(plan, ending) if ending.applied else None
        lines.append(f"<span>{_e(done or 'would write: ' + plan.describe())}</span>")
    lines.append(f'<div class="facts">{_e(" · ".join(facts))}</div></div>')
    if plan is not None and not ending.applied and not plan.is_empty(resend=True):
        apply = f"autoid repair --config {ending.config} --apply" if ending.config else ""
        lines.append(
            f"<p>To write this repair: <code>{_e(apply or 'autoid repair --apply')}</code>, "
            "and with <code>--resend</code> also request again each study sent under a wrong "
            "ID (new IDs marked <em>example</em> are drawn again).</p>"
        )
    if ending.error:
        lines.append(f'<p class="note">The repair stopped at {_e(ending.error)}.</p>')
    for problem in ending.problems:
        lines.append(f'<p class="note">After writing: {_e(problem)}</p>')
    return "".join(lines)


def _applied_text(plan: RepairPlan, ending: Ending) -> str:
    """What an applied repair wrote, in the past tense (``describe`` says what it would)."""
    resend = (
        f"requested {len(plan.resend)} study(ies) again"
        if ending.resend
        else f"{len(plan.resend)} study(ies) not requested again (no --resend)"
    )
    text = (
        f"retired {sum(p.retired for p in plan.projects)} AutoID row(s), "
        f"created {sum(p.new_ids for p in plan.projects)} new ID(s), {resend}; "
        f"{len(plan.wrong_copies)} wrong copy(ies) in the research PACS to delete"
    )
    unresolved = sum(p.unresolved for p in plan.projects)
    if unresolved:
        text += f"; {unresolved} patient(s) could not get an ID"
    return text


def _projects_table(plan: RepairPlan) -> str:
    head = [
        "project",
        "patients with several IDs",
        "IDs with several patients",
        "rows for an empty ID",
        "rows retired",
        "new IDs",
        "sent again",
        "note",
    ]
    rows = [
        [
            p.name,
            p.patients_with_several_ids,
            p.ids_with_several_patients,
            p.empty_id_rows,
            p.retired,
            p.new_ids,
            p.resend,
            p.note,
        ]
        for p in plan.projects
    ]
    return html_table(head, rows, numeric={1, 2, 3, 4, 5, 6})


def _autoid_table(plan: RepairPlan, ending: Ending) -> str:
    if not plan.retirements and not plan.new_rows:
        return "<p>Nothing: every patient has one ID per project and every ID one patient.</p>"
    reasons = Counter(r.reason for r in plan.retirements)
    text = "".join(f"<li>{n} row(s) retired: {_e(reason)}</li>" for reason, n in reasons.items())
    retired_pairs = [n for n in plan.new_rows if is_kit_project_name(n.project_name)]
    live = [n for n in plan.new_rows if not is_kit_project_name(n.project_name)]
    if retired_pairs:
        text += (
            f"<li>{len(retired_pairs)} retired row(s) added for IDs a study was sent under "
            "that are not its patient's</li>"
        )
    if live:
        text += (
            f"<li>{len(live)} new AutoID row(s) (new IDs, or IDs sent before but never stored)</li>"
        )
    rows = [[r.record_id, r.project_name, r.value, "retired", r.reason] for r in plan.retirements]
    rows += [
        [
            "new",
            n.project_name.removeprefix(RETIRED_PREFIX),
            _shown_id(plan, n.project_name, n.value, ending),
            _new_kind(n),
            "",
        ]
        for n in plan.new_rows
    ]
    note = ""
    if any(_example(plan, n.project_name, n.value, ending) for n in plan.new_rows):
        note = (
            '<p class="note">New IDs marked <em>example</em> are drawn at random for this dry '
            "run; <code>--apply</code> draws them again, so the IDs it writes differ.</p>"
        )
    return (
        f"<ul>{text}</ul>"
        + html_table(["record", "project", "ID", "change", "why"], rows, numeric={0})
        + note
    )


def _shown_id(plan: RepairPlan, project: str, value: str, ending: Ending | None) -> str:
    return f"{value} (example)" if _example(plan, project, value, ending) else value


def _new_kind(row) -> str:
    return "retired (added)" if is_kit_project_name(row.project_name) else "new ID"


def _pacs_text(plan: RepairPlan, ending: Ending) -> str:
    if not plan.wrong_copies:
        return "<p>Nothing: no study was sent under an ID that is retired or reassigned.</p>"
    planned = sum(c.new_request == RESEND_PLANNED for c in plan.wrong_copies)
    if ending.applied and ending.resend:
        resend = (
            f"{len(plan.resend)} study(ies) have been requested again under the right ID; the "
            "forwarder sends them again."
        )
    elif planned:
        resend = (
            f"{planned} of them can be requested again under the right ID with "
            "<code>autoid repair --apply --resend</code>."
        )
    else:
        resend = "Every one that can be sent again has a request under its right ID."
    return (
        f"<p>The research PACS holds {len(plan.wrong_copies)} study copy(ies) under a wrong ID "
        f"(listed below and, with full study UIDs, in <code>worksheet.csv</code>). Delete each "
        f"listed copy under its <em>sent under</em> ID. {resend} A study without a patient ID "
        "has no right ID: have the sender fix it.</p>"
    )


def _copies_table(plan: RepairPlan, ending: Ending) -> str:
    copies = _sorted_copies(plan)
    if not copies:
        return ""
    rows = [
        [
            study_ref(c.study_uid),
            c.project_name,
            c.sent_under,
            _shown_id(plan, c.project_name, c.belongs_under, ending) if c.belongs_under else "—",
            c.requested_date,
            c.sent_date or "—",
            _request_state(c.new_request, ending),
        ]
        for c in copies[:HTML_ROWS]
    ]
    more = ""
    if len(copies) > HTML_ROWS:
        more = f'<p class="note">{len(copies) - HTML_ROWS} more in worksheet.csv.</p>'
    head = ["study", "project", "sent under", "belongs under", "requested", "sent", "new request"]
    return html_table(head, rows) + more


def _e(value) -> str:
    return html.escape(str(value), quote=True)
