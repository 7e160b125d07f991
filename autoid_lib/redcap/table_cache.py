"""The local copy of the AutoID and Projects tables: one SQLite file, private to its user.

It holds what those tables hold (hashes, pseudonyms, project settings, lease tickets) and when
REDCap's clock was last confirmed (``server_clock``), never a patient ID, and only as a cache:
REDCap stays the source of truth, and deleting the file is always safe (the next run reads the
tables whole). A file that is unreadable, fails SQLite's own check, was written by another
format, belongs to another REDCap project, or whose rows no longer match the checksum stored
with them is *damaged*: it is removed, and the run reads whole and writes it anew. Each save is
one SQLite transaction, so a run killed while saving leaves the previous copy (SQLite rolls the
journal back at the next open).

Only the run touches the tables, under its run lock (``lock.run_lock``): two runs never race
on them. ``autoid check`` writes one row besides, the clock's confirmation, in a transaction.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from autoid_lib.private_files import private_folder
from autoid_lib.redcap.table_merge import CopyState, Row
from autoid_lib.server_clock import Confirmation
from autoid_lib.vocab import plural

log = logging.getLogger("autoid.cache")
FILE_NAME = "tables.sqlite"
FORMAT = "autoid-kit local copy 1"
_TIME = "%Y-%m-%d %H:%M:%S"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    db TEXT NOT NULL, record TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (db, record)
);
"""


class CopyDamaged(Exception):
    """The file cannot be trusted (the message says why, without its contents)."""


def table_key(url: str, token: str, fields: Sequence[str]) -> str:
    """Which REDCap table a copy is of: its API address, a one-way fingerprint of the token
    (one address serves every project of a REDCap; the token tells them apart, and is not
    recoverable from 16 hex digits of an HMAC), and the fields read."""
    token_print = hmac.new(token.encode(), b"autoid-kit local copy", hashlib.sha256)
    return f"{url} {token_print.hexdigest()[:16]} {','.join(fields)}"


