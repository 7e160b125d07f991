"""SQLite state of the sandbox: record values plus created/modified times.

REDCap keeps data as entity-attribute-value rows and selects ``dateRangeBegin``/``End`` from
its log; the sandbox keeps the same EAV shape (one row per stored value, blanks are not
stored) and one ``records`` row per record with its creation and last-modification time in
server local time (``YYYY-MM-DD HH:MM:SS``, so that text order is time order). A store is a
file or, for tests, in memory; one lock serialises every access, and every write is one
transaction, so an import is all-or-nothing.

Record names compare without regard to (ASCII) case, as in REDCap's MySQL tables (a ``_ci``
collation): the ``record`` columns are ``COLLATE NOCASE``, so a lookup, a delete or a record
list by ``ABC`` finds the stored ``abc`` and answers with the stored name.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from autoid_lib.private_files import private_umask

# (form, instance) -> {column: value}; ("", 0) holds the non-repeating instruments.
Slot = tuple[str, int]
RecordData = dict[Slot, dict[str, str]]
BASE: Slot = ("", 0)
# a record list travels to SQLite as one JSON array parameter: no limit on its length, and
# ``record IN (SELECT value FROM json_each(?))`` is answered through the primary keys
_IN_LIST = "record IN (SELECT value FROM json_each(?))"

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    db TEXT NOT NULL, record TEXT NOT NULL COLLATE NOCASE,
    created TEXT NOT NULL, modified TEXT NOT NULL,
    PRIMARY KEY (db, record)
);
CREATE TABLE IF NOT EXISTS data (
    db TEXT NOT NULL, record TEXT NOT NULL COLLATE NOCASE, form TEXT NOT NULL,
    instance INTEGER NOT NULL,
    col TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (db, record, form, instance, col)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_created ON records (db, created);
CREATE INDEX IF NOT EXISTS records_modified ON records (db, modified);
"""


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold(name: str) -> str:
    """A record name as REDCap's database compares it: ASCII case ignored (SQLite NOCASE)."""
    return name.translate(_ASCII_LOWER)


