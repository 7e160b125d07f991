"""Report retention: remove run folders older than N days and keep ``index.html`` consistent.

A run folder is ``<reports_dir>/<UTC timestamp>-<mode>/`` (``records.folders`` reads the
name). Its age is read from its name, never from file times, and anything whose name does not
parse is never touched.
The newest run of each mode is always kept, however old, so the index is never empty and the
mail's "since the last run" comparison always has a previous run. "Newest" is the run history's
order (sequence numbers, ``records.folders``), not the clock's; a folder whose name lies in the
future (the clock was ahead when it ran) has no trustworthy age: it is reported and kept, and it
never stands in for the newest run, until a later run bounds its age (``trusted_times``).

The index is rewritten by an injectable ``rebuild_index(reports_dir)`` callable; by default
``autoid_lib.records.index.rebuild_index``, imported lazily (skipped with a log line if absent).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from autoid_lib.errors import AutoIdError, ConfigError
from autoid_lib.records.folders import INDEX_FILE, parse_run_folder, run_folders, trusted_times

log = logging.getLogger("autoid.prune")

_TRASH_PREFIX = ".pruning-"  # a folder being removed; hidden from index writers


def prune_reports(
    reports_dir: Path | str,
    keep_days: int,
    now: datetime,
    dry_run: bool = False,
    rebuild_index: Callable[[Path], object] | None = None,
) -> list[Path]:
    """Remove run folders that started more than ``keep_days`` days before ``now``.

    Returns the folders removed (or, with ``dry_run``, those that would be). The newest run of
    each mode is kept. After removing anything the index is rebuilt with ``rebuild_index``.
    A folder that cannot be removed is logged, the rest go on, and an ``AutoIdError`` naming
    the failures is raised at the end (after the index was rebuilt).
    """
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or keep_days < 1:
        raise ConfigError(f"keep_days must be a whole number of days >= 1, not {keep_days!r}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise ConfigError(f"reports directory {reports_dir} does not exist; check --reports-dir")

    now = now.astimezone(UTC)
    cutoff = now - timedelta(days=keep_days)
    folders = run_folders(reports_dir)
    started = trusted_times(folders, now)
    for path, _ in folders:
        if started[path] is None:
            log.warning(
                "%s lies in the future (the clock was ahead?): kept, age unknown", path.name
            )
    newest = {  # history order, oldest first: the last dated one of each mode wins
        parsed.mode: path for path, parsed in folders if started[path] is not None
    }
    doomed = [
        path
        for path, parsed in folders
        if (moment := started[path]) is not None and moment < cutoff and newest[parsed.mode] != path
    ]
    if dry_run:
        for path in doomed:
            log.info("would remove %s", path)
        return doomed

    removed, failures = [], []
    for path in doomed:
        try:
            _remove(path)
        except OSError as error:
            log.error("cannot remove %s: %s", path, error)
            failures.append(f"{path.name}: {error.strerror or error}")
        else:
            log.info("removed %s", path)
            removed.append(path)
    _clean_leftovers(reports_dir)
    if removed:
        _rebuild(reports_dir, rebuild_index)
    if failures:
        raise AutoIdError(
            f"could not remove {len(failures)} run folder(s) ({failures[0]}); "
            f"check that the user running prune owns {reports_dir}"
        )
    return removed


def _remove(path: Path) -> None:
    """Rename out of sight first, so an index writer never sees a half-removed run."""
    trash = path.with_name(_TRASH_PREFIX + path.name)
    path.rename(trash)
    shutil.rmtree(trash)


def _clean_leftovers(reports_dir: Path) -> None:
    """Finish removals an earlier prune could not complete (only our own renamed folders)."""
    for entry in reports_dir.glob(_TRASH_PREFIX + "*"):
        if parse_run_folder(entry.name[len(_TRASH_PREFIX) :]) and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _rebuild(reports_dir: Path, rebuild_index: Callable[[Path], object] | None) -> None:
    if rebuild_index is None:
        try:
            from autoid_lib.records.index import rebuild_index as rebuild
        except ImportError:
            log.warning("index not rebuilt: autoid_lib.records.index.rebuild_index is missing")
            return
        rebuild_index = rebuild
    rebuild_index(reports_dir)
    log.info("rebuilt %s", reports_dir / INDEX_FILE)
