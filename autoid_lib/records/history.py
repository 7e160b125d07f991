"""What earlier recorded runs say about each project's capacity: the forecast's best history.

Reads the summary.json of the oldest live run folder within the forecast window (the next
one if that run failed or its summary is unreadable), so a run reads a handful of small files
however many runs the reports folder keeps. Costs no REDCap request.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from autoid_lib.forecast import RecordedCapacity, summary_capacity
from autoid_lib.records.folders import read_summary, run_folders

MAX_READS = 20  # failed runs skipped before giving up on the recorded history


def recorded_capacity(
    reports_dir: Path | str, now: datetime, window_days: float
) -> list[RecordedCapacity]:
    """Capacity points from the oldest usable live run in ``[now - window_days, now)``."""
    begin = now - timedelta(days=window_days)
    reads = 0
    for folder, parsed in run_folders(reports_dir):
        if parsed.mode != "live" or parsed.started < begin:  # the folder's name: the real clock
            continue
        reads += 1
        if reads > MAX_READS:
            break
        summary = read_summary(folder)
        try:
            started = datetime.fromisoformat(str(summary["started"])) if summary else None
        except (ValueError, KeyError):
            continue
        if summary is None or started is None:
            continue
        started = started if started.tzinfo else started.replace(tzinfo=UTC)
        if not begin <= started < now:  # the run's own clock (``--now`` may have fixed it)
            continue
        points = summary_capacity(summary, started) if isinstance(summary, dict) else []
        if points:
            return points
    return []
