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
read completely.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from autoid_lib.config import CacheSettings
from autoid_lib.redcap.gateway import (
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

    # -- what the run asks -------------------------------------------------------------------

    def autoid_table(self) -> tuple[list[AutoIdRow], list[dict]]:
        """The AutoID table as REDCap holds it now: (ID rows, lease records). With a lease
        this is the decisive read (docs/run.md, "Reading what changed")."""
        return autoid_from_rows(list(self._read("autoid").values()))

    def project_records(self) -> list[ProjectRecord]:
        return projects_from_rows(list(self._read("projects").values()))

    def autoid_rows_now(self) -> list[AutoIdRow]:
        """AutoID as REDCap holds it now, for the second look and verification: this run's
        read, updated by what was created or modified since it began (not deletions) — or
        the whole table when REDCap's clock is not confirmed."""
        if self.copy is None or "autoid" not in self._rows or self.clock_doubt():
            return self.gateway.autoid_rows()
        since = self.server_now - _overlap(self.settings)
        changed = self.gateway.table_rows("autoid", since=since)
        rows = {**self._rows["autoid"], **{row["record_id"]: row for row in changed}}
        return autoid_from_rows(list(rows.values()))[0]

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

    # -- how -----------------------------------------------------------------------------------

    def _read(self, database: str) -> dict[str, Row]:
        """The table now, checked (module docstring); read again from the start, up to
        ``read_retries`` times, when the record list proves short."""
        attempts = self.gateway.settings.read_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                rows = self._read_once(database)
                self._rows[database] = rows
                return rows
            except IncompleteRead as error:
                self.gateway.read_again(database, "export record list", error, attempt, attempts)
        raise AssertionError("unreachable")

    def _read_once(self, database: str) -> dict[str, Row]:
        copy, missing_because = self._load(database)
        kind, why = choose_read(
            copy,
            now=self.now,
            server_now=self.server_now,
            full_read_hours=self.settings.full_read_hours,
            one_request=self.gateway.settings.read_chunk_records,
            forced=self.full_read,
            missing_because=missing_because,
            clock_unconfirmed=self.clock_doubt(),
        )
        found = self._changes(database, copy) if kind == ReadKind.CHANGES and copy else None
        if found is None and kind == ReadKind.CHANGES:
            kind, why = ReadKind.FULL, "the record list disagreed with the copy"
        merged, listed = found or self._whole(database, copy)
        asked_again: list[Row] = []
        witnessed: list[str] = []
        if merged.vanished:
            witnessed = witnesses(merged, listed)
            asked_again = self.gateway.rows_of(database, [*merged.vanished, *witnessed])
        table = without_deleted(merged, asked_again, RECORD_ID_FIELD[database], witnessed)
        self.reads[database] = TableRead(
            kind, why, len(table), merged.changed, len(merged.vanished)
        )
        log.info("%s: %s", database, self.reads[database].describe())
        return table

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

    def _whole(self, database: str, copy: CopyState | None) -> tuple[Merged, list[str]]:
        """The whole table, checked against the copy (if any) like the changes are."""
        rows = self.gateway.table_rows(database)
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
        return table_key(
            redcap.urls[database], redcap.tokens[database].reveal(), CACHED_FIELDS[database]
        )


def _overlap(settings: CacheSettings) -> timedelta:
    return timedelta(minutes=settings.overlap_minutes)


def _routine(database: str):
    """Rows whose deletion is routine: the kit's own (lease tickets, the clock's probe)."""
    return is_kit_row if database == "autoid" else (lambda row: False)


def _rows_of(state: CopyState | None) -> Mapping[str, Row] | None:
    return state.rows if state is not None else None
