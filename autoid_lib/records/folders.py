"""The run folder's one owner: its name, its files, and reading it back.

A run folder is ``<reports_dir>/<UTC timestamp>-<mode>/`` (the mode a ``RunMode``) holding::

    run.ipynb     NOTEBOOK_FILE  the executed notebook
    report.html   REPORT_FILE    the HTML report
    summary.json  SUMMARY_FILE   counts and status (records.summary, docs/summary.md)
    run.log       LOG_FILE       the kit's log lines from the kernel

and ``<reports_dir>/index.html`` (INDEX_FILE) lists them. ``new_run_folder`` makes one;
``parse_run_folder`` accepts ``20261128T063000Z-live``, ``2026-11-28T06-30-00Z-dry`` and similar
spellings; ``run_folders`` lists a reports folder's runs, oldest first; ``read_summary`` is the
one way to read a folder's summary.json back. Retention, the index, the mail and explore all
read run folders through these.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from autoid_lib.private_files import private_folder, write_private
from autoid_lib.records.summary import Summary, as_summary
from autoid_lib.vocab import RunMode

NOTEBOOK_FILE = "run.ipynb"
REPORT_FILE = "report.html"
SUMMARY_FILE = "summary.json"
LOG_FILE = "run.log"
INDEX_FILE = "index.html"

# The modes of a run folder's name, for messages and the name pattern.
RUN_MODES: tuple[str, ...] = tuple(RunMode)

_RUN_FOLDER = re.compile(
    r"^(?P<y>\d{4})-?(?P<mo>\d{2})-?(?P<d>\d{2})[T_-]?"
    r"(?P<h>\d{2})[-:]?(?P<mi>\d{2})[-:]?(?P<s>\d{2})(?:[.,](?P<f>\d{1,6}))?Z?"
    rf"-(?P<mode>{'|'.join(RUN_MODES)})$"
)


class RunFolder(NamedTuple):
    """A run folder's name, read: when the run started (UTC) and its mode."""

    started: datetime
    mode: RunMode


def parse_run_folder(name: str) -> RunFolder | None:
    """``RunFolder`` for a run folder's name, or None if the name is not one."""
    match = _RUN_FOLDER.match(name)
    if not match:
        return None
    parts = match.groupdict()
    try:
        started = datetime(
            int(parts["y"]),
            int(parts["mo"]),
            int(parts["d"]),
            int(parts["h"]),
            int(parts["mi"]),
            int(parts["s"]),
            int((parts["f"] or "0").ljust(6, "0")),
            tzinfo=UTC,
        )
    except ValueError:  # 2026-13-45 and the like
        return None
    return RunFolder(started, RunMode(parts["mode"]))


def run_folders(reports_dir: Path | str) -> list[tuple[Path, RunFolder]]:
    """Every run folder directly under ``reports_dir``, oldest first (symlinks ignored)."""
    reports_dir = Path(reports_dir)
    found = []
    try:
        entries = list(reports_dir.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        parsed = parse_run_folder(entry.name)
        if parsed and entry.is_dir() and not entry.is_symlink():
            found.append((entry, parsed))
    found.sort(key=lambda item: (item[1].started, item[0].name))
    return found


def new_run_folder(reports_dir: Path, mode: str, now: datetime) -> Path:
    """Create the folder of a run starting ``now`` (UTC); two in one second both get one."""
    if mode not in RUN_MODES:  # prune, the index and the mail read it from the folder name
        raise ValueError(f"a run mode is one of {', '.join(RUN_MODES)}, not {mode!r}")
    private_folder(reports_dir)
    path = reports_dir / f"{now:%Y%m%dT%H%M%S}Z-{mode}"
    if path.exists():  # two runs in one second: keep both, milliseconds tell them apart
        path = reports_dir / f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{mode}"
    path.mkdir(mode=0o700)
    return path


def read_summary(folder: Path) -> Summary | None:
    """A run folder's summary.json, typed; None if it is missing, unreadable or not an object."""
    try:
        data = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return as_summary(data)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` atomically (a reader never sees half a file), private to the user."""
    write_private(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
