"""The REDCap gateway: the one module that talks to REDCap (through PyCap).

One method per question the run asks, each answer checked before it is believed. A table read
is a names-only export, then record-list exports of at most ``read_chunk_records`` records, each
checked for completeness (``read_check``); an out-of-memory answer halves the chunk. PyCap
treats a non-JSON body as a decode error, an error page as data, and aliases its error to
``requests.RequestException`` so "REDCap said no" and "network down" look alike; here every
failure becomes a ``RedcapError`` that names the database and the operation and never carries a
token (PyCap's messages are redacted first).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import requests
from redcap import Project
from redcap.request import _ContentConfig, _RCRequest

from autoid_lib.config import RedcapSettings
from autoid_lib.errors import RedcapError
from autoid_lib.lease import LEASE_PROJECT
from autoid_lib.plan import NewAutoId, TransferRequest
from autoid_lib.redcap.http_guard import AnswerRefused, DeadlineExceeded, guarded_session
from autoid_lib.redcap.pacing import RequestPacer
from autoid_lib.redcap.read_check import (
    IncompleteRead,
    check_chunk,
    check_present,
    check_total,
    names_from_csv,
    record_names,
)
from autoid_lib.safe_text import printable
from autoid_lib.secret import redact
from autoid_lib.server_clock import CLOCK_PROJECT
from autoid_lib.snapshot import AutoIdRow, ExistingTransfer, IncomingStudy, ProjectRecord

_T = TypeVar("_T")
log = logging.getLogger("autoid.redcap")
# a long read's progress: time-stamped lines in a log, one line in place on a terminal
progress_log = logging.getLogger("autoid.progress")
PROGRESS_EVERY_S = 10.0
PAUSE_LOGGED_FROM_S = 1.0

PROJECT_FIELDS = [
    "record_id",
    "project_name",
    "project_use_autoid",
    "project_autoid_aetitle",
    "project_patient_naming",
]
STUDY_FIELDS = [
    "study_instance_uid",
    "study_aetitle_addressed",
    "study_patient_id",
    "study_date",
]
TRANSFER_FIELDS = ["transfer_requested_date", "transfer_project_name", "transfer_name"]
HISTORY_STUDY_FIELDS = ["study_accession_number"]
HISTORY_TRANSFER_FIELDS = ["transfer_date", "transfer_error"]  # a checkbox: transfer_error___N
CHECKBOX_FIELDS = frozenset({"transfer_error"})  # exported as one column per code, never by name
AUTOID_FIELDS = ["record_id", "autoid_project_name", "autoid_hash", "autoid_value", "autoid_method"]
CACHED_FIELDS = {"autoid": AUTOID_FIELDS, "projects": PROJECT_FIELDS}  # the local copy's tables
RECORD_ID_FIELD = {
    "projects": "record_id",
    "incoming": "study_instance_uid",
    "autoid": "record_id",
    "transfers": "study_instance_uid",
}
REDCAP_TIME = "%Y-%m-%d %H:%M:%S"
# an out-of-memory answer halves the chunk down to this many records, then the read fails
MIN_CHUNK_RECORDS = 25
# what PHP prints when REDCap runs out of memory (HTTP 200, then REDCap's own JSON error)
# the end of a "changes since" read: later than any time REDCap stamps (see _record_names)
_OPEN_END = datetime(9999, 12, 31, 23, 59, 59)
_OUT_OF_MEMORY = ("Allowed memory size", "ran out of server memory")


class _KnownSchemaProject(Project):
    """A PyCap Project whose record ID field is known, so exports need no metadata call."""

    def __init__(
        self, url: str, token: str, record_id_field: str, session: requests.Session, **kwargs
    ):
        super().__init__(url, token, **kwargs)
        self._record_id_field = record_id_field
        self._session = session

    @property
    def def_field(self) -> str:
        return self._record_id_field

    def _call_api(self, payload, return_type, file=None):
        """PyCap's own ``_call_api``, but on our guarded session instead of its global one,
        and with the record list as one field (``_one_records_field``)."""
        payload = _one_records_field(payload)
        config = _ContentConfig(
            return_empty_json=return_type == "empty_json",
            return_bytes=return_type == "file_map",
        )
        request = _RCRequest(url=self.url, payload=payload, config=config, session=self._session)
        return request.execute(
            verify_ssl=self.verify_ssl,
            return_headers=return_type == "file_map",
            file=file,
            **self._request_kwargs,
        )


class RedcapGateway:
    """Reads and writes the run's four databases; counts every API request it makes."""

    def __init__(
        self,
        settings: RedcapSettings,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.requests = 0
        self._sleep = sleep
        self._clock = clock  # seconds, for pacing and progress only (never a record time)
        self._pacer = RequestPacer(settings.max_requests_per_minute)
        self.paced_s = 0.0  # time spent waiting for the request ceiling
        self._secrets = list(settings.tokens.values())
        self._projects: dict[str, Project] = {}
        self._refused: dict[str, str] = {}  # URL -> why its server is not asked again
        self._chunk_records: dict[str, int] = {}  # database -> size after out-of-memory answers
        # a second beyond the per-read timeout, so a silent server stays a (retried) timeout
        # and only one that keeps dripping meets the deadline
        self._session = guarded_session(settings.timeout_s + 1, settings.max_answer_bytes)
        # called before every data import (not the lease's own): the lease's expiry check
        self.write_guard: Callable[[], None] | None = None

    @property
    def bytes_received(self) -> int:
        """Bytes of every answer so far (bodies, after decompression)."""
        adapter = self._session.get_adapter("https://")
        return int(getattr(adapter, "received", 0))

    # -- reads -------------------------------------------------------------------------------

    def project_records(self) -> list[ProjectRecord]:
        rows = self._read_records("projects", "export projects", PROJECT_FIELDS)
        return projects_from_rows(rows)

    def incoming_studies(
        self,
        begin: datetime | None,
        end: datetime | None,
        *,
        history: bool = False,
        in_one: bool = False,
    ) -> list[IncomingStudy]:
        """Studies created or modified in [begin, end] (server time), one per study UID.

        ``begin=end=None`` reads all history; ``history=True`` adds what the forwarder filled
        in (transfer date, error codes, accession number) for the audit. ``in_one``: the
        caller knows the range is small (the last run's window), so its records are asked for
        in one export, not as names and chunks; REDCap out of memory reads in chunks.
        """
        window = {"date_begin": begin, "date_end": end}
        since = f"since {begin:%Y-%m-%d %H:%M}" if begin else "all history"
        operation = f"export studies {since}"
        study_fields = STUDY_FIELDS + (HISTORY_STUDY_FIELDS if history else [])
        transfer_fields = TRANSFER_FIELDS + (HISTORY_TRANSFER_FIELDS if history else [])
        read = self._read_in_one if in_one else self._read_records
        if self.settings.same_database("incoming", "transfers"):
            rows = read("incoming", operation, study_fields + transfer_fields, **window)
            transfer_rows = rows
        else:
            rows = read("incoming", operation, study_fields, **window)
            uids = sorted({row.get("study_instance_uid", "") for row in rows} - {""})
            transfer_rows = self._read_transfer_rows(uids, transfer_fields) if uids else []
        _require_fields(rows, study_fields, "incoming", operation)
        return _collapse_studies(rows, transfer_rows)

    def study_uids(self, begin: datetime, end: datetime) -> frozenset[str]:
        """UIDs of the studies created or modified in [begin, end]: what a run would read."""
        operation = f"export study UIDs since {begin:%Y-%m-%d %H:%M}"
        return frozenset(self._record_names("incoming", operation, begin, end))

    def transfers_of(self, study_uids: Sequence[str]) -> dict[str, list[ExistingTransfer]]:
        """The transfer instances REDCap now holds for these studies (for verification)."""
        by_study: dict[str, list[ExistingTransfer]] = {uid: [] for uid in study_uids}
        for row in self._read_transfer_rows(list(study_uids)):
            transfer = _transfer_from_row(row)
            if transfer is not None and row["study_instance_uid"] in by_study:
                by_study[row["study_instance_uid"]].append(transfer)
        return by_study

    def _read_transfer_rows(self, uids: list[str], fields=TRANSFER_FIELDS) -> list[dict]:
        """Transfer rows of these studies, ``read_chunk_records`` records per export (the list
        goes as one ``records`` string, ``_one_records_field``: PHP's ``max_input_vars`` does
        not bound it), each answer holding only studies asked for."""
        fields = ["study_instance_uid", *fields]
        rows: list[dict] = []
        for chunk in _chunks(uids, self.settings.read_chunk_records):
            part = self._export("transfers", "export transfers", fields=fields, records=chunk)
            named = [f for f in fields if f not in CHECKBOX_FIELDS]
            _require_fields(part, named, "transfers", "export transfers")
            asked = set(chunk)  # a study may have no record here; one never asked for is wrong
            if any(row.get("study_instance_uid", "") not in asked for row in part):
                raise RedcapError(
                    "transfers", "export transfers", "answer holds records not requested"
                )
            rows.extend(part)
        return rows

    def autoid_rows(self) -> list[AutoIdRow]:
        """The whole AutoID table, without the lease records."""
        return self.autoid_table()[0]

    def autoid_table(self) -> tuple[list[AutoIdRow], list[dict]]:
        """The whole AutoID table, complete (``_read_records``): (ID rows, lease records).
        With a lease this is the decisive read (docs/run.md, "Reading in chunks")."""
        return autoid_from_rows(self._read_records("autoid", "export AutoID table", AUTOID_FIELDS))

    # -- the reads of the local copy (table_read) ----------------------------------------------

    def table_rows(
        self, database: str, since: datetime | None = None, *, in_one: bool = False
    ) -> list[dict]:
        """Raw rows of the cached tables (AutoID, Projects), complete: all of them, or those
        created or modified since ``since`` (server time), each read checked. ``in_one``: the
        caller knows the table is small (its local copy), so the whole table is asked for in
        one export, not a record list and chunks; REDCap out of memory reads in chunks."""
        fields = CACHED_FIELDS[database]
        what = f"changes since {since:%Y-%m-%d %H:%M}" if since else "all records"
        if in_one and since is None:
            return self._read_in_one(database, "export all records", fields)
        return self._read_records(database, f"export {what}", fields, date_begin=since)

    def record_list(self, database: str) -> list[str]:
        """Every record name of the table, as cheaply as REDCap can say it: a names-only CSV
        export (about 6 bytes a record; JSON would be 20). An empty answer is asked again as
        JSON, whose ``[]`` says "no records" where an empty CSV body could be a failure."""
        id_field = RECORD_ID_FIELD[database]
        operation = "export record list"
        text = self._export_text(database, operation, fields=[id_field], format_type="csv")
        if not text.strip():
            return self._record_names(database, operation, None, None)
        try:
            return names_from_csv(text, id_field)
        except IncompleteRead as error:
            raise RedcapError(database, operation, str(error)) from None

    def rows_of(self, database: str, names: Sequence[str]) -> list[dict]:
        """The rows of these records, where they still exist (an absent one was deleted):
        record-list exports, each answer holding only records asked for, once each."""
        fields = CACHED_FIELDS[database]
        id_field = RECORD_ID_FIELD[database]
        rows: list[dict] = []
        for chunk in _chunks(list(names), self.settings.read_chunk_records):
            operation = f"export {len(chunk)} listed record(s)"
            part = self._export(database, operation, fields=fields, records=list(chunk))
            try:
                check_present(part, chunk, id_field)
            except IncompleteRead as error:
                raise RedcapError(database, operation, f"incomplete answer: {error}") from None
            rows.extend(part)
        return rows

    def project_title(self, database: str) -> str:
        """The database's REDCap project title: proves the URL and token work."""
        return str(self.project_info(database).get("project_title", ""))

    def project_info(self, database: str) -> dict:
        """REDCap's project info (title, ``in_production``, ...): one request."""
        answer = self._call(database, "export project info", "export_project_info")
        if not isinstance(answer, dict):
            raise RedcapError(database, "export project info", "answer is not a JSON object")
        return answer

    # -- what autoid check probes, and REDCap's clock (autoid_lib.redcap.clock) ---------------

    def redcap_version(self, database: str) -> str:
        """REDCap's version (``content=version``), as REDCap spells it."""
        answer = self._retried(
            database,
            "export version",
            lambda: self._call(database, "export version", "export_version"),
        )
        return printable(str(answer or "unknown"))[:40]

    def changed_since(self, database: str, names: Sequence[str], begin: datetime) -> list[str]:
        """Which of ``names`` REDCap counts as created or modified at or after ``begin`` (its
        own clock, to the second): one names-only export, ``YYYY-MM-DD HH:MM:SS`` only
        (REDCap 15.7.6 drops the time part of any other spelling)."""
        id_field = RECORD_ID_FIELD[database]
        operation = f"export records changed since {begin:%Y-%m-%d %H:%M:%S}"
        rows = self._export(
            database, operation, fields=[id_field], records=list(names), date_begin=begin
        )
        _require_fields(rows, [id_field], database, operation)
        return record_names(rows, id_field)

    def write_kit_record(self, database: str, row: dict[str, str], operation: str) -> None:
        """Write one of the kit's own records under its fixed name (not the lease's guard)."""
        answer = self._import(database, operation, [row], guarded=False, return_content="count")
        count = answer.get("count") if isinstance(answer, dict) else None
        if str(count) != "1":
            raise RedcapError(database, operation, f"REDCap confirmed {count} of 1 record")

    def delete_kit_records(self, database: str, names: Sequence[str], operation: str) -> None:
        """Delete records (``records[i]``, as REDCap's delete requires); one request."""
        try:
            self._call(database, operation, "delete_records", list(names))
        except _Transient as error:
            raise RedcapError(database, operation, str(error), error.kind) from None

    # -- writes ------------------------------------------------------------------------------

    def create_autoid_rows(self, new_ids: Sequence[NewAutoId]) -> list[str]:
        """Import new AutoID rows with REDCap-assigned record names; returns those names."""
        created: list[str] = []
        for chunk in _chunks(new_ids, self.settings.chunk_size):
            rows = [
                {
                    "record_id": f"new-{i}",
                    "autoid_project_name": new.project_name,
                    "autoid_hash": new.hash,
                    "autoid_value": new.value,
                    "autoid_method": "1",
                }
                for i, new in enumerate(chunk, start=1)
            ]
            answer = self._import(
                "autoid",
                f"import {len(rows)} AutoID row(s)",
                rows,
                force_auto_number=True,
                return_content="auto_ids",
            )
            pairs = answer if isinstance(answer, list) else []
            # REDCap answers "new,temporary" per record (API/record/import.php)
            sent = {str(pair).partition(",")[2] for pair in pairs}
            if len(pairs) != len(rows) or sent != {row["record_id"] for row in rows}:
                raise RedcapError(
                    "autoid",
                    f"import {len(rows)} AutoID row(s)",
                    f"REDCap confirmed {len(pairs)} of {len(rows)} new records",
                )
            created.extend(str(pair).split(",")[0] for pair in pairs)
        return created

    def create_transfers(self, transfers: Sequence[TransferRequest]) -> int:
        """Import transfer requests as new ``transfers`` instances; returns records touched."""
        touched = 0
        for chunk in _chunks(transfers, self.settings.chunk_size):
            rows = [
                {
                    "study_instance_uid": t.study_uid,
                    "redcap_repeat_instrument": "transfers",
                    # REDCap picks the next free instance at write time, so a request someone
                    # added since our read is never overwritten
                    "redcap_repeat_instance": "new",
                    "transfer_requested_date": t.requested_date,
                    "transfer_project_name": t.project_name,
                    "transfer_name": t.pseudonym,
                }
                for t in chunk
            ]
            operation = f"import {len(rows)} transfer request(s)"
            answer = self._import("transfers", operation, rows, return_content="count")
            expected = len({t.study_uid for t in chunk})
            count = answer.get("count") if isinstance(answer, dict) else None
            if str(count) != str(expected):
                raise RedcapError(
                    "transfers", operation, f"REDCap confirmed {count} of {expected} studies"
                )
            touched += expected
        return touched

    def rename_autoid_rows(self, project_names: Mapping[str, str]) -> int:
        """Set ``autoid_project_name`` of existing AutoID records (record ID -> new name), as
        ``autoid repair`` retires rows; returns how many REDCap confirmed. Hash and value stay."""
        renamed = 0
        for chunk in _chunks(sorted(project_names), self.settings.chunk_size):
            rows = [{"record_id": r, "autoid_project_name": project_names[r]} for r in chunk]
            operation = f"rename {len(rows)} AutoID row(s)"
            answer = self._import("autoid", operation, rows, return_content="count")
            count = answer.get("count") if isinstance(answer, dict) else None
            if str(count) != str(len(rows)):
                raise RedcapError(
                    "autoid", operation, f"REDCap confirmed {count} of {len(rows)} records"
                )
            renamed += len(rows)
        return renamed

    # -- the one place requests happen -------------------------------------------------------

    def _project(self, database: str) -> Project:
        if database not in self._projects:
            self._projects[database] = _KnownSchemaProject(
                self.settings.urls[database],
                self.settings.tokens[database].reveal(),
                RECORD_ID_FIELD[database],
                self._session,
                verify_ssl=self.settings.verify,
                timeout=self.settings.timeout_s,
                allow_redirects=False,
            )
        return self._projects[database]

    def _read_records(
        self,
        database: str,
        operation: str,
        fields: Sequence[str],
        date_begin: datetime | None = None,
        date_end: datetime | None = None,
    ) -> list[dict]:
        """Every record of the table (or of the date range), complete or not at all.

        The names-only export fixes which records the read is about; the chunks then ask for
        exactly those (without the date range: a record changed since stays in the read). A
        chunk that is short, or holds extra records, reads the whole table again — a record
        deleted since the names export is then simply not listed — and after ``read_retries``
        such rounds the read fails closed.
        """
        attempts = self.settings.read_retries + 1
        for attempt in range(1, attempts + 1):
            names = self._record_names(database, operation, date_begin, date_end)
            try:
                return self._read_chunks(database, operation, names, fields)
            except IncompleteRead as error:
                self.read_again(database, operation, error, attempt, attempts)
        raise AssertionError("unreachable")

    def _read_in_one(
        self,
        database: str,
        operation: str,
        fields: Sequence[str],
        date_begin: datetime | None = None,
        date_end: datetime | None = None,
    ) -> list[dict]:
        """What ``_read_records`` reads, in one export of the data: for a table or range the
        caller knows to be small. One answer is consistent in itself (no chunk can miss a
        record deleted between requests); out of memory, it reads names and chunks."""
        id_field = RECORD_ID_FIELD[database]
        try:
            rows = self._export(
                database,
                f"{operation} (in one request)",
                halvable=True,
                fields=_id_first(database, fields),
                date_begin=date_begin,
                date_end=_range_end(date_begin, date_end),
            )
        except _OutOfMemory:
            log.warning("%s: REDCap ran out of memory; reading in chunks", database)
            return self._read_records(database, operation, fields, date_begin, date_end)
        _require_fields(rows, [id_field], database, f"{operation} (in one request)")
        return rows

    def read_again(
        self, database: str, operation: str, error: IncompleteRead, attempt: int, attempts: int
    ) -> None:
        """After an incomplete read: fail closed on the last attempt, else wait (backoff) to
        read again; for every reader that starts a read over (this gateway, ``table_read``)."""
        if attempt == attempts:
            raise RedcapError(
                database, operation, f"incomplete answer: {error} (read {attempts}x)"
            ) from None
        delay = min(2 ** (attempt - 1), 8)
        log.warning("%s: incomplete answer (%s); reading again in %ss", database, error, delay)
        self._sleep(delay)

    def _record_names(
        self, database: str, operation: str, begin: datetime | None, end: datetime | None
    ) -> list[str]:
        """The names-only export: which records exist (changed in [begin, end], if given)."""
        id_field = RECORD_ID_FIELD[database]
        rows = self._export(
            database,
            f"{operation} (record names)",
            fields=[id_field],
            date_begin=begin,
            date_end=_range_end(begin, end),
        )
        _require_fields(rows, [id_field], database, f"{operation} (record names)")
        return record_names(rows, id_field)

    def _read_chunks(
        self, database: str, operation: str, names: Sequence[str], fields: Sequence[str]
    ) -> list[dict]:
        """``names`` read whole (``_chunk_answers``), and as many records as listed."""
        rows = [row for _, part in self._chunk_answers(database, operation, names, fields)
                for row in part]  # fmt: skip
        check_total(len(record_names(rows, RECORD_ID_FIELD[database])), len(names))
        return rows

    def _chunk_answers(
        self, database: str, operation: str, names: Sequence[str], fields: Sequence[str]
    ) -> Iterator[tuple[list[str], list[dict]]]:
        """``names`` in record-list exports of at most ``read_chunk_records``, each checked
        (``check_chunk``), as (names asked, rows); an out-of-memory answer halves the chunk
        size for this database from then on, down to ``MIN_CHUNK_RECORDS``."""
        id_field = RECORD_ID_FIELD[database]
        fields = _id_first(database, fields)
        size = self._chunk_records.get(database, self.settings.read_chunk_records)
        start = 0
        progress = _Progress(database, len(names), size, self._clock)
        while start < len(names):
            chunk = list(names[start : start + size])
            try:
                part = self._export(
                    database, operation, halvable=True, fields=fields, records=chunk
                )
            except _OutOfMemory:
                if len(chunk) <= MIN_CHUNK_RECORDS:
                    raise RedcapError(
                        database,
                        operation,
                        f"REDCap ran out of memory even for {len(chunk)} records",
                    ) from None
                size = self._chunk_records[database] = max(MIN_CHUNK_RECORDS, len(chunk) // 2)
                log.warning("%s: REDCap ran out of memory; %s records per request", database, size)
                continue
            check_chunk(part, chunk, id_field)
            start += len(chunk)
            progress.step(start)
            yield chunk, part

    def iter_history_chunks(self) -> Iterator[tuple[int, list[IncomingStudy]]]:
        """All of Incoming with the forwarder's fields (``incoming_studies(None, None,
        history=True)`` without accession numbers: the audit never shows one), one checked
        chunk at a time, so a reader of all history holds one chunk's raw rows.

        Yields ``(attempt, studies)``. Every attempt starts with ``(attempt, [])``; a chunk
        that fails its check makes the whole read start again (``_read_records``), so a new
        attempt number means: drop everything taken from the earlier one. The read is complete
        only once the generator ends; after ``read_retries`` restarts it fails closed.
        """
        database, operation = "incoming", "export studies all history"
        id_field = RECORD_ID_FIELD[database]
        study_fields = STUDY_FIELDS
        transfer_fields = TRANSFER_FIELDS + HISTORY_TRANSFER_FIELDS
        together = self.settings.same_database("incoming", "transfers")
        wanted = study_fields + (transfer_fields if together else [])
        fields = wanted
        attempts = self.settings.read_retries + 1
        for attempt in range(1, attempts + 1):
            yield attempt, []
            names = self._record_names(database, operation, None, None)
            read = 0
            try:
                for chunk, rows in self._chunk_answers(database, operation, names, fields):
                    _require_fields(rows, study_fields, database, operation)
                    read += len(record_names(rows, id_field))
                    transfer_rows = (
                        rows if together else self._read_transfer_rows(chunk, transfer_fields)
                    )
                    studies = _collapse_studies(rows, transfer_rows)
                    del rows, transfer_rows  # raw rows of at most one chunk are alive
                    yield attempt, studies
                check_total(read, len(names))
                return
            except IncompleteRead as error:
                self.read_again(database, operation, error, attempt, attempts)

    def _export(
        self, database: str, operation: str, halvable: bool = False, **query: Any
    ) -> list[dict]:
        """Export flat JSON records; transient failures are retried (reads only). With
        ``halvable`` an out-of-memory answer goes to the caller, which asks for less."""

        def ask() -> list[dict]:
            answer = self._call(database, operation, "export_records", format_type="json", **query)
            return _checked_rows(answer, database, operation)

        return self._retried(database, operation, ask, halvable=halvable)

    def _export_text(self, database: str, operation: str, **query: Any) -> str:
        """A CSV export as text; transient failures are retried like ``_export``'s."""

        def ask() -> str:
            answer = self._call(database, operation, "export_records", **query)
            if not isinstance(answer, str):
                raise _Transient("answer is not CSV text")
            if _out_of_memory(answer):
                raise _OutOfMemory("REDCap ran out of server memory")
            return answer

        return self._retried(database, operation, ask)

    def _retried(
        self, database: str, operation: str, ask: Callable[[], _T], *, halvable: bool = False
    ) -> _T:
        """``ask()``, again after a transient failure, with backoff, ``read_retries`` times
        (reads only: a timed-out import may have been written)."""
        attempts = self.settings.read_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return ask()
            except _Transient as error:
                if halvable and isinstance(error, _OutOfMemory):
                    raise
                if attempt == attempts:
                    raise RedcapError(
                        database, operation, f"{error} (tried {attempts}x)", error.kind
                    ) from None
                delay = min(2 ** (attempt - 1), 8)
                log.warning("%s: %s; retrying in %ss", database, error, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    # -- the lease's records (autoid_lib.redcap.lease) -----------------------------------------

    def write_lease(self, fields: dict[str, str], record: str | None = None) -> str:
        """Write one lease record: a new auto-numbered one, or ``record`` again; its name."""
        row = {"record_id": record or "lease", **fields}
        operation = "write lease ticket" if record is None else f"update lease record {record}"
        answer = self._import(
            "autoid",
            operation,
            [row],
            guarded=False,
            force_auto_number=record is None,
            return_content="ids",
        )
        if not isinstance(answer, list) or len(answer) != 1:
            raise RedcapError("autoid", operation, "REDCap did not confirm one record")
        return str(answer[0])

    def delete_lease_records(self, records: Sequence[str]) -> None:
        """Delete lease records (one request); REDCap refuses all if one is missing."""
        self.delete_kit_records("autoid", records, f"delete {len(records)} lease record(s)")

    def _import(
        self, database: str, operation: str, rows: list[dict], guarded: bool = True, **options
    ):
        """Imports are never retried: a timed-out import may have been written."""
        if guarded and self.write_guard is not None:
            self.write_guard()
        try:
            return self._call(database, operation, "import_records", rows, **options)
        except _Transient as error:
            if not error.sent:  # refused before a byte was sent: certainly not written
                raise RedcapError(
                    database, operation, f"{error}; nothing was written", error.kind
                ) from None
            raise RedcapError(
                database,
                operation,
                f"{error}; it may have been written in part, the next run completes it",
                error.kind,
            ) from None

    def _call(self, database: str, operation: str, method: str, *args, **kwargs):
        project = self._project(database)
        url = self.settings.urls[database]
        if url in self._refused:  # one slow, redirecting or flooding server costs one deadline
            raise RedcapError(database, operation, f"not tried: {self._refused[url]}")
        try:
            return self._request(project, method, database, operation, *args, **kwargs)
        except AnswerRefused as error:  # a redirect, too slow or too large: retrying won't help
            self._refused[url] = f"the same server failed before ({error})"
            if isinstance(error, DeadlineExceeded) and method == "import_records":
                raise _Transient(str(error), "timeout") from None  # may be written: see _import
            kind = "timeout" if isinstance(error, DeadlineExceeded) else "redcap_error"
            raise RedcapError(database, operation, str(error), kind) from None

    def make_room(self, requests: int) -> None:
        """Wait until ``requests`` more requests stay under ``max_requests_per_minute``: before
        the lease, so that a pause for the ceiling does not eat the ticket's life."""
        self._paced(requests)

    def _paced(self, room: int = 1) -> None:
        """Wait until ``room`` more requests stay under ``max_requests_per_minute``
        (``pacing``)."""
        while (wait := self._pacer.room_s(self._clock(), room)) > 0:
            if wait >= PAUSE_LOGGED_FROM_S:
                log.info(
                    "pausing %.0f s for the request ceiling (max_requests_per_minute = %s)",
                    wait,
                    self.settings.max_requests_per_minute,
                )
            self.paced_s += wait
            self._sleep(wait)

    def _request(self, project, method: str, database: str, operation: str, *args, **kwargs):
        self._paced()
        self.requests += 1
        try:
            return getattr(project, method)(*args, **kwargs)
        except AnswerRefused:
            raise
        except RecursionError:
            raise RedcapError(database, operation, "answer nests too deeply to parse") from None
        except requests.exceptions.JSONDecodeError as error:
            if _out_of_memory(str(getattr(error, "doc", ""))):
                raise _OutOfMemory("REDCap ran out of server memory") from None
            raise _Transient("answer is not valid JSON (an error page or a cut-off body)") from None
        except requests.exceptions.SSLError:
            raise RedcapError(
                database,
                operation,
                f"TLS certificate check failed for {_host(project.url)}; see [redcap] verify",
                "tls",
            ) from None
        except requests.Timeout:
            raise _Transient(
                f"timed out (timeout_s = {self.settings.timeout_s:g} s)", "timeout"
            ) from None
        except requests.ConnectionError as error:
            raise _Transient(
                f"could not connect to the REDCap server {_host(project.url)}",
                "unreachable",
                sent=not _never_connected(error),
            ) from None
        except requests.RequestException as error:
            reason = self._reason(error)
            if _token_refused(error, reason):
                source = self.settings.tokens[database].source
                raise RedcapError(
                    database,
                    operation,
                    f"REDCap refused the API token ({source}): {reason}",
                    "token_refused",
                ) from None
            if _out_of_memory(reason):
                raise _OutOfMemory("REDCap ran out of server memory") from None
            if method == "import_records":
                reason = _without_values(reason, args[0] if args else [])
            raise RedcapError(database, operation, reason) from None
        finally:
            self._pacer.done(self._clock())

    def _reason(self, error: Exception) -> str:
        detail = error.args[0] if error.args else error
        if isinstance(detail, dict) and "error" in detail:
            detail = detail["error"]
        return printable(redact(str(detail), self._secrets))[:300]


class _Progress:
    """Logs a read of more than one chunk: at most every ``PROGRESS_EVERY_S``, and its end.
    Counts only, never a record name."""

    def __init__(self, database: str, total: int, size: int, clock: Callable[[], float]):
        self.database, self.total, self.clock = database, total, clock
        self.shown = total > size
        self.requests = 0
        self.last = clock()

    def step(self, done: int) -> None:
        self.requests += 1
        now = self.clock()
        if self.shown and (done >= self.total or now - self.last >= PROGRESS_EVERY_S):
            self.last = now
            progress_log.info(
                "%s: %s of %s records read (%s requests)",
                self.database,
                done,
                self.total,
                self.requests,
            )


class _Transient(Exception):
    """A failure worth retrying for a read: timeout, connection, unparsable answer."""

    def __init__(self, message: str, kind: str = "redcap_error", *, sent: bool = True):
        super().__init__(message)
        self.kind = kind  # a failures.FailureKind
        self.sent = sent  # False: the request never left (the connection was refused)


def _never_connected(error: Exception) -> bool:
    """Whether a connection error came before any of the request was sent: urllib3 could not
    open the connection (refused, no route, name not resolved)."""
    from urllib3.exceptions import NewConnectionError

    seen: BaseException | None = error
    for _ in range(6):  # requests wraps urllib3's MaxRetryError, which holds the reason
        if seen is None:
            return False
        if isinstance(seen, NewConnectionError):
            return True
        seen = getattr(seen, "reason", None) or (seen.args[0] if seen.args else None)
        if not isinstance(seen, BaseException):
            return False
    return False


def _host(url: str) -> str:
    """The server of an API URL (``redcap.example.org:443``), for messages."""
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


# REDCap 15.7.6's answers to a delete the token may not make: HTTP 403 "You do not have Delete
# Record privileges" (API/index.php, no "Delete Records" right), and HTTP 400 api_135
# "Insufficient user privileges: You must have 'API Import/Update' privileges and 'Delete
# Records' privileges …" (API/record/delete.php, the import right missing)
_NO_DELETE_RIGHT = ("delete record privileges", "'delete records' privileges")


def lacks_delete_right(error: RedcapError) -> bool:
    """Whether REDCap refused a delete for the token's rights (either of its two answers)."""
    reason = error.reason.lower()
    return any(text in reason for text in _NO_DELETE_RIGHT)


def _token_refused(error: Exception, reason: str) -> bool:
    """REDCap's answer to a wrong, expired or rights-less token: HTTP 403 or its text. A 403
    about one right ("You do not have Delete Record privileges") is not a refused token: the
    token works, REDCap names the right it lacks, and that text is the reason."""
    response = getattr(error, "response", None)
    status = getattr(response, "status_code", None)
    if "privileges" in reason and "permissions to use the API" not in reason:
        return False
    return status in (401, 403) or "permissions to use the API" in reason


def _out_of_memory(text: object) -> bool:
    return isinstance(text, str) and any(mark in text for mark in _OUT_OF_MEMORY)


class _OutOfMemory(_Transient):
    """REDCap's out-of-memory answer: a chunked read asks for fewer records instead."""

    def __init__(self, message: str):
        super().__init__(message, "out_of_memory")


def _one_records_field(payload: dict) -> dict:
    """An export's record list as one comma-separated ``records`` field.

    PyCap sends a record list as ``records[0]``, ``records[1]``, …, one form variable each,
    and PHP drops variables past ``max_input_vars`` (1000 by default) without an error: a
    5,000-record chunk would come back as its first thousand. REDCap's record *export* also
    takes the list as one comma-separated string (``API/record/export.php`` splits it), so
    send that; names with a comma stay indexed. Only exports: ``API/record/delete.php``
    refuses any ``records`` that is not an array (REDCap 15.7.6, error api_136), so a delete
    keeps PyCap's ``records[i]``."""
    if payload.get("content") != "record" or payload.get("action", "export") != "export":
        return payload
    keys = [key for key in payload if key.startswith("records[")]
    values = [str(payload[key]) for key in keys]
    if not keys or any("," in value for value in values):
        return payload
    collapsed = {key: value for key, value in payload.items() if key not in keys}
    collapsed["records"] = ",".join(values)
    return collapsed


def _without_values(reason: str, rows: list[dict]) -> str:
    """REDCap's import errors quote the record and the value ("1.2.3","field","value","msg"):
    keep only the names of the fields it complains about, never what was sent."""
    fields = sorted({key for row in rows for key in row if f'"{key}"' in reason})
    named = f" about field(s) {', '.join(fields)}" if fields else ""
    return f"REDCap refused the data{named} (details withheld: they quote record values)"


def projects_from_rows(rows: list[dict]) -> list[ProjectRecord]:
    """Projects rows as the planner sees them; one with a reserved name stays, so that the
    plan reports it as misconfigured by name (``plan.routing``)."""
    _require_fields(rows, PROJECT_FIELDS, "projects", "export projects")
    return [
        ProjectRecord(
            record_id=row["record_id"],
            name=row["project_name"].strip(),
            use_autoid=row["project_use_autoid"].strip() == "1",
            ae_title=row["project_autoid_aetitle"].strip(),
            pattern=row["project_patient_naming"].strip(),
        )
        for row in rows
        if not row.get("redcap_repeat_instrument")
    ]


def autoid_from_rows(rows: list[dict]) -> tuple[list[AutoIdRow], list[dict]]:
    """AutoID rows as (ID rows, lease records). Lease records are split off here, where rows
    are built, so no reader ever counts them as IDs; the clock's probe record is dropped."""
    _require_fields(rows, AUTOID_FIELDS[:-1], "autoid", "export AutoID table")
    rows = [row for row in rows if not is_clock_probe_row(row)]
    leases = [row for row in rows if is_lease_row(row)]
    return [
        AutoIdRow(
            record_id=row["record_id"],
            project_name=row["autoid_project_name"].strip(),
            hash=row["autoid_hash"].strip(),
            value=row["autoid_value"].strip(),
            method=row.get("autoid_method", ""),
        )
        for row in rows
        if not is_lease_row(row)
    ], leases


def is_lease_row(row: Mapping[str, str]) -> bool:
    return row.get("autoid_project_name", "").strip() == LEASE_PROJECT


def is_clock_probe_row(row: Mapping[str, str]) -> bool:
    """The record ``autoid check`` writes to measure REDCap's clock (``server_clock``)."""
    return row.get("autoid_project_name", "").strip() == CLOCK_PROJECT


def is_kit_row(row: Mapping[str, str]) -> bool:
    """Lease tickets and the clock's probe: the kit's own AutoID records, deleted routinely
    and never an ID."""
    return is_lease_row(row) or is_clock_probe_row(row)


def _checked_rows(answer: Any, database: str, operation: str) -> list[dict]:
    if not isinstance(answer, list) or not all(isinstance(row, dict) for row in answer):
        raise RedcapError(database, operation, "answer is not a list of records")
    for row in answer:
        for key, value in row.items():
            if not isinstance(value, str):
                row[key] = "" if value is None else str(value)
    return answer


def _require_fields(rows: list[dict], fields: Iterable[str], database: str, operation: str):
    if rows:
        missing = [f for f in fields if f not in rows[0]]
        if missing:
            raise RedcapError(database, operation, f"answer lacks field(s) {', '.join(missing)}")


def _transfer_from_row(row: dict) -> ExistingTransfer | None:
    if row.get("redcap_repeat_instrument") != "transfers":
        return None
    try:
        instance = int(row.get("redcap_repeat_instance") or 0)
    except ValueError:
        instance = 0
    return ExistingTransfer(
        instance=instance,
        project_name=row.get("transfer_project_name", "").strip(),
        name=row.get("transfer_name", "").strip(),
        requested_date=row.get("transfer_requested_date", ""),
        transfer_date=row.get("transfer_date", ""),
        error_codes=tuple(
            key.rpartition("___")[2]
            for key, value in row.items()
            if key.startswith("transfer_error___") and value == "1"
        ),
    )


def _collapse_studies(rows: list[dict], transfer_rows: list[dict]) -> list[IncomingStudy]:
    """One study per UID from REDCap's flat rows (base row + one row per repeat instance)."""
    base: dict[str, dict] = {}
    for row in rows:
        if not row.get("redcap_repeat_instrument"):
            base[row["study_instance_uid"]] = row
    transfers: dict[str, list[ExistingTransfer]] = {}
    for row in transfer_rows:
        transfer = _transfer_from_row(row)
        if transfer is not None:
            transfers.setdefault(row["study_instance_uid"], []).append(transfer)
    return [
        IncomingStudy(
            uid=uid,
            ae_title=row.get("study_aetitle_addressed", "").strip(),
            patient_id=row.get("study_patient_id", ""),
            study_date=row.get("study_date", ""),
            accession_number=row.get("study_accession_number", ""),
            transfers=tuple(sorted(transfers.get(uid, ()), key=lambda t: t.instance)),
        )
        for uid, row in base.items()
        if uid
    ]


def _range_end(begin: datetime | None, end: datetime | None) -> datetime | None:
    """A begin-only range ends far in the future: REDCap ends it at its own "now"
    (API/record/export.php), and a change it stamped later (a DST fall-back's repeated hour)
    would be missed."""
    return _OPEN_END if begin is not None and end is None else end


def _id_first(database: str, fields: Sequence[str]) -> list[str]:
    """``fields`` with the table's record ID field first, once (REDCap exports need it)."""
    id_field = RECORD_ID_FIELD[database]
    return [id_field, *(f for f in fields if f != id_field)]


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
