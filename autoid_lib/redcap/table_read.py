"""A run's reads of the AutoID and Projects tables, through the local copy.

With ``[cache] enabled`` (the default) a run reads from REDCap only the record names and what
changed since its last read (``table_merge``), then saves the result as the new copy
(``table_cache``) before it plans. Without a usable copy, every ``full_read_hours``, when the
check disagrees, or with ``--full-read``, it reads the table whole and checks that against the
copy too: a record the copy holds that the whole read lacks is asked for by name, and the
read fails closed if REDCap still has it. The second look before the transfers reads only what
changed since this run's own read began. All of that needs REDCap's clock: on a clock neither
this run (``confirm_clock``) nor a recent run or check confirmed, every read is whole.
Reads that fail raise ``RedcapError`` as before; the copy is saved only after both tables were
read completely. A REDCap that went back in time (restored from a backup) is caught by the
copy's mark (``copy_mark``): a run that writes, whose copy took in changes, writes a new mark (a
run that writes nothing keeps AutoID's copy as it was), and a
copy whose mark REDCap no longer holds is read whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from autoid_lib.config import CacheSettings
from autoid_lib.redcap import copy_mark
from autoid_lib.redcap.gateway import (
    AUTOID_FIELDS,
    CACHED_FIELDS,
    RECORD_ID_FIELD,
    RedcapGateway,
    autoid_from_rows,
    is_kit_row,
    projects_from_rows,
)
from autoid_lib.redcap.read_check import IncompleteRead, record_names
from autoid_lib.redcap.table_cache import LocalCopy, table_key
from autoid_lib.redcap.table_merge import (
    CopyState,
    Merged,
    ReadKind,
    Row,
    changes_since,
    choose_read,
    merge,
    without_deleted,
    witnesses,
)
from autoid_lib.server_clock import Confirmation, still_holds
from autoid_lib.snapshot import AutoIdRow, ProjectRecord
from autoid_lib.vocab import plural

log = logging.getLogger("autoid.read")


@dataclass(frozen=True)
class TableRead:
    """How one table was read, for the run's details (counts only)."""

    kind: ReadKind
    why: str
    rows: int
    changed: int
    deleted: int = 0

    def describe(self) -> str:
        if self.kind == ReadKind.FULL:
            return f"read whole ({self.why}): {plural(self.rows, 'record')}"
        gone = f", {self.deleted:,} deleted" if self.deleted else ""
        return f"{self.why}: {self.changed:,} changed{gone}, {plural(self.rows, 'record')} in all"


