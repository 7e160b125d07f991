"""``reports/index.html``: one row per run folder, newest first, read from its summary.json.

Rebuilt from the folders every time (after each run and after pruning), so it can never list a
run that is gone or miss one that exists. Shows only what summary.json holds: times, counts,
status and the error step, never patient data. Self-contained: inline CSS, no scripts.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from autoid_lib.failures import cause_of
from autoid_lib.private_files import private_folder, write_private
from autoid_lib.records.folders import INDEX_FILE, REPORT_FILE, read_summary, run_folders
from autoid_lib.records.summary import Summary
from autoid_lib.vocab import RunMode, Status

_CSS = """
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;
color:#1d2329}
main{max-width:1100px;margin:0 auto;padding:20px 24px}
h1{font-size:21px;margin:4px 0 4px}p{color:#5b6670;margin:0 0 12px}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border-bottom:1px solid #d8dde2;padding:4px 8px;text-align:left;white-space:nowrap}
th{background:#f3f5f7}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td.err{white-space:normal;color:#5b6670;min-width:16em}
td.err .todo{font-size:12px}
.s{font-weight:600;border-radius:3px;padding:0 5px}
.s-ok{color:#1e7b34;background:#edf7ef}.s-attention{color:#9a5b00;background:#fff6e5}
.s-failed{color:#b3261e;background:#fdeceb}.s-unknown{color:#5b6670;background:#f3f5f7}
tr.dry td{color:#5b6670}
"""


def rebuild_index(reports_dir: Path | str) -> Path:
    """Rewrite ``<reports_dir>/index.html`` from the run folders; returns its path."""
    reports_dir = Path(reports_dir)
    private_folder(reports_dir)
    rows = [_row(path, parsed.started, parsed.mode) for path, parsed in run_folders(reports_dir)]
    rows.reverse()  # newest first
    generated = datetime.now(UTC)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Auto-ID runs</title><style>{_CSS}</style></head><body><main>"
        "<h1>Auto-ID runs</h1>"
        f"<p>{len(rows)} run(s), newest first. Updated {generated:%Y-%m-%d %H:%M} UTC. "
        "Times are UTC; counts of a dry run are what it would have created.</p>"
        "<table><thead><tr><th>started (UTC)</th><th>mode</th><th>status</th>"
        '<th class="num">transfers</th><th class="num">new IDs</th>'
        '<th class="num">reused IDs</th><th class="num">skipped</th>'
        '<th class="num">anomalies</th><th class="num">duration</th><th>report</th>'
        "<th>error</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
        "</main></body></html>\n"
    )
    path = reports_dir / INDEX_FILE
    write_private(path, page)
    return path


def _row(folder: Path, started: datetime, mode: RunMode) -> str:
    summary: Summary = read_summary(folder) or {}
    known = Status.parse(summary.get("status"))
    status, label = (known.value, known.label) if known else ("unknown", "unknown")
    report = folder / str(summary.get("report") or REPORT_FILE)
    link = f'<a href="{_e(folder.name)}/{_e(report.name)}">report</a>' if report.is_file() else "—"
    error = summary.get("error")
    error_cell = ""
    if error:
        cause = cause_of(error.get("kind"), error.get("type", ""))
        error_cell = (
            f"{_e(error.get('step', ''))}: <b>{_e(error.get('cause') or cause.label)}</b>"
            f'<div class="todo">{_e(error.get("action") or cause.action)}</div>'
        )
    skipped, anomalies = summary.get("skipped"), summary.get("anomalies")
    # a run that stopped before planning knows no skipped studies or anomalies: "—", not 0
    planned = summary.get("status") != Status.FAILED or bool(summary.get("studies_in_window"))
    cells = [
        f"<td>{started:%Y-%m-%d %H:%M:%S}</td>",
        f"<td>{_e(summary.get('mode') or mode)}</td>",
        f'<td><span class="s s-{status}">{_e(label)}</span></td>',
        _num(summary.get("transfers_created") if planned else None),
        _num(summary.get("ids_created") if planned else None),
        _num(summary.get("ids_reused") if planned else None),
        _num(sum(skipped.values()) if isinstance(skipped, dict) and planned else None),
        _num(len(anomalies) if isinstance(anomalies, list) and planned else None),
        _num(summary.get("duration_s"), "{:.1f} s"),
        f"<td>{link}</td>",
        f'<td class="err">{error_cell}</td>',
    ]
    css = ' class="dry"' if mode == RunMode.DRY else ""
    return f"<tr{css}>{''.join(cells)}</tr>"


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
