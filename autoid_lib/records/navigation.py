"""Links between recorded reports: index, previous and next run, run.log and summary.json.

Each report opens with a small bar of relative links (``templates/report/index.html.j2`` draws
it from ``nav_links``); the "next" link cannot exist when a report is written, so the bar holds a
marker that ``link_next`` fills in once the next run is recorded. A distinct ``<title>`` per
report (``report_title``) tells browser tabs and bookmarks apart. Paths only: no patient data.
"""

from __future__ import annotations

import html
import logging
from datetime import datetime
from pathlib import Path

from autoid_lib.private_files import write_private
from autoid_lib.records.folders import (
    INDEX_FILE,
    LOG_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    run_folders,
)
from autoid_lib.vocab import RunMode, Status

log = logging.getLogger("autoid.records")

NEXT_MARKER = "<!--autoid:next-->"
NO_NEXT = '<span class="muted">next →</span>'


def report_title(mode: str, status: str | None, started: datetime) -> str:
    """``Auto-ID live run · Needs attention · 2026-12-04 16:19 UTC``."""
    try:
        what = RunMode(mode).label
    except ValueError:
        what = str(mode)
    known = Status.parse(status)
    parts = [f"Auto-ID {what}", known.label if known else "", f"{started:%Y-%m-%d %H:%M} UTC"]
    return " · ".join(p for p in parts if p)


def neighbours(run_dir: Path) -> tuple[Path | None, Path | None]:
    """The run folders recorded just before and just after ``run_dir`` (None at an end)."""
    folders = [path for path, _ in run_folders(run_dir.parent)]
    try:
        i = [p.name for p in folders].index(run_dir.name)
    except ValueError:
        return None, None
    before = folders[i - 1] if i > 0 else None
    after = folders[i + 1] if i + 1 < len(folders) else None
    return before, after


def nav_html(run_dir: Path) -> str:
    """The bar of a report in ``run_dir``: links relative to the report itself."""
    before, _ = neighbours(run_dir)
    previous = (
        f'<a href="../{_e(before.name)}/{REPORT_FILE}" rel="prev">← previous</a>'
        if before is not None
        else '<span class="muted">← previous</span>'
    )
    links = [
        f'<a href="../{INDEX_FILE}#{_e(run_dir.name)}">all runs</a>',
        previous,
        NEXT_MARKER + NO_NEXT,
        f'<a href="{LOG_FILE}">run.log</a>',
        f'<a href="{SUMMARY_FILE}">summary.json</a>',
    ]
    return f'<nav class="runs">{" · ".join(links)}</nav>'


def link_next(run_dir: Path) -> None:
    """Fill the "next" link of the report recorded before ``run_dir`` (best effort)."""
    before, _ = neighbours(run_dir)
    if before is None:
        return
    report = before / REPORT_FILE
    try:
        page = report.read_text(encoding="utf-8")
    except OSError:
        return
    if NEXT_MARKER + NO_NEXT not in page:
        return
    link = f'<a href="../{_e(run_dir.name)}/{REPORT_FILE}" rel="next">next →</a>'
    try:
        write_private(report, page.replace(NEXT_MARKER + NO_NEXT, NEXT_MARKER + link, 1))
    except OSError as error:
        log.warning("the previous report's next link not set: %s", error.strerror)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
