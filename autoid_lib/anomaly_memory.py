"""Runs that remember: which anomalies are new, which are open since when, which were resolved.

Every run lists the same anomaly again while its cause lasts; without a memory nobody can tell
one that appeared an hour ago from one three weeks old, or see that one went away. Each anomaly
gets a stable key (its kind and project, not its text, whose counts wobble); ``remember``
compares this run's anomalies with the previous state and returns the new state plus what
changed. Pure: no I/O, no clock (the run's time is passed in). The file beside the reports is
``records.anomaly_log``'s job.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

MEMORY_SCHEMA = 1

NEW = "new"
OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Remembered:
    """One anomaly as the memory knows it; times are ISO 8601 UTC."""

    key: str
    kind: str
    project: str
    message: str  # the latest text (counts in it may change from run to run)
    first_seen: str
    last_seen: str
    resolved: str | None = None


@dataclass(frozen=True)
class Memory:
    """The open anomalies after the last recorded run, and those that run saw resolved."""

    updated: str | None = None  # the last recorded run's time; None: nothing recorded yet
    open: tuple[Remembered, ...] = ()
    resolved: tuple[Remembered, ...] = ()


@dataclass(frozen=True)
class Mark:
    """This run's view of one of its anomalies."""

    key: str
    state: str  # NEW or OPEN
    first_seen: str
    seen: str  # "new" or "open since 2026-11-14 (3 weeks)"


@dataclass(frozen=True)
class Changes:
    """What changed since the previous recorded run."""

    since: str | None  # the previous recorded run; None: the first one
    marks: tuple[Mark, ...] = ()  # one per anomaly of this run, in its order
    resolved: tuple[Remembered, ...] = field(default=())

    @property
    def new(self) -> int:
        return sum(1 for mark in self.marks if mark.state == NEW)

    @property
    def still_open(self) -> int:
        return sum(1 for mark in self.marks if mark.state == OPEN)

    @property
    def changed(self) -> bool:
        """The set of open anomalies differs (texts and counts wobbling do not count)."""
        return bool(self.new or self.resolved)

    @property
    def text(self) -> str:
        """``since the last run (2026-11-27 06:30 UTC): 1 new, 2 still open, 1 resolved``"""
        if self.since is None:
            return f"first recorded run: {self.new} anomaly(ies), all new"
        parts = [
            f"{self.new} new",
            f"{self.still_open} still open",
            f"{len(self.resolved)} resolved",
        ]
        return f"since the last run ({short_time(self.since)}): {', '.join(parts)}"

    def as_summary(self) -> dict[str, Any]:
        """summary.json's ``anomaly_changes`` (docs/summary.md)."""
        return {
            "since": self.since,
            "new": self.new,
            "still_open": self.still_open,
            "resolved": [
                {
                    "key": r.key,
                    "kind": r.kind,
                    "project": r.project,
                    "message": r.message,
                    "first_seen": r.first_seen,
                }
                for r in self.resolved
            ],
            "changed": self.changed,
            "text": self.text,
        }


def anomaly_keys(anomalies: Sequence[Mapping[str, Any]]) -> list[str]:
    """A stable key per anomaly: ``kind|project``; a repeat of the pair gets ``#2``, ``#3``…

    Repeats are numbered in the order of their messages, so the numbering does not depend on
    the order the plan happened to list them in.
    """
    base = [f"{a.get('kind', '')}|{a.get('project', '')}" for a in anomalies]
    order = sorted(range(len(anomalies)), key=lambda i: (base[i], str(anomalies[i].get("message"))))
    seen: Counter[str] = Counter()
    keys = [""] * len(anomalies)
    for i in order:
        seen[base[i]] += 1
        keys[i] = base[i] if seen[base[i]] == 1 else f"{base[i]}#{seen[base[i]]}"
    return keys


def remember(
    previous: Memory, anomalies: Sequence[Mapping[str, Any]], now: datetime
) -> tuple[Memory, Changes]:
    """The memory after a run at ``now`` that found ``anomalies``, and what changed."""
    moment = now.isoformat(timespec="seconds")
    known = {r.key: r for r in previous.open}
    keys = anomaly_keys(anomalies)
    still: list[Remembered] = []
    marks: list[Mark] = []
    for key, anomaly in zip(keys, anomalies, strict=True):
        before = known.get(key)
        first = before.first_seen if before else moment
        still.append(
            Remembered(
                key=key,
                kind=str(anomaly.get("kind", "")),
                project=str(anomaly.get("project", "")),
                message=str(anomaly.get("message", "")),
                first_seen=first,
                last_seen=moment,
            )
        )
        state = OPEN if before else NEW
        marks.append(Mark(key, state, first, seen_text(state, first, now)))
    current = set(keys)
    resolved = tuple(replace(r, resolved=moment) for r in previous.open if r.key not in current)
    memory = Memory(updated=moment, open=tuple(still), resolved=resolved)
    return memory, Changes(since=previous.updated, marks=tuple(marks), resolved=resolved)


def seen_text(state: str, first_seen: str, now: datetime) -> str:
    """``new`` or ``open since 2026-11-14 (3 weeks)``."""
    if state == NEW:
        return NEW
    try:
        first = datetime.fromisoformat(first_seen)
    except ValueError:
        return OPEN
    return f"open since {first:%Y-%m-%d} ({age_text((now - first).total_seconds())})"


def age_text(seconds: float) -> str:
    """A rough age: ``40 min``, ``5 hours``, ``3 days``, ``3 weeks``."""
    minutes = max(0, int(seconds // 60))
    for unit, size in (("week", 7 * 24 * 60), ("day", 24 * 60), ("hour", 60)):
        if minutes >= 2 * size or (unit == "hour" and minutes >= size):
            count = minutes // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{minutes} min"


def short_time(iso: str) -> str:
    try:
        return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return iso


# -- the file's shape (records.anomaly_log reads and writes it) ----------------------------------


def memory_as_json(memory: Memory) -> dict[str, Any]:
    return {
        "schema": MEMORY_SCHEMA,
        "updated": memory.updated,
        "open": [r.__dict__ for r in memory.open],
        "resolved": [r.__dict__ for r in memory.resolved],
    }


def memory_from_json(data: object) -> Memory:
    """The memory a file held; anything malformed reads as no memory (every anomaly new)."""
    if not isinstance(data, dict) or data.get("schema") != MEMORY_SCHEMA:
        return Memory()
    try:
        return Memory(
            updated=_text_or_none(data.get("updated")),
            open=tuple(_entries(data.get("open"))),
            resolved=tuple(_entries(data.get("resolved"))),
        )
    except (KeyError, TypeError, ValueError):
        return Memory()


def _entries(rows: object) -> Iterable[Remembered]:
    if not isinstance(rows, list):
        raise ValueError("not a list")
    for row in rows:
        if not isinstance(row, dict):
            raise ValueError("not an object")
        yield Remembered(
            key=str(row["key"]),
            kind=str(row.get("kind", "")),
            project=str(row.get("project", "")),
            message=str(row.get("message", "")),
            first_seen=str(row["first_seen"]),
            last_seen=str(row.get("last_seen", row["first_seen"])),
            resolved=_text_or_none(row.get("resolved")),
        )


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None