class TableReader:
    """Reads AutoID and Projects for one run; ``save`` keeps them as the next run's copy."""

    def __init__(
        self,
        gateway: RedcapGateway,
        settings: CacheSettings,
        *,
        now: datetime,
        server_now: datetime,
        full_read: bool = False,
        clock_key: str = "",
        kit_offset: timedelta = timedelta(0),
        installation: str = "",
        mark_fixed: bool = False,
    ):
        self.gateway, self.settings = gateway, settings
        self.now, self.server_now, self.full_read = now, server_now, full_read
        self.copy = LocalCopy(settings.dir) if settings.enabled else None
        # REDCap's clock (server_clock): confirmed by this run, or by a recent run or check
        self.clock_key, self.kit_offset = clock_key, kit_offset
        self._clock_doubt: str | None = None  # None: not decided yet; "": trusted
        self.reads: dict[str, TableRead] = {}
        self._rows: dict[str, dict[str, Row]] = {}
        self._loaded: dict[str, tuple[CopyState | None, str]] = {}
        # the copy's mark (copy_mark): whose, by name or (no delete right) by value
        self.installation, self.mark_fixed = installation, mark_fixed
        self.went_back = ""  # why REDCap went back in time, when its AutoID lacked the mark
        self._absorbed = False  # AutoID's copy took in changes: a new mark is due

    # -- what the run asks -------------------------------------------------------------------

    def autoid_table(self) -> tuple[list[AutoIdRow], list[dict]]:
        """The AutoID table as REDCap holds it now: (ID rows, lease records). With a lease
        this is the decisive read (docs/run.md, "Reading what changed")."""
        return autoid_from_rows(list(self._read("autoid").values()))

    def project_records(self) -> list[ProjectRecord]:
        return projects_from_rows(list(self._read("projects").values()))

    def autoid_again(self) -> tuple[list[AutoIdRow], list[dict]]:
        """AutoID read again after the lease's ticket (the decisive read): this run's first
        read updated by the record list and what changed since it began — or whole, when the
        table fits one request or REDCap's clock is in doubt."""
        return autoid_from_rows(list(self._read("autoid", again=True).values()))

    def project_records_again(self) -> list[ProjectRecord]:
        """Projects read again (whole when REDCap's clock is in doubt)."""
        return projects_from_rows(list(self._read("projects", again=True).values()))

    def autoid_rows_now(self) -> list[AutoIdRow]:
        """AutoID as REDCap holds it now, for the second look and verification: this run's
        read, updated by what was created or modified since it began (not deletions) — or
        the whole table when REDCap's clock is not confirmed."""
        if self.copy is None or "autoid" not in self._rows:
            return self.gateway.autoid_rows()
        if self._small(self._rows["autoid"]):  # whole, in one request: no more than changes
            whole = self.gateway.table_rows("autoid", in_one=True)
            rows = {row["record_id"]: row for row in whole}
        elif self.clock_doubt():
            return self.gateway.autoid_rows()
        else:
            since = self.server_now - _overlap(self.settings)
            changed = self.gateway.table_rows("autoid", since=since)
            rows = {**self._rows["autoid"], **{row["record_id"]: row for row in changed}}
        if rows != self._rows["autoid"]:  # this run's own writes: the copy takes them in
            self._rows["autoid"], self._absorbed = rows, True
        return autoid_from_rows(list(rows.values()))[0]

    def window_in_one(self) -> bool:
        """Whether the window's studies may be asked for in one export (data, not names and
        chunks): the last run's window held at most half of ``read_chunk_records`` studies."""
        if self.copy is None:
            return False
        held = self.copy.window_size(self._key("incoming"))
        return held is not None and held <= self.gateway.settings.read_chunk_records // 2

    def note_window(self, studies: int) -> None:
        """Keep how many studies this run's window held, for the next run's ``window_in_one``."""
        if self.copy is None:
            return
        try:
            self.copy.save_window_size(self._key("incoming"), studies)
        except Exception as error:  # a hint: without it the next run reads names and chunks
            log.warning("could not keep the window's size: %s", type(error).__name__)

    def confirm_clock(self, confirmed: bool, why: str = "") -> None:
        """This run's own check of REDCap's clock (its lease ticket among the changes since
        it was written): trusted or not for this run, and kept in the copy for runs that
        write nothing. Call before the first read."""
        self._clock_doubt = "" if confirmed else why or "REDCap's clock is not confirmed"
        if self.copy is None or not self.clock_key:
            return
        kept = Confirmation(self.now, self.kit_offset) if confirmed else None
        try:
            self.copy.save_clock(self.clock_key, kept)
        except Exception as error:  # a cache: unconfirmed it is read whole anyway
            log.warning("could not keep REDCap's clock confirmation: %s", type(error).__name__)
            if not confirmed:
                self.copy.remove()

    def clock_doubt(self) -> str:
        """Why "changes since" reads may not be trusted on REDCap's clock, or "" (trusted):
        this run's own check, else a confirmation a recent run or ``autoid check`` kept."""
        if self._clock_doubt is None:
            if self.copy is None or not self.clock_key:
                self._clock_doubt = ""  # no copy: every read is whole anyway
            else:
                held = self.copy.clock_confirmation(self.clock_key)
                ok, why = still_holds(
                    held, self.now, self.kit_offset, self.settings.full_read_hours
                )
                self._clock_doubt = "" if ok else why
        return self._clock_doubt

    def save(self) -> None:
        """Keep this run's reads as the copy. A save that fails is rolled back, and the copy
        removed all the same: it costs the next run a whole read, never correctness."""
        if self.copy is None:
            return
        for database, rows in self._rows.items():
            if database == "autoid" and self._absorbed and self.installation:
                # taken-in changes are trusted only under a mark written after them: until
                # ``renew_mark`` writes one (a run that writes), the copy of AutoID stays as
                # it was, and the next run reads the same changes again (docs/run.md)
                continue
            full = self.reads[database].kind == ReadKind.FULL
            loaded = self._loaded[database][0]
            state = CopyState(
                rows=rows,
                read_began=self.server_now,
                full_read_at=self.now if full or loaded is None else loaded.full_read_at,
            )
            try:
                self.copy.save(database, self._key(database), state, _rows_of(loaded))
            except Exception as error:  # a cache: the run goes on, the next one reads whole
                log.warning(
                    "could not save the local copy of %s: %s", database, type(error).__name__
                )
                self.copy.remove()
                return

    def renew_mark(self, hand_over: Callable[[list[str]], bool] | None = None) -> None:
        """After a live run's writes: when AutoID's copy took in changes (or has no mark), write
        a new mark (1 import), delete this installation's older ones (1 delete, or none when
        ``hand_over`` takes them: the lease's release deletes them with its ticket; none with
        a fixed-name mark) and save the copy with it. A run that took in nothing writes
        nothing."""
        rows = self._rows.get("autoid")
        if self.copy is None or not self.installation or rows is None:
            return
        if not self._absorbed and copy_mark.kept_mark(rows, self.installation) is not None:
            return
        mark = copy_mark.new_mark(self.installation, fixed=self.mark_fixed)
        row = {field: mark.get(field, "") for field in AUTOID_FIELDS}
        self.gateway.write_kit_record("autoid", mark, "write the local copy's mark")
        old = [
            r["record_id"]
            for r in copy_mark.own_marks(rows.values(), self.installation)
            if r["record_id"] != mark["record_id"]
        ]
        if old and not (hand_over is not None and hand_over(old)):
            self.gateway.delete_kit_records("autoid", old, "delete the local copy's older mark")
        self._rows["autoid"] = {
            **{n: r for n, r in rows.items() if n not in old and n != mark["record_id"]},
            mark["record_id"]: row,
        }
        self._absorbed = False
        self.save()

    # -- how -----------------------------------------------------------------------------------

    def _read(self, database: str, *, again: bool = False) -> dict[str, Row]:
        """The table now, checked (module docstring); read again from the start, up to
        ``read_retries`` times, when the record list proves short. ``again``: this run read
        it already; that read is the copy to update."""
        attempts = self.gateway.settings.read_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                rows = self._read_once(database, again=again)
                self._rows[database] = rows
                return rows
            except IncompleteRead as error:
                self.gateway.read_again(database, "export record list", error, attempt, attempts)
        raise AssertionError("unreachable")

    def _read_once(self, database: str, *, again: bool = False) -> dict[str, Row]:
        copy, missing_because = self._this_run(database) if again else self._load(database)
        kind, why = choose_read(
            copy,
            now=self.now,
            server_now=self.server_now,
            full_read_hours=self.settings.full_read_hours,
            one_request=self.gateway.settings.read_chunk_records,
            forced=self.full_read and not again,  # this run read whole already
            missing_because=missing_because,
            clock_unconfirmed=self.clock_doubt(),
        )
        found = self._changes(database, copy) if kind == ReadKind.CHANGES and copy else None
        checks_mark = database == "autoid" and not again
        doubt = self._mark_doubt(copy, found[1]) if found and copy and checks_mark else ""
        if doubt:
            found, kind, why = None, ReadKind.FULL, doubt
        if found is None and kind == ReadKind.CHANGES:
            kind, why = ReadKind.FULL, "the record list disagreed with the copy"
        merged, listed = found or self._whole(database, copy)
        asked_again: list[Row] = []
        witnessed: list[str] = []
        if merged.vanished:
            witnessed = witnesses(merged, listed)
            asked_again = self.gateway.rows_of(database, [*merged.vanished, *witnessed])
        table = without_deleted(merged, asked_again, RECORD_ID_FIELD[database], witnessed)
        if database == "autoid":  # anything new to the copy is trusted only under a new mark
            routine = _routine(database)
            held = copy.rows if copy is not None else {}  # an empty table needs no mark
            self._absorbed = self._absorbed or any(
                held.get(name) != row for name, row in table.items() if not routine(row)
            )
        read = TableRead(kind, why, len(table), merged.changed, len(merged.vanished))
        self.reads[f"{database}_again" if again else database] = read
        log.info("%s%s: %s", database, " again" if again else "", read.describe())
        return table

    def _small(self, rows: Mapping[str, Row]) -> bool:
        """Whether a table of ``rows`` (as last read) is asked for whole in one request: half a
        chunk leaves room to grow, so no answer holds much more than ``read_chunk_records``."""
        return len(rows) <= self.gateway.settings.read_chunk_records // 2

    def _this_run(self, database: str) -> tuple[CopyState | None, str]:
        """This run's own read of ``database`` as the copy a read again updates."""
        rows = self._rows.get(database)
        if rows is None:
            return self._load(database)
        return CopyState(rows=rows, read_began=self.server_now, full_read_at=self.now), ""

    def _changes(self, database: str, copy: CopyState) -> tuple[Merged, list[str]] | None:
        """The copy updated by the record list and the changes; None if they contradict it."""
        listed = self.gateway.record_list(database)
        since = changes_since(copy, self.settings.overlap_minutes)
        changed = self.gateway.table_rows(database, since=since)
        id_field = RECORD_ID_FIELD[database]
        merged = merge(copy.rows, listed, changed, id_field, routinely_deleted=_routine(database))
        if not merged.unexplained:
            return merged, listed
        log.warning(
            "%s: REDCap lists %d record(s) that neither the local copy nor the changes hold; "
            "reading the table whole",
            database,
            merged.unexplained,
        )
        return None

    def _mark_doubt(self, copy: CopyState, listed: list[str]) -> str:
        """Why the copy cannot be trusted for a changes-only read of AutoID, or "": it has no
        mark yet, or REDCap no longer holds its mark (``went_back`` says so too). A mark by
        name is checked against the record list (no request); a fixed-name one is read back
        by name (1 request)."""
        if not self.installation:
            return ""
        mark = copy_mark.kept_mark(copy.rows, self.installation)
        if mark is None:
            return "no mark of this installation in the local copy yet"
        by_value = copy_mark.is_fixed(mark, self.installation)
        if not by_value and not copy_mark.went_back(mark, listed):
            return ""
        # not listed, or checked by value: asked for by name, beside records REDCap listed —
        # a short record list must not pass for a REDCap that went back (table_merge.witnesses)
        witnessed = [] if by_value else [n for n in listed if n in copy.rows][:3]
        back = self.gateway.rows_of("autoid", [mark["record_id"], *witnessed])
        returned = {row.get("record_id", ""): row for row in back}
        if set(witnessed) - set(returned):
            raise IncompleteRead("records REDCap listed were missing when asked for by name")
        if not by_value and mark["record_id"] in returned:
            raise IncompleteRead("the record list lacked the local copy's mark; REDCap has it")
        read_back = returned.get(mark["record_id"])
        if by_value and not copy_mark.went_back(mark, listed, read_back, by_value=True):
            return ""
        self.went_back = (
            "REDCap's AutoID no longer holds the mark this installation wrote after its last "
            "read: REDCap was restored from a backup or went back in time"
        )
        log.warning("%s; reading AutoID whole", self.went_back)
        return "REDCap went back in time (the local copy's mark is gone)"

    def _whole(self, database: str, copy: CopyState | None) -> tuple[Merged, list[str]]:
        """The whole table, checked against the copy (if any) like the changes are."""
        small = copy is not None and self._small(copy.rows)
        rows = self.gateway.table_rows(database, in_one=small)
        id_field = RECORD_ID_FIELD[database]
        listed = record_names(rows, id_field)
        held = copy.rows if copy is not None else {}
        return merge(held, listed, rows, id_field, routinely_deleted=_routine(database)), listed

    def _load(self, database: str) -> tuple[CopyState | None, str]:
        """The table's copy as it was when this run began, and why not: both tables are
        loaded at the first read, in one open of the file."""
        if not self._loaded:
            if self.copy is None:
                off = (None, "no local copy ([cache] enabled = false)")
                self._loaded = dict.fromkeys(CACHED_FIELDS, off)
            else:
                self._loaded = self.copy.load({name: self._key(name) for name in CACHED_FIELDS})
        return self._loaded[database]

    def _key(self, database: str) -> str:
        redcap = self.gateway.settings
        fields = CACHED_FIELDS.get(database, [RECORD_ID_FIELD[database]])  # incoming: its window
        return table_key(redcap.urls[database], redcap.tokens[database].reveal(), fields)


def _overlap(settings: CacheSettings) -> timedelta:
    return timedelta(minutes=settings.overlap_minutes)


def _routine(database: str):
    """Rows whose deletion is routine: the kit's own (lease tickets, the clock's probe, the
    copy's marks)."""
    if database == "autoid":
        return lambda row: is_kit_row(row) or copy_mark.is_mark_row(row)
    return lambda row: False


def _rows_of(state: CopyState | None) -> Mapping[str, Row] | None:
    return state.rows if state is not None else None
