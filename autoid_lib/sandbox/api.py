"""The sandbox's REDCap API as a WSGI application.

All protocol logic lives here: the token decides the database, ``content`` (and ``action``,
or the presence of ``data``) the operation; every request is counted by (database, content,
action) and may be replaced by a scripted fault before it touches the data. The operations
are also methods (``export_records``, ``import_records``) so that the ``Sandbox`` handle can
build scenarios and check results without a second implementation.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from urllib.parse import unquote, unquote_plus

from . import faults as fault_bodies
from .faults import Fault, FaultPlan
from .flat import PHP_SPACE, ImportPlan, export_columns, flat_rows, plan_import
from .logic import compile_filter
from .protocol import (
    DEVELOPMENT_LIMIT,
    NO_DELETE,
    NO_DELETE_RIGHT,
    NO_EXPORT_RIGHT,
    NO_IMPORT_RIGHT,
    NO_PERMISSION,
    NO_RENAME_RIGHT,
    RECORDS_EMPTY,
    RECORDS_NOT_ARRAY,
    RENAME_NO_NEW_NAME,
    RENAME_NO_RECORD,
    RENAME_TAKEN,
    RENAME_UNKNOWN,
    ApiError,
    Response,
    array_param,
    decode_rows,
    error_format,
    flag,
    list_param,
    parse_form,
    render_error,
    render_json,
    render_plain,
    render_rows,
    render_text,
    return_format,
    to_csv,
)
from .schema import REPEAT_INSTANCE, REPEAT_INSTRUMENT, SCHEMAS, Schema
from .store import Store

log = logging.getLogger(__name__)

REDCAP_VERSION = "15.7.6"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
# A token's rights, as REDCap's user rights name them: "API Export", "API Import/Update",
# "Delete Records", "Rename Records". REDCap gives a project's creator API export and import
# but neither delete nor rename (CREATOR_RIGHTS); the sandbox's own tokens have all four.
RIGHTS = frozenset({"export", "import", "delete", "rename"})
CREATOR_RIGHTS = frozenset({"export", "import"})
# A project's status; in development REDCap caps the records (the site's setting, 50 measured)
STATUSES = ("development", "production")
DEVELOPMENT_RECORD_LIMIT = 50
# API/index.php's refusal when a token lacks the right an action needs (randomize: not modelled)
_NO_RIGHT = {
    "export": NO_EXPORT_RIGHT,
    "import": NO_IMPORT_RIGHT,
    "delete": NO_DELETE_RIGHT,
    "rename": NO_RENAME_RIGHT,
}
# dateRangeBegin given alone starts no earlier than this (API/record/export.php)
_EARLIEST = "2004-08-01 00:00:00"
_STATUS_TEXT = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found"}
_STATUS_TEXT |= {405: "Method Not Allowed", 500: "Internal Server Error"}
_STATUS_TEXT |= {504: "Gateway Timeout"}


class RedcapApp:
    """WSGI callable serving the three databases of one ``Store``."""

    def __init__(
        self,
        store: Store,
        tokens: dict[str, str],
        clock: Callable[[], datetime] = datetime.now,
        created: str = "",
        *,
        rights: Mapping[str, Iterable[str]] | None = None,
        status: Mapping[str, str] | None = None,
    ):
        self.store = store
        self.tokens = dict(tokens)
        self._database_of = {token: db for db, token in tokens.items()}
        given = rights or {}
        self._rights = {token: _rights(given.get(db, RIGHTS)) for db, token in tokens.items()}
        self.status = {db: "production" for db in SCHEMAS} | dict(status or {})
        for db, state in self.status.items():
            if db not in SCHEMAS or state not in STATUSES:
                raise ValueError(f"status of {db!r} must be one of {STATUSES}, not {state!r}")
        self.development_record_limit = DEVELOPMENT_RECORD_LIMIT
        self.clock = clock
        self.import_row_cost_s = 0.0  # seconds each imported row takes (REDCap: about 0.008)
        self.created = created or clock().strftime(TIME_FORMAT)
        self.faults = FaultPlan()
        self.stopping = threading.Event()  # wakes requests sleeping in a timeout fault
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._received: list[float] = []  # time.monotonic() of each request, as it arrived
        self._sent: Counter[tuple[str, str, str]] = Counter()  # answer bytes, same keys
        self._counts_lock = threading.Lock()

    def add_token(self, database: str, token: str, rights: Iterable[str] = RIGHTS) -> None:
        """Another user's token on ``database`` with ``rights`` (a subset of ``RIGHTS``)."""
        self._database_of[token] = database
        self._rights[token] = _rights(rights)

    # -- counting -----------------------------------------------------------------------
    def request_counts(self) -> Counter[tuple[str, str, str]]:
        with self._counts_lock:
            return Counter(self._counts)

    def request_times(self) -> list[float]:
        """When each request since the last reset arrived (``time.monotonic``, in order): a
        client's pace as REDCap's rate limiter sees it."""
        with self._counts_lock:
            return list(self._received)

    def answer_bytes(self) -> Counter[tuple[str, str, str]]:
        """Bytes of the answer bodies sent, by (database, content, action): what a client
        received from each database, without reading a token outside the app."""
        with self._counts_lock:
            return Counter(self._sent)

    def reset_counts(self) -> None:
        with self._counts_lock:
            self._counts.clear()
            self._received.clear()
            self._sent.clear()

    # -- WSGI ---------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        if not environ.get("PATH_INFO", "").endswith("/api/"):
            status, ctype, body = render_text("<h1>Not Found</h1>", 404)
        elif environ.get("REQUEST_METHOD") != "POST":
            status, ctype, body = render_text(
                "<p>REDCap API sandbox: POST form-encoded requests to this URL.</p>"
            )
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            status, ctype, body = self.handle(environ["wsgi.input"].read(length))
        start_response(
            f"{status} {_STATUS_TEXT.get(status, 'Error')}",
            [("Content-Type", ctype), ("Content-Length", str(len(body)))],
        )
        return [body]

    def handle(self, body: bytes) -> Response:
        """One API request, from its form body to its answer."""
        try:
            params = parse_form(body)
        except ApiError as err:
            return render_error(err, "xml")
        database = self._database_of.get(params.get("token", "").strip(), "")
        content = params.get("content", "")
        action = params.get("action") or ("import" if "data" in params else "export")
        key = (database or "unknown", content, action)
        with self._counts_lock:
            self._counts[key] += 1
            self._received.append(time.monotonic())
        answer = self._respond(database, content, action, params)
        with self._counts_lock:
            self._sent[key] += len(answer[2])
        return answer

    def _respond(
        self, database: str, content: str, action: str, params: dict[str, str]
    ) -> Response:
        fault = self.faults.pick(
            database or "unknown",
            content,
            action,
            lambda: len(self._answer(database, params, commit=False)[2]),
        )
        if fault is not None:
            return self._faulted(fault, database, params)
        return self._answer(database, params, commit=True)

    def _answer(self, database: str, params: dict[str, str], *, commit: bool) -> Response:
        try:
            if not database:
                raise ApiError(NO_PERMISSION, 403)
            self._check_rights(params)
            return self.dispatch(database, params, commit=commit)
        except ApiError as err:
            return render_error(err, error_format(params))
        except Exception:  # a bug in the sandbox: answer like a PHP fatal error
            log.exception("sandbox request failed")
            return fault_bodies.http500()

    def _faulted(self, fault: Fault, database: str, params: dict[str, str]) -> Response:
        if fault.kind == "http500":
            return fault_bodies.http500()
        if fault.kind == "oom":
            return fault_bodies.out_of_memory(error_format(params))
        if fault.kind == "dropped_rows":
            return fault_bodies.dropped_rows(self._answer(database, params, commit=True))
        if fault.kind in ("timeout", "lost_answer"):
            if fault.kind == "lost_answer":  # the work is done; only its answer never arrives
                self._answer(database, params, commit=True)
            self.stopping.wait(fault.delay_s)
            return fault_bodies.gateway_timeout()
        return fault_bodies.truncated(self._answer(database, params, commit=False))

    def _check_rights(self, params: dict[str, str]) -> None:
        """API/index.php: the right the request's action needs, else HTTP 403 (a delete also
        needs the import right: API/record/delete.php answers 400 api_135 without it)."""
        rights = self._rights.get(params.get("token", "").strip(), frozenset())
        action = _redcap_action(params)
        if action in _NO_RIGHT and action not in rights:
            raise ApiError(_NO_RIGHT[action], 403)
        if action == "delete" and "import" not in rights:
            raise ApiError(NO_DELETE)

    # -- dispatch -----------------------------------------------------------------------
    def dispatch(self, database: str, params: dict[str, str], *, commit: bool = True) -> Response:
        schema = SCHEMAS[database]
        content = params.get("content", "")
        fmt = (params.get("format") or "xml").lower()
        if content == "record":
            action = params.get("action") or ("import" if "data" in params else "export")
            if action == "import":
                return self._import(schema, params, commit=commit)
            if action == "export":
                return self._export(schema, params, fmt)
            if action == "delete" and commit:
                records = array_param(params, "records")
                if records is None:  # a plain or comma-separated string: REDCap refuses it
                    raise ApiError(RECORDS_NOT_ARRAY)
                if not records:
                    raise ApiError(RECORDS_EMPTY)
                return render_json(self.delete_records(database, records))
            if action == "rename" and commit:
                return self._rename(database, params)
            raise ApiError(f"The action '{action}' is not supported by this sandbox")
        if content == "generateNextRecordName":
            return render_plain(self.next_record_name(database), return_format(params))
        if content == "version":  # API/version/export.php: always sent as CSV
            return render_plain(REDCAP_VERSION, "csv")
        if content == "metadata":
            fields, forms = list_param(params, "fields"), list_param(params, "forms")
            rows = self.metadata(database, fields, forms)
            return _table(rows, fmt)
        if content == "project":
            info = self.project_info(database)
            return render_json(info) if fmt == "json" else _table([info], fmt)
        if content == "repeatingFormsEvents":
            rows = [{"form_name": f, "custom_form_label": ""} for f in schema.repeating]
            return _table(rows, fmt, ["form_name", "custom_form_label"])
        if content == "instrument":
            rows = [
                {"instrument_name": f, "instrument_label": f.replace("_", " ").title()}
                for f in schema.forms
            ]
            return _table(rows, fmt, ["instrument_name", "instrument_label"])
        if content == "exportFieldNames":
            return _table(_export_field_names(schema), fmt)
        if content in {"formEventMapping", "event", "arm"}:
            noun = {"formEventMapping": "form/event mappings", "event": "events", "arm": "arms"}
            raise ApiError(f"You cannot export {noun[content]} for classic projects")
        raise ApiError('The value of the parameter "content" is not valid')

    def _export(self, schema: Schema, params: dict[str, str], fmt: str) -> Response:
        if (params.get("type") or "flat") != "flat":
            raise ApiError("This sandbox exports records only as type=flat")
        raw_or_label = (params.get("rawOrLabel") or "raw").lower()
        if raw_or_label not in {"raw", "label"}:
            raise ApiError(f"rawOrLabel={raw_or_label!r} is not supported by this sandbox")
        if fmt not in {"json", "csv"}:
            raise ApiError(f"The format '{fmt}' is not supported by this sandbox (json, csv)")
        header, rows = self.export_records(
            schema.name,
            fields=list_param(params, "fields"),
            forms=list_param(params, "forms"),
            records=list_param(params, "records") or None,
            labels=raw_or_label == "label",
            begin=params.get("dateRangeBegin") or None,
            end=params.get("dateRangeEnd") or None,
            filter_logic=params.get("filterLogic") or None,
        )
        return render_rows(rows, header, fmt)

    def _import(self, schema: Schema, params: dict[str, str], *, commit: bool) -> Response:
        fmt = (params.get("format") or "xml").lower()
        rows = decode_rows(fmt, params.get("data", ""))
        behavior = (params.get("overwriteBehavior") or "normal").lower()
        if behavior not in {"normal", "overwrite"}:
            raise ApiError("overwriteBehavior must be 'normal' or 'overwrite'")
        if commit and self.import_row_cost_s > 0:  # REDCap saves row by row; not under lock
            self.stopping.wait(self.import_row_cost_s * len(rows))
        plan = self.import_records(
            schema.name,
            rows,
            overwrite=behavior == "overwrite",
            force_auto_number=flag(params.get("forceAutoNumber")),
            commit=commit,
        )
        what = (params.get("returnContent") or "count").lower()
        if what == "ids":
            return render_json(plan.ids)
        if what == "auto_ids":
            return render_json(plan.auto_ids)
        if what == "nothing":
            return render_plain("", return_format(params))
        return render_json({"count": len(plan.ids)})

    def _rename(self, database: str, params: dict[str, str]) -> Response:
        """API/record/rename.php: REDCap::renameRecord's refusals come back as HTTP 200 with
        the text as the body (the method does not check them); success is ``1``."""
        fmt = (params.get("format") or "xml").lower()
        old = _renamed_name(params.get("record", ""))
        new = _renamed_name(params.get("new_record_name", ""))
        if old in ("", "0"):  # PHP's empty()
            return render_plain(RENAME_NO_RECORD, fmt)
        if new in ("", "0"):
            return render_plain(RENAME_NO_NEW_NAME, fmt)
        schema = SCHEMAS[database]
        with self.store.lock:
            found = self.store.matching(database, [old])
            if not found:
                return render_plain(RENAME_UNKNOWN, fmt)
            if self.store.matching(database, [new]):
                label = schema.fields[0].label
                return render_plain(RENAME_TAKEN.format(label=label, old=old, new=new), fmt)
            now = self.clock().strftime(TIME_FORMAT)
            self.store.rename(database, found.pop(), new, now)
        return render_plain("1", fmt)

    # -- operations (also used by the Sandbox handle) -----------------------------------
    def export_records(
        self,
        database: str,
        *,
        fields: Sequence[str] = (),
        forms: Sequence[str] = (),
        records: Iterable[str] | None = None,
        labels: bool = False,
        begin: str | None = None,
        end: str | None = None,
        filter_logic: str | None = None,
    ) -> tuple[list[str], list[dict[str, object]]]:
        """A flat export: (header, rows) exactly as the JSON format returns them."""
        schema = SCHEMAS[database]
        header = export_columns(schema, fields, forms)
        predicate = compile_filter(schema, filter_logic) if filter_logic else None
        low, high = self._date_range(begin, end)
        needed = set(header) | (predicate.fields if predicate is not None else set())
        # the record name and the repeat columns are not stored values: a names-only export
        # reads no data rows at all
        needed -= {schema.record_id, REPEAT_INSTRUMENT, REPEAT_INSTANCE}
        with self.store.lock:
            if records is None and not (low or high):
                data = self.store.load(database, None, needed)
            else:
                names = self.store.matching(database, records, low or None, high or None)
                data = self.store.load(database, names, needed)
        if predicate is not None:
            data = {n: d for n, d in data.items() if predicate(n, d)}
        return header, flat_rows(schema, data, header, labels=labels)

    def import_records(
        self,
        database: str,
        rows: list[dict[str, str]],
        *,
        overwrite: bool = False,
        force_auto_number: bool = False,
        commit: bool = True,
    ) -> ImportPlan:
        """Validate ``rows`` completely, then write them in one transaction (or not at all)."""
        schema = SCHEMAS[database]
        named = {r.get(schema.record_id, "").strip(PHP_SPACE) for r in rows}
        with self.store.lock:
            highest = self.store.max_numeric_name(database)
            existing = {} if force_auto_number else self.store.load(database, named)
            plan = plan_import(schema, rows, existing, highest, force_auto_number=force_auto_number)
            self._check_record_limit(database, len(plan.ids))
            if commit:
                now = self.clock().strftime(TIME_FORMAT)
                self.store.write(database, plan.changes, now, overwrite=overwrite)
        return plan

    def _check_record_limit(self, database: str, named: int) -> None:
        """Project::reachedMaxRecordCount: in development, an import naming ``named`` records
        (new or not) is refused when the stored count plus ``named`` would pass the limit."""
        if self.status[database] != "development":
            return
        limit = self.development_record_limit
        if self.store.count_records(database) + named > limit:
            raise ApiError(DEVELOPMENT_LIMIT.format(limit=limit))

    def _date_range(self, begin: str | None, end: str | None) -> tuple[str | None, str | None]:
        """API/record/export.php: a bound REDCap cannot read is no bound (never a 400); with a
        begin alone the range ends now, with an end alone it begins in 2004."""
        if not begin and not end:
            return None, None
        low = _range_bound(begin, "begin") if begin else None
        high = _range_bound(end, "end") if end else None
        return low or _EARLIEST, high or self.clock().strftime(TIME_FORMAT)

    def delete_records(self, database: str, records: Sequence[str]) -> int:
        """Delete whole records, all or none (REDCap refuses if one does not exist; a name
        matches the stored record whatever its case)."""
        if not records:
            raise ApiError("No records were provided to delete")
        with self.store.lock:
            found = self.store.matching(database, records)
            if len(found) != len(records):  # delete.php compares the counts
                missing = [name for name in records if name not in found]
                raise ApiError(
                    "One or more of the records provided cannot be deleted because they do not "
                    "exist in the project. The following records do not exist: "
                    + ", ".join(missing)
                )
            self.store.delete(database, records)
        return len(found)

    def next_record_name(self, database: str) -> str:
        return str(self.store.max_numeric_name(database) + 1)

    def metadata(self, database: str, fields: Sequence[str], forms: Sequence[str]) -> list[dict]:
        schema = SCHEMAS[database]
        bad = [f for f in fields if schema.spec(f) is None] + [
            f for f in forms if f not in schema.forms
        ]
        if bad:
            raise ApiError(f"The following fields or forms are not valid: {', '.join(bad)}")
        chosen = [
            f
            for f in schema.fields
            if (not fields and not forms) or f.name in fields or f.form in forms
        ]
        return [f.metadata_row() for f in chosen]

    def project_info(self, database: str) -> dict[str, object]:
        schema = SCHEMAS[database]
        return {
            "project_id": schema.project_id,
            "project_title": schema.title,
            "creation_time": self.created,
            "production_time": self.created if self.status[database] == "production" else "",
            "in_production": int(self.status[database] == "production"),
            "project_language": "English",
            "purpose": 4,
            "purpose_other": "",
            "project_notes": "REDCap API sandbox (autoid-kit)",
            "custom_record_label": "",
            "secondary_unique_field": "",
            "is_longitudinal": 0,
            "has_repeating_instruments_or_events": int(bool(schema.repeating)),
            "surveys_enabled": 0,
            "scheduling_enabled": 0,
            "record_autonumbering_enabled": int(schema.autonumbering),
            "randomization_enabled": 0,
            "ddp_enabled": 0,
            "project_irb_number": "",
            "project_grant_number": "",
            "project_pi_firstname": "",
            "project_pi_lastname": "",
            "display_today_now_button": 1,
            "missing_data_codes": "",
            "external_modules": "",
            "bypass_branching_erase_field_prompt": 0,
        }


