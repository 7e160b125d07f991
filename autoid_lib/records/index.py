"""``reports/index.html``: a status page over the run folders, read from their summary.json.

At the top, the current state (the newest run's status and headline), the last success, the
failure streak, the last audit, which kit, REDCap host and config produced the newest run and
whether its re-read after writing matched; then charts of the recent live runs
(``records.charts``); below, one row per run folder, newest first, each linking its report,
run.log and summary.json (reports link back: ``records.navigation``).

Rebuilt from the folders every time (after each run and after pruning), so it can never list a
run that is gone or miss one that exists. Shows only what summary.json holds: times, counts,
status and the error step, never patient data. Self-contained: inline CSS, no scripts.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoid_lib.environment import describe
from autoid_lib.failures import cause_of
from autoid_lib.private_files import private_folder, write_private
from autoid_lib.records.charts import RECENT_RUNS, chart_runs, history_charts
from autoid_lib.records.folders import (
    INDEX_FILE,
    LOG_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    RunFolder,
    read_summary,
    run_folders,
)
from autoid_lib.records.summary import Summary
from autoid_lib.records.summary import planned as summary_planned
from autoid_lib.vocab import YIELD_TODO, AnomalyKind, RunMode, Status, plural, verified_counts

_CSS = """
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
color:#1d2329;overflow-wrap:break-word}
main{max-width:1100px;margin:0 auto;padding:20px 24px}
h1{font-size:21px;margin:4px 0 4px}p{color:#5b6670;margin:0 0 12px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border-bottom:1px solid #d8dde2;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#f3f5f7;white-space:normal;vertical-align:bottom}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.err{white-space:normal;color:#5b6670;min-width:10em}
td.files{white-space:normal;min-width:9em}
td.err .todo{font-size:12px}td.err .msg{font-size:12px;color:#1d2329;margin:2px 0}
td.err details summary{cursor:pointer;font-size:12px}
.wide{overflow-x:auto;width:100%}
.s{font-weight:600;border-radius:3px;padding:0 5px}
.s-ok{color:#1e7b34;background:#edf7ef}.s-attention{color:#9a5b00;background:#fff6e5}
.s-failed{color:#b3261e;background:#fdeceb}.s-unknown{color:#5b6670;background:#f3f5f7}
.s-yielded{color:#3d5a80;background:#eef2f7}
tr.dry td{color:#5b6670}
td a{color:#0b5cad;text-decoration:none}td a:hover{text-decoration:underline}
.state{border-radius:6px;padding:10px 14px;margin:8px 0 14px}
.state .big{font-weight:700;font-size:18px}.state ul{margin:4px 0 0;padding-left:18px;
color:#1d2329}.state li{margin:1px 0}
.state-ok{background:#edf7ef;border:1px solid #9fd0aa}
.state-attention{background:#fff6e5;border:1px solid #f0c46e}
.state-failed{background:#fdeceb;border:1px solid #eea29c}
.state-unknown{background:#f3f5f7;border:1px solid #d8dde2}
.state-yielded{background:#eef2f7;border:1px solid #b4c2d3}
.charts{margin:0 0 14px}.charts h2{font-size:15px;margin:0 0 2px}
.charts svg{display:block;width:100%;max-width:1000px;height:auto;margin:2px 0 6px}
.charts .legend{font-size:12px;margin:0 0 2px}
.charts .sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 6px}
"""
_JOB_MODES = (RunMode.LIVE, RunMode.DRY)  # the scheduled job's runs (not audits or repairs)


def rebuild_index(reports_dir: Path | str) -> Path:
    """Rewrite ``<reports_dir>/index.html`` from the run folders; returns its path."""
    reports_dir = Path(reports_dir)
    private_folder(reports_dir)
    folders = run_folders(reports_dir)
    rows = [_row(path, parsed.started, parsed.mode) for path, parsed in folders]
    rows.reverse()  # newest first
    generated = datetime.now(UTC)
    state = _state_box(folders)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Auto-ID runs</title><style>{_CSS}</style></head><body><main>"
        "<h1>Auto-ID runs</h1>"
        + state
        + _charts(folders)
        + f"<p>{len(rows)} run(s), newest first. Updated {generated:%Y-%m-%d %H:%M} UTC. "
        "Times are UTC; counts of a dry run are what it would have created.</p>"
        '<div class="wide"><table><thead><tr><th>started (UTC)</th><th>mode</th><th>status</th>'
        '<th class="num">transfers</th><th class="num">new IDs</th>'
        '<th class="num">reused IDs</th><th class="num">skipped studies</th>'
        '<th class="num">anomalies</th><th class="num">duration (whole command)</th>'
        "<th>files</th>"
        "<th>error</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>"
        "</main></body></html>\n"
    )
    path = reports_dir / INDEX_FILE
    write_private(path, page)
    return path


def _charts(folders: list[tuple[Path, RunFolder]]) -> str:
    """The charts of the newest live runs (``records.charts``), from their summary.json."""
    live = [(path, parsed) for path, parsed in folders if parsed.mode == RunMode.LIVE]
    entries = [
        (parsed.started, path.name, read_summary(path) or {})
        for path, parsed in live[-RECENT_RUNS:]
    ]
    return history_charts(chart_runs(entries))


def _row(folder: Path, started: datetime, mode: RunMode) -> str:
    summary: Summary = read_summary(folder) or {}
    known = Status.parse(summary.get("status"))
    status, label = (known.value, known.label) if known else ("unknown", "unknown")
    link = _files(folder, summary)
    error = summary.get("error")
    error_cell = ""
    if error and known == Status.YIELDED:  # not an error: who was writing, and nothing to do
        error_cell = (
            f"{_e(error.get('step', ''))}: <b>{_e(_first_clause(error.get('message', '')))}</b>"
            "<details><summary>details</summary>"
            f'<div class="msg">{_e(error.get("message", ""))}</div>'
            f'<div class="todo">{_e(YIELD_TODO)}</div></details>'
        )
    elif error:
        cause = cause_of(error.get("kind"), error.get("type", ""))
        # one line a row; the message and the advice one click away, the message first, so
        # an advice that points at "REDCap's message above" has it above
        error_cell = (
            f"{_e(error.get('step', ''))}: <b>{_e(error.get('cause') or cause.label)}</b>"
            "<details><summary>details</summary>"
            f'<div class="msg">{_e(error.get("message", ""))}</div>'
            f'<div class="todo">{_e(error.get("action") or cause.action)}</div></details>'
        )
    error_cell += "".join(  # a ticket left in REDCap: not an error, but others wait for it
        "<div>lease: <b>ticket not given back</b><details><summary>details</summary>"
        f'<div class="msg">{_e(entry.get("message", ""))}</div>'
        f'<div class="todo">{_e(entry.get("action", ""))}</div></details></div>'
        for entry in _lease_not_released(summary)
    )
    skipped, anomalies = summary.get("skipped"), summary.get("anomalies")
    # a run that stopped before planning knows no skipped studies and only the run's own
    # anomalies (a lease not given back): "—", not 0, unless it has one of those
    planned = summary_planned(summary)
    known_anomalies = planned or bool(_lease_not_released(summary))
    cells = [
        f"<td>{started:%Y-%m-%d %H:%M:%S}</td>",
        f"<td>{_e(summary.get('mode') or mode)}</td>",
        f'<td><span class="s s-{status}">{_e(label)}</span></td>',
        _num(summary.get("transfers_created") if planned else None),
        _num(summary.get("ids_created") if planned else None),
        _num(summary.get("ids_reused") if planned else None),
        _num(sum(skipped.values()) if isinstance(skipped, dict) and planned else None),
        _num(len(anomalies) if isinstance(anomalies, list) and known_anomalies else None),
        _duration(summary),
        f'<td class="files">{link}</td>',
        f'<td class="err">{error_cell}</td>',
    ]
    css = ' class="dry"' if mode == RunMode.DRY else ""
    return f'<tr id="{_e(folder.name)}"{css}>{"".join(cells)}</tr>'


def _files(folder: Path, summary: Summary) -> str:
    """Links to the run's report, run.log and summary.json (those that exist)."""
    report = folder / str(summary.get("report") or REPORT_FILE)
    links = [
        f'<a href="{_e(folder.name)}/{_e(path.name)}">{label}</a>'
        for path, label in ((report, "report"), (folder / LOG_FILE, "run.log"),
                            (folder / SUMMARY_FILE, "summary.json"))
        if path.is_file()
    ]  # fmt: skip
    return " · ".join(links) or "—"


def _duration(summary: Summary) -> str:
    """``0.1 s (4.0 s)``: the run's own time and the whole command's."""
    own = summary.get("duration_s")
    whole = (summary.get("timings_s") or {}).get("command")
    if isinstance(own, bool) or not isinstance(own, int | float):
        return '<td class="num">—</td>'
    text = f"{own:.1f} s"
    if isinstance(whole, int | float) and not isinstance(whole, bool):
        text += f" ({whole:.1f} s)"
    return f'<td class="num">{_e(text)}</td>'


# -- the state at the top -----------------------------------------------------------------------


def _state_box(folders: list[tuple[Path, RunFolder]]) -> str:
    """Current state, last success, failure streak, last audit, environment, verification."""
    job = [(path, parsed) for path, parsed in reversed(folders) if parsed.mode in _JOB_MODES]
    if not job:
        return '<div class="state state-unknown"><span class="big">No run recorded yet</span></div>'
    summaries = [(path, parsed, read_summary(path) or {}) for path, parsed in job]
    path, parsed, newest = summaries[0]
    known = Status.parse(newest.get("status"))
    status, label = (known.value, known.label) if known else ("unknown", "unknown")
    facts = [
        f"Last run: {_link(path, parsed)} ({_e(RunMode(parsed.mode).label)}) — "
        f"{_e(newest.get('headline') or label)}"
    ]
    facts.append(_last_success(summaries))
    streak = _failure_streak(summaries)
    if streak:
        since = streak[-1]
        facts.append(
            f"<b>Failing: {plural(len(streak), 'run')} in a row</b>, since "
            f"{_link(since[0], since[1])}"
        )
    audit = next(((p, f) for p, f in reversed(folders) if f.mode == RunMode.AUDIT), None)
    if audit is not None:
        audit_status = Status.parse((read_summary(audit[0]) or {}).get("status"))
        facts.append(
            f"Last audit: {_link(*audit)} — {_e(audit_status.label if audit_status else '?')}"
        )
    verified = _verification(summaries)
    if verified:
        facts.append(verified)
    for entry in _lease_not_released(newest):
        clause, action = _first_clause(entry.get("message", "")), entry.get("action", "")
        facts.append(f"<b>{_e(clause)}</b> by the last run: {_e(action)}")
    produced_by = describe(newest.get("environment"))
    if produced_by:
        facts.append(f"Produced by: {_e(produced_by)}")
    items = "".join(f"<li>{fact}</li>" for fact in facts)
    return (
        f'<div class="state state-{status}"><span class="big s-{status}">{_e(label)}</span>'
        f"<ul>{items}</ul></div>"
    )


def _lease_not_released(summary: Summary) -> list[dict[str, Any]]:
    """The summary's ``lease_not_released`` anomalies: a ticket left in REDCap."""
    anomalies = summary.get("anomalies")
    return [
        a
        for a in (anomalies if isinstance(anomalies, list) else [])
        if isinstance(a, dict) and a.get("kind") == AnomalyKind.LEASE_NOT_RELEASED
    ]


def _first_clause(message: object) -> str:
    """``The REDCap lease ticket 37 was not given back`` from its anomaly's message."""
    text = str(message).partition(":")[0]
    return text[:1].upper() + text[1:]


def _link(path: Path, parsed: RunFolder) -> str:
    return f'<a href="{_e(path.name)}/{REPORT_FILE}">{parsed.started:%Y-%m-%d %H:%M} UTC</a>'


def _last_success(summaries) -> str:
    for path, parsed, summary in summaries:
        if parsed.mode == RunMode.LIVE and summary.get("status") in (Status.OK, Status.ATTENTION):
            return f"Last successful live run: {_link(path, parsed)}"
    return "Last successful live run: none recorded"


def _failure_streak(summaries) -> list:
    """The newest runs that failed in a row, newest first (empty: the newest did not fail).
    A run that yielded to another says nothing about the failure: it is passed over, neither
    ending the streak nor counted in it."""
    streak = []
    for entry in summaries:
        status = entry[2].get("status")
        if status == Status.YIELDED:
            continue
        if status != Status.FAILED:
            break
        streak.append(entry)
    return streak


def _verification(summaries) -> str:
    """The newest live run's re-read after writing, in words (empty when none wrote)."""
    for path, parsed, summary in summaries:
        verified = summary.get("verified")
        if parsed.mode != RunMode.LIVE or not isinstance(verified, dict):
            continue
        when = _link(path, parsed)
        if not verified.get("matched"):
            return f"<b>Re-read after writing ({when}): REDCap did not hold what was written</b>"
        return f"Re-read after writing ({when}): {verified_counts(verified)} match"
    return ""


def recent_summaries(reports_dir: Path | str, limit: int = 10) -> list[dict[str, Any]]:
    """The summary.json of the newest ``limit`` run folders, newest first (unreadable: {}),
    each with its ``folder`` name."""
    folders = run_folders(reports_dir)[::-1][:limit]
    return [{**(read_summary(path) or {}), "folder": path.name} for path, _ in folders]


def _num(value: Any, fmt: str = "{:,}") -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return '<td class="num">—</td>'
    return f'<td class="num">{_e(fmt.format(value))}</td>'


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
