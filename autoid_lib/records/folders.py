"""The run folder's one owner: its name, its files, and reading it back.

A run folder is ``<reports_dir>/<UTC timestamp>-<mode>/`` (the mode a ``RunMode``) holding::

    run.ipynb     NOTEBOOK_FILE  the executed notebook
    report.html   REPORT_FILE    the HTML report
    summary.json  SUMMARY_FILE   counts and status (records.summary, docs/summary.md)
    run.log       LOG_FILE       the kit's log lines from the kernel
    sequence      SEQUENCE_FILE  the run's sequence number (its place in the history)

and ``<reports_dir>/index.html`` (INDEX_FILE) lists them. ``new_run_folder`` makes one;
``parse_run_folder`` accepts ``20261128T063000Z-live``, ``2026-11-28T06-30-00Z-dry`` and similar
spellings; ``run_folders`` lists a reports folder's runs, oldest first; ``read_summary`` is the
one way to read a folder's summary.json back. Retention, the index, the mail and explore all
read run folders through these.

"Oldest first" is the order the runs happened in, not the clock's: each new folder gets the
next number of ``<reports_dir>/run-sequence.json`` (SEQUENCE_STATE, claimed under a file lock),
so a clock stepped back or a folder dated next year cannot make an older run look newer.
Folders from before sequence numbers (no ``sequence`` file) come first, ordered by their names.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
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
SEQUENCE_FILE = "sequence"
SEQUENCE_STATE = "run-sequence.json"
_SEQUENCE_LOCK = ".run-sequence.lock"

log = logging.getLogger("autoid.records")

# The modes of a run folder's name, for messages and the name pattern.
RUN_MODES: tuple[str, ...] = tuple(RunMode)

_RUN_FOLDER = re.compile(
    r"^(?P<y>\d{4})-?(?P<mo>\d{2})-?(?P<d>\d{2})[T_-]?"
    r"(?P<h>\d{2})[-:]?(?P<mi>\d{2})[-:]?(?P<s>\d{2})(?:[.,](?P<f>\d{1,6}))?Z?"
    rf"-(?P<mode>{'|'.join(RUN_MODES)})$"
)


class RunFolder(NamedTuple):
    """A run folder's name, read: when the run started (UTC) and its mode; ``seq`` its sequence
    number, if known (``run_folders`` reads it; None for a folder from before them)."""

    started: datetime
    mode: RunMode
    seq: int | None = None


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
    """Every run folder directly under ``reports_dir``, oldest first (symlinks ignored).

    Ordered by sequence number (the order the runs happened in); folders without one first,
    by the time in their names."""
    reports_dir = Path(reports_dir)
    found = []
    try:
        entries = list(reports_dir.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        parsed = parse_run_folder(entry.name)
        if parsed and entry.is_dir() and not entry.is_symlink():
            found.append((entry, parsed._replace(seq=run_sequence(entry))))
    found.sort(key=lambda item: history_key(item[1], item[0].name))
    return found


def history_key(parsed: RunFolder, name: str) -> tuple[bool, int, datetime, str]:
    """A run folder's place in the history: by sequence number, unnumbered folders first."""
    return (parsed.seq is not None, parsed.seq or 0, parsed.started, name)


def run_sequence(folder: Path) -> int | None:
    """A run folder's sequence number; None if it has none (an older folder) or it is unreadable."""
    try:
        text = (folder / SEQUENCE_FILE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def trusted_times(
    folders: list[tuple[Path, RunFolder]], now: datetime, tolerance: timedelta = timedelta(hours=1)
) -> dict[Path, datetime | None]:
    """When each run (``run_folders``' order) can be trusted to have started, by its name.

    A run cannot have started after a run that came after it, so its time is at most every
    later run's; a time still beyond ``now`` (+ ``tolerance``) is unknown (None): the clock
    was ahead when it ran. Pure.
    """
    trusted: dict[Path, datetime | None] = {}
    bound: datetime | None = None
    for path, parsed in reversed(folders):
        bound = parsed.started if bound is None else min(bound, parsed.started)
        trusted[path] = bound if bound <= now + tolerance else None
    return trusted


def new_run_folder(reports_dir: Path, mode: str, now: datetime) -> Path:
    """Create the folder of a run starting ``now`` (UTC), numbered in the run history.

    The name is unique even if the clock repeats a second (or a run folder of that time
    exists): milliseconds, then microseconds, are added until it is. The folder holds its
    sequence number (``run_sequence``) from the start."""
    if mode not in RUN_MODES:  # prune, the index and the mail read it from the folder name
        raise ValueError(f"a run mode is one of {', '.join(RUN_MODES)}, not {mode!r}")
    private_folder(reports_dir)
    path = _unique_folder(reports_dir, mode, now)
    write_private(path / SEQUENCE_FILE, f"{claim_sequence(reports_dir)}\n")
    return path


def _unique_folder(reports_dir: Path, mode: str, now: datetime) -> Path:
    second = f"{now:%Y%m%dT%H%M%S}"
    names = itertools.chain(
        (f"{second}Z-{mode}", f"{second}.{now.microsecond // 1000:03d}Z-{mode}"),
        (f"{second}.{micro:06d}Z-{mode}" for micro in range(now.microsecond, 1_000_000)),
    )
    for name in names:
        try:
            (reports_dir / name).mkdir(mode=0o700)
        except FileExistsError:
            continue
        return reports_dir / name
    raise FileExistsError(f"no free run folder name for {second}Z-{mode} in {reports_dir}")


def claim_sequence(reports_dir: Path) -> int:
    """The next run sequence number of ``reports_dir`` (1, 2, ...), recorded as claimed.

    Held under a file lock, so an audit and a run starting together get different numbers.
    Without the state file (an older reports folder, or the file was lost) it continues after
    the highest number any run folder holds."""
    with _locked(reports_dir / _SEQUENCE_LOCK):
        state = reports_dir / SEQUENCE_STATE
        last = _last_claimed(state)
        if last is None:
            last = max((s for s in map(run_sequence, _folders(reports_dir)) if s), default=0)
        write_json(state, {"last": last + 1})
        return last + 1


def _last_claimed(state: Path) -> int | None:
    try:
        last = json.loads(state.read_text(encoding="utf-8"))["last"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s is unreadable; numbering continues after the run folders'", state.name)
        return None
    return last if isinstance(last, int) and not isinstance(last, bool) and last >= 0 else None


def _folders(reports_dir: Path) -> Iterator[Path]:
    for entry in reports_dir.iterdir():
        if parse_run_folder(entry.name) and entry.is_dir() and not entry.is_symlink():
            yield entry


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created 0600, never through a symlink) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


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