def _table(rows: list[dict], fmt: str, columns: Sequence[str] | None = None) -> Response:
    if fmt == "json":
        return render_json(rows)
    if fmt == "csv":
        header = list(columns or (rows[0] if rows else []))
        return 200, "text/csv; charset=utf-8", to_csv(rows, header).encode()
    raise ApiError(f"The format '{fmt}' is not supported by this sandbox (json, csv)")


def _export_field_names(schema: Schema) -> list[dict[str, str]]:
    """REDCap::getExportFieldNames: every field of the project's metadata but descriptive and
    file fields, a checkbox once per choice, and each form's ``<form>_complete`` (a real field
    in REDCap's metadata, last on its form)."""
    out = []
    for form in schema.forms:
        for spec in schema.form_fields(form):
            if spec.type == "file":
                continue
            for col in spec.export_names():
                code = col.split("___", 1)[1] if spec.type == "checkbox" else ""
                out.append(_field_name(spec.name, code, col))
        out.append(_field_name(f"{form}_complete", "", f"{form}_complete"))
    return out


def _field_name(original: str, code: str, export: str) -> dict[str, str]:
    return {"original_field_name": original, "choice_value": code, "export_field_name": export}


def _rights(given: Iterable[str]) -> frozenset[str]:
    rights = frozenset(given)
    if not rights <= RIGHTS:
        raise ValueError(f"unknown rights {sorted(rights - RIGHTS)}; choose from {sorted(RIGHTS)}")
    return rights


