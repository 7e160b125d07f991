"""When the whole command started, so a report can show its wall time next to the run's own.

A run's ``duration_s`` is the REDCap work inside the notebook kernel (often 0.1 s); the command
around it also starts Python, the kernel and exports the report (often 4 s). ``autoid`` marks
the start first thing; the recorded notebook receives it as its ``command_started`` parameter.
"""

from __future__ import annotations

from datetime import UTC, datetime

_started: datetime | None = None


def mark_command_start(moment: datetime | None = None) -> None:
    """Remember when the command started (called once by ``autoid``'s entry point)."""
    global _started
    _started = moment or datetime.now(UTC)


def command_started() -> datetime | None:
    """When the command started, or None when no command marked it (a library call)."""
    return _started


def seconds_since(started_iso: str, now: datetime) -> float | None:
    """Seconds from an ISO time to ``now``; None when the time is empty or unreadable."""
    try:
        started = datetime.fromisoformat(started_iso)
    except (TypeError, ValueError):
        return None
    started = started if started.tzinfo else started.replace(tzinfo=UTC)
    return max(0.0, (now - started).total_seconds())