class LocalCopy:
    """``<dir>/tables.sqlite``: load a table's copy, save it back."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / FILE_NAME

    def load(self, keys: Mapping[str, str]) -> dict[str, tuple[CopyState | None, str]]:
        """Each table's copy (``keys``: database -> ``table_key``), or None and why not
        (missing, of another project, damaged: then the file is gone). One open, one check."""
        if not self.path.exists():
            return dict.fromkeys(keys, (None, "no local copy yet"))
        try:
            with self._connection() as db:
                return _load(db, keys)
        except (sqlite3.Error, CopyDamaged, ValueError, KeyError, OSError) as error:
            why = str(error) if isinstance(error, CopyDamaged) else type(error).__name__
            log.warning(
                "the local copy %s is damaged (%s); reading the tables whole", self.path, why
            )
            self.remove()
            return dict.fromkeys(keys, (None, f"the local copy was damaged ({why}) and is rebuilt"))

    def save(
        self,
        database: str,
        key: str,
        state: CopyState,
        before: Mapping[str, Row] | None,
    ) -> None:
        """Store ``state`` in one transaction, writing only the rows that differ from
        ``before`` (what was loaded; None: replace the table's rows)."""
        private_folder(self.path.parent)
        with self._connection() as db, db:
            if before is None:
                db.execute("DELETE FROM rows WHERE db = ?", (database,))
                before = {}
            gone = [(database, name) for name in before if name not in state.rows]
            db.executemany("DELETE FROM rows WHERE db = ? AND record = ?", gone)
            db.executemany(
                "INSERT OR REPLACE INTO rows VALUES (?, ?, ?)",
                (
                    (database, name, _text(row))
                    for name, row in state.rows.items()
                    if before.get(name) != row
                ),
            )
            meta = {
                f"key:{database}": key,
                f"read_began:{database}": state.read_began.strftime(_TIME),
                f"full_read_at:{database}": state.full_read_at.isoformat(),
                f"checksum:{database}": _checksum(state.rows),
                "format": FORMAT,
            }
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", meta.items())

    def clock_confirmation(self, key: str) -> Confirmation | None:
        """When REDCap's clock was last confirmed for ``key`` (``server_clock.confirmation_key``),
        or None: none kept, or the file cannot be read (then the run reads whole)."""
        found = self._meta_value(key)
        if found is None:
            return None
        try:
            data = json.loads(found)
            return Confirmation(
                at_utc=datetime.fromisoformat(data["at"]),
                kit_offset=timedelta(seconds=int(data["kit_offset_s"])),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def window_size(self, key: str) -> int | None:
        """How many studies the last run's window held (``key``: the Incoming database's
        ``table_key``), or None: unknown. A hint for the size of the next window's answer."""
        found = self._meta_value(f"window:{key}")
        return int(found) if found is not None and found.isdigit() else None

    def save_window_size(self, key: str, studies: int) -> None:
        private_folder(self.path.parent)
        with self._connection() as db, db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"window:{key}", str(studies)))

    def _meta_value(self, key: str) -> str | None:
        """One value of the copy's meta table, read-only; None when absent or unreadable."""
        if not self.path.exists():
            return None
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                found = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return None
        return None if found is None else str(found[0])

    def save_clock(self, key: str, confirmation: Confirmation | None) -> None:
        """Keep (or, with None, forget) REDCap's clock confirmation, in one transaction."""
        private_folder(self.path.parent)
        with self._connection() as db, db:
            if confirmation is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
                return
            value = {
                "at": confirmation.at_utc.isoformat(),
                "kit_offset_s": int(confirmation.kit_offset.total_seconds()),
            }
            rows = {key: json.dumps(value), "format": FORMAT}
            db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows.items())

    def describe(self) -> str:
        """One line for ``autoid check``, read-only: what the copy holds and from when."""
        if not self.path.exists():
            return f"none yet ({self.path}); the next run reads the tables whole"
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                counts = dict(db.execute("SELECT db, count(*) FROM rows GROUP BY db"))
                meta = dict(db.execute("SELECT key, value FROM meta"))
            finally:
                db.close()
        except sqlite3.Error:
            return f"unreadable ({self.path}); the next run reads the tables whole and rebuilds it"
        if not any(name.startswith("key:") for name in meta):  # only the clock's confirmation
            return f"none yet ({self.path}); the next run reads the tables whole"
        tables = " and ".join(
            f"{label} {plural(counts.get(name, 0), 'record')}"
            for name, label in (("autoid", "AutoID"), ("projects", "Projects"))
        )
        read = meta.get("read_began:autoid", "?")
        return f"ok ({self.path}): {tables}, as read at {read} (REDCap's clock)"

    def remove(self) -> None:
        """Delete the copy (and SQLite's side files); one that cannot be deleted is left to
        the next run, which finds it damaged or out of date in the same way."""
        for suffix in ("", "-journal", "-wal", "-shm"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                continue
            except OSError as error:
                log.warning("could not delete %s%s: %s", self.path, suffix, error.strerror)

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        _create_private(self.path)
        db = sqlite3.connect(self.path, isolation_level="DEFERRED")
        try:
            db.executescript(_SCHEMA)
            yield db
        finally:
            db.close()


def _load(
    db: sqlite3.Connection, keys: Mapping[str, str]
) -> dict[str, tuple[CopyState | None, str]]:
    (check,) = db.execute("PRAGMA quick_check").fetchone()
    if check != "ok":
        raise CopyDamaged("SQLite's check failed")
    meta = dict(db.execute("SELECT key, value FROM meta"))
    if meta and meta.get("format") != FORMAT:
        raise CopyDamaged("written in another format")
    return {database: _table(db, meta, database, key) for database, key in keys.items()}


def _table(
    db: sqlite3.Connection, meta: Mapping[str, str], database: str, key: str
) -> tuple[CopyState | None, str]:
    """One table's copy from an open, checked file."""
    if f"key:{database}" not in meta:
        kept = any(name.startswith("key:") for name in meta)  # else only the clock's row
        return None, "no local copy of this table yet" if kept else "no local copy yet"
    if meta[f"key:{database}"] != key:
        return None, "the local copy is of another REDCap project (address or token changed)"
    texts = db.execute("SELECT record, data FROM rows WHERE db = ?", (database,))
    rows = {name: json.loads(text) for name, text in texts}
    if _checksum(rows) != meta[f"checksum:{database}"]:
        raise CopyDamaged("its rows do not match their checksum")
    state = CopyState(
        rows=rows,
        read_began=datetime.strptime(meta[f"read_began:{database}"], _TIME),
        full_read_at=datetime.fromisoformat(meta[f"full_read_at:{database}"]),
    )
    return state, ""


def _text(row: Row) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def _checksum(rows: Mapping[str, Row]) -> str:
    digest = hashlib.sha256()
    for name in sorted(rows):
        digest.update(f"{name}\x1f{_text(rows[name])}\x1e".encode())
    return digest.hexdigest()


def _create_private(path: Path) -> None:
    """Create the file 0600 in a 0700 folder; refuse a symlink or another user's file."""
    private_folder(path.parent)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise CopyDamaged("not a regular file of this user")
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