def record_sort_key(name: str) -> tuple[int, int, str]:
    """REDCap lists numeric record names numerically, before the others."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _prepare_private_file(path: Path) -> None:
    """Create the database file 0600 (or check an existing one), never through a symlink."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        if path.is_symlink():
            raise ValueError(f"sandbox database {path} is a symbolic link; refused") from None
        raise
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Store:
    """Thread-safe access to the sandbox database; ``lock`` may be held across calls."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = str(path) if path else ":memory:"
        self.lock = threading.RLock()
        if path:
            _prepare_private_file(Path(path))
        with private_umask():  # the journal files too: the database holds the tokens
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY")
        self._conn.executescript(_SCHEMA_SQL)

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    # -- meta ---------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self.lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self.lock:
            self._conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- reading ------------------------------------------------------------------------
    def record_times(self, db: str) -> dict[str, tuple[str, str]]:
        """Every record of ``db`` -> (created, modified)."""
        with self.lock:
            rows = self._conn.execute(
                "SELECT record, created, modified FROM records WHERE db = ?", (db,)
            ).fetchall()
        return {name: (created, modified) for name, created, modified in rows}

    def record_names(self, db: str) -> list[str]:
        return sorted(self.record_times(db), key=record_sort_key)

    def max_numeric_name(self, db: str) -> int:
        """The largest all-digit record name (0 if none): REDCap's auto-numbering base."""
        with self.lock:
            row = self._conn.execute(
                "SELECT MAX(CAST(record AS INTEGER)) FROM records WHERE db = ? "
                "AND record GLOB '[0-9]*' AND record NOT GLOB '*[^0-9]*'",
                (db,),
            ).fetchone()
        return int(row[0] or 0)

    def matching(
        self,
        db: str,
        records: Iterable[str] | None = None,
        low: str | None = None,
        high: str | None = None,
    ) -> set[str]:
        """The records of ``db`` that exist, are among ``records`` (if given) and were
        created or modified in [``low``, ``high``] (either bound optional): REDCap's
        ``records`` and ``dateRangeBegin``/``End`` selection, done by SQLite's indexes
        instead of a Python loop over every record."""
        sql = "SELECT record FROM records WHERE db = ?"
        args: list[str] = [db]
        if records is not None:
            sql += " AND " + _IN_LIST
            args.append(_json_list(records))
        if low is not None or high is not None:
            sql += f" AND ({_in_range('created', low, high)} OR {_in_range('modified', low, high)})"
            args += [b for b in (low, high) if b is not None] * 2
        with self.lock:
            return {name for (name,) in self._conn.execute(sql, args)}

    def load(
        self,
        db: str,
        records: Collection[str] | None = None,
        columns: Collection[str] | None = None,
    ) -> dict[str, RecordData]:
        """Stored values of ``db`` (all records or the named ones; all columns or the named
        ones), sorted like REDCap. Only the named records' rows are read, so a record-list
        export costs what it returns, not what the table holds."""
        select = "SELECT record, form, instance, col, value FROM data WHERE db = ?"
        args: list[str] = [db]
        if records is not None:
            select += " AND " + _IN_LIST
            args.append(_json_list(records))
        if columns is not None:
            select += f" AND col IN ({','.join('?' * len(columns))})"
            args += list(columns)
        with self.lock:
            wanted = self.matching(db, records)
            rows = self._conn.execute(select, args).fetchall() if columns is None or columns else []
        out: dict[str, RecordData] = {n: {} for n in sorted(wanted, key=record_sort_key)}
        for record, form, instance, col, value in rows:
            data = out.get(record)
            if data is not None:
                data.setdefault((form, instance), {})[col] = value
        return out

    # -- writing ------------------------------------------------------------------------
    def write(
        self,
        db: str,
        changes: Mapping[str, RecordData],
        now: str,
        *,
        overwrite: bool = False,
    ) -> None:
        """Merge ``changes`` into ``db`` in one transaction.

        Blank values are skipped (REDCap's ``overwriteBehavior=normal``) or, with
        ``overwrite``, erase what is stored. A record is created at ``now`` if new and marked
        modified at ``now`` only if one of its stored values changed.
        """
        with self.lock:
            existing = self.load(db, set(changes))
            known = self.matching(db, changes)
            upserts: list[tuple] = []
            deletes: list[tuple] = []
            touched: list[tuple] = []
            created: list[tuple] = []
            for record, slots in changes.items():
                old = existing.get(record, {})
                changed = False
                for (form, instance), values in slots.items():
                    stored = old.get((form, instance), {})
                    for col, value in values.items():
                        if value == "":
                            if overwrite and col in stored:
                                deletes.append((db, record, form, instance, col))
                                changed = True
                        elif stored.get(col) != value:
                            upserts.append((db, record, form, instance, col, value))
                            changed = True
                if record not in known:
                    created.append((db, record, now, now))
                elif changed:
                    touched.append((now, db, record))
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                cur.executemany("INSERT INTO records VALUES (?, ?, ?, ?)", created)
                cur.executemany(
                    "UPDATE records SET modified = ? WHERE db = ? AND record = ?", touched
                )
                cur.executemany("INSERT OR REPLACE INTO data VALUES (?, ?, ?, ?, ?, ?)", upserts)
                cur.executemany(
                    "DELETE FROM data WHERE db = ? AND record = ? AND form = ? AND instance = ? "
                    "AND col = ?",
                    deletes,
                )
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def rename(self, db: str, old: str, new: str, now: str) -> None:
        """Give record ``old`` the name ``new``, marked modified at ``now`` (one transaction)."""
        with self.lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                cur.execute(
                    "UPDATE records SET record = ?, modified = ? WHERE db = ? AND record = ?",
                    (new, now, db, old),
                )
                cur.execute(
                    "UPDATE data SET record = ? WHERE db = ? AND record = ?", (new, db, old)
                )
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def delete(self, db: str, records: Iterable[str]) -> None:
        """Remove whole records in one transaction."""
        names = [(db, name) for name in dict.fromkeys(records)]
        with self.lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                cur.executemany("DELETE FROM data WHERE db = ? AND record = ?", names)
                cur.executemany("DELETE FROM records WHERE db = ? AND record = ?", names)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def put_records(self, db: str, records: Iterable[tuple[str, RecordData, str, str]]) -> None:
        """Bulk-insert whole records (name, data, created, modified); used by the seeds."""
        with self.lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN")
            try:
                for name, data, created, modified in records:
                    cur.execute(
                        "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)",
                        (db, name, created, modified),
                    )
                    cur.executemany(
                        "INSERT OR REPLACE INTO data VALUES (?, ?, ?, ?, ?, ?)",
                        [
                            (db, name, form, instance, col, value)
                            for (form, instance), values in data.items()
                            for col, value in values.items()
                            if value != ""
                        ],
                    )
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def count_records(self, db: str | None = None) -> int:
        with self.lock:
            if db is None:
                return self._conn.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            return self._conn.execute(
                "SELECT COUNT(*) FROM records WHERE db = ?", (db,)
            ).fetchone()[0]


def _json_list(names: Iterable[str]) -> str:
    return json.dumps(list(names))


def _in_range(column: str, low: str | None, high: str | None) -> str:
    """SQL for ``low <= column <= high`` with either bound left out (text order is time order)."""
    parts = [f"{column} >= ?"] if low is not None else []
    parts += [f"{column} <= ?"] if high is not None else []
    return "(" + " AND ".join(parts) + ")"
