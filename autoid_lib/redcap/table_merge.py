"""Bringing the local copy of a table up to date: which read to make, and what it proves.

The local copy (``table_cache``) holds the AutoID and Projects tables as of a read that began
at ``read_began`` (REDCap's clock). A run then asks REDCap for two things only: the list of
record names (cheap) and the records created or modified since ``read_began`` minus an overlap
(``dateRangeBegin``). Every record REDCap holds is then either changed since (read fresh) or
unchanged since before the last read began (so the copy holds it as it is); a listed name in
neither is a contradiction, and the run reads the whole table instead. A name in the copy that
REDCap no longer lists was deleted, or the list is short: the run asks for it by name, and only
an answer without it counts as a deletion. The argument in full is in docs/run.md ("Reading
what changed").

Pure: rows in, decisions out; no I/O, no clock (times are passed in).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from autoid_lib.redcap.read_check import IncompleteRead

Row = dict[str, str]


class ReadKind(StrEnum):
    FULL = "full"
    CHANGES = "changes"


@dataclass(frozen=True)
class CopyState:
    """One table's local copy: its rows by record name, and when the read behind it began."""

    rows: Mapping[str, Row]
    read_began: datetime  # REDCap's (naive) clock: compared with dateRangeBegin
    full_read_at: datetime  # UTC: when the table was last read whole


def choose_read(
    copy: CopyState | None,
    *,
    now: datetime,
    server_now: datetime,
    full_read_hours: float,
    one_request: int,
    forced: bool = False,
    missing_because: str = "no local copy yet",
    clock_unconfirmed: str = "",
) -> tuple[ReadKind, str]:
    """Full or changes-only, and why (a phrase for the run's details). A table that fits
    ``one_request`` records is read whole: that costs no more requests than the record list
    and the changes, and proves more. ``clock_unconfirmed`` (why REDCap's clock is not
    confirmed, ``server_clock``) also reads whole: "changes since" needs that clock."""
    if forced:
        return ReadKind.FULL, "asked for (--full-read)"
    if copy is None:
        return ReadKind.FULL, missing_because
    if clock_unconfirmed:
        return ReadKind.FULL, clock_unconfirmed
    if len(copy.rows) <= one_request:
        return ReadKind.FULL, "small enough to read whole in one request"
    age = now - copy.full_read_at
    if age < timedelta(0) or server_now < copy.read_began:
        return ReadKind.FULL, "the clock is behind the local copy's last read"
    if age >= timedelta(hours=full_read_hours):
        return ReadKind.FULL, f"the periodic full read (every {full_read_hours:g} h)"
    return ReadKind.CHANGES, f"changes since {copy.read_began:%Y-%m-%d %H:%M} (server time)"


def changes_since(copy: CopyState, overlap_minutes: float) -> datetime:
    """The ``dateRangeBegin`` of a changes-only read: the last read's start, minus the overlap
    that covers clock differences and the hour a DST change repeats."""
    return copy.read_began - timedelta(minutes=overlap_minutes)


@dataclass(frozen=True)
class Merged:
    """The table as REDCap now holds it, pending the names in ``vanished``."""

    rows: dict[str, Row]
    unexplained: int  # listed by REDCap, but neither in the copy nor among the changes
    vanished: tuple[str, ...]  # in the copy, not listed: deleted, or the list is short
    changed: int  # rows read fresh


def merge(
    copy_rows: Mapping[str, Row],
    listed: Sequence[str],
    changed: Sequence[Row],
    id_field: str,
    *,
    routinely_deleted: Callable[[Row], bool] = lambda row: False,
) -> Merged:
    """The copy brought up to date by ``changed`` and checked against ``listed`` (every record
    name REDCap gave). Rows ``routinely_deleted`` (the lease's tickets) that vanish are dropped
    without asking: they never decide an ID."""
    rows = dict(copy_rows)
    fresh = {}
    for row in changed:
        fresh[row[id_field]] = row
    rows.update(fresh)
    on_list = set(listed)
    unexplained = sum(1 for name in on_list if name not in rows)
    vanished = [name for name in rows if name not in on_list and name not in fresh]
    for name in [n for n in vanished if routinely_deleted(rows[n])]:
        del rows[name]
        vanished.remove(name)
    return Merged(rows, unexplained, tuple(vanished), len(fresh))


def witnesses(merged: Merged, listed: Sequence[str], count: int = 3) -> list[str]:
    """Records REDCap listed and the copy holds, asked for beside the vanished ones: an answer
    that drops records silently must then drop only the vanished ones to pass."""
    vanished = set(merged.vanished)
    return [name for name in listed if name in merged.rows and name not in vanished][:count]


def without_deleted(
    merged: Merged, asked_again: Sequence[Row], id_field: str, witnessed: Sequence[str] = ()
) -> dict[str, Row]:
    """``merged`` without its vanished records, once REDCap, asked for them by name (with the
    ``witnessed`` records it listed), returned none of them and every witness. A vanished
    one that came back was missing from the record list: the list is short, an incomplete
    read (counts only); a witness that did not come back makes the answer itself suspect."""
    returned = {row.get(id_field, "") for row in asked_again}
    if set(witnessed) - returned:
        raise IncompleteRead("records REDCap listed were missing when asked for by name")
    back = returned & set(merged.vanished)
    if back:
        raise IncompleteRead(
            f"the record list lacked {len(back)} of the records the local copy holds, "
            "and REDCap still has them"
        )
    gone = set(merged.vanished)
    return {name: row for name, row in merged.rows.items() if name not in gone}