def _redcap_action(params: dict[str, str]) -> str:
    """The action API/index.php decides on: a record's delete or rename by name, else import
    when ``data`` is sent (never for ``version``), else export."""
    content, action = params.get("content", ""), params.get("action", "")
    if content == "record" and action in ("delete", "rename", "randomize"):
        return action
    return "import" if "data" in params and content != "version" else "export"


def _renamed_name(raw: str) -> str:
    """A rename's record names as REDCap::renameRecord reads them: URL-decoded twice, trimmed."""
    return unquote(unquote_plus(raw)).strip(PHP_SPACE)


def _range_bound(value: str, kind: str) -> str:
    """API/record/export.php's reformatDate: a date, then an optional time split at the first
    run of spaces or a ``T``; a time that is not H:M or H:M:S (fractional seconds, a UTC
    offset) is dropped: 00:00:00 for a begin, 23:59:59 for an end. REDCap compares the digits
    as a number with its log's YYYYMMDDHHMMSS; "" when the date part is not Y-M-D."""
    nodes = re.split(r"[\sT]+", value)
    clock = ["00", "00", "00"] if kind == "begin" else ["23", "59", "59"]
    if len(nodes) == 2:
        parts = re.split(r"[:.]", nodes[1])
        if len(parts) in (2, 3):
            clock = [_pad(p) for p in parts] + (["00"] if len(parts) == 2 else [])
    if not re.fullmatch(r"\d+[-/]\d+[-/]\d+", nodes[0]):
        return ""
    year, month, day = re.split(r"[-/]", nodes[0])
    digits = re.sub(r"[^0-9]", "", year + _pad(month) + _pad(day) + "".join(clock))
    number = int(digits or 0)
    if number < 10**13:  # below every time REDCap logs
        return "0"
    if number >= 10**14:  # above every time REDCap logs
        return "~"
    text = str(number)
    return f"{text[:4]}-{text[4:6]}-{text[6:8]} {text[8:10]}:{text[10:12]}:{text[12:]}"


def _pad(part: str) -> str:
    """reformatDate's pad(): one character gets a leading zero, anything else stays."""
    return "0" + part if len(part) == 1 else part
