"""Run folders by name: ``<reports_dir>/<UTC timestamp>-<mode>/``, the mode one of ``RUN_MODES``.

``parse_run_folder`` accepts ``20261128T063000Z-live``, ``2026-11-28T06-30-00Z-dry`` and similar
spellings; ``run_folders`` lists a reports folder's runs, oldest first. Retention, the index and
the mail all read run folders through these two.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

# The modes of a run folder's name: the one list ``notebook_run`` creates folders for and
# prune, the index and the mail read back.
RUN_MODES = ("live", "dry", "audit", "repair")

_RUN_FOLDER = re.compile(
    r"^(?P<y>\d{4})-?(?P<mo>\d{2})-?(?P<d>\d{2})[T_-]?"
    r"(?P<h>\d{2})[-:]?(?P<mi>\d{2})[-:]?(?P<s>\d{2})(?:[.,](?P<f>\d{1,6}))?Z?"
    rf"-(?P<mode>{'|'.join(RUN_MODES)})$"
)


class RunFolder(NamedTuple):
    """A run folder's name, read: when the run started (UTC) and its mode."""

    started: datetime
    mode: str


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
    return RunFolder(started, parts["mode"])


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
