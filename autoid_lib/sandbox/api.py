"""The sandbox's REDCap API as a WSGI application.

All protocol logic lives here: the token decides the database, ``content`` (and ``action``,
or the presence of ``data``) the operation; every request is counted by (database, content,
action) and may be replaced by a scripted fault before it touches the data. The operations
are also methods (``export_records``, ``import_records``) so that the ``Sandbox`` handle can
build scenarios and check results without a second implementation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from . import faults as fault_bodies
from .faults import Fault, FaultPlan
from .flat import ImportPlan, export_columns, flat_rows, plan_import
from .logic import compile_filter
from .protocol import (
    NO_DELETE,
    NO_PERMISSION,
    RECORDS_EMPTY,
    RECORDS_NOT_ARRAY,
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
    render_rows,
    render_text,
    to_csv,
)
from .schema import REPEAT_INSTANCE, REPEAT_INSTRUMENT, SCHEMAS, Schema
from .store import Store

log = logging.getLogger(__name__)

REDCAP_VERSION = "14.5.0"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_TIME_INPUTS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d")
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
    ):
        self.store = store
        self.tokens = dict(tokens)
        self._database_of = {token: db for db, token in tokens.items()}
        self._no_delete: set[str] = set()  # tokens without the Delete Record right
        self.clock = clock
        self.import_row_cost_s = 0.0  # seconds each imported row takes (REDCap: about 0.008)
        self.created = created or clock().strftime(TIME_FORMAT)
        self.faults = FaultPlan()
        self.stopping = threading.Event()  # wakes requests sleeping in a timeout fault
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._received: list[float] = []  # time.monotonic() of each request, as it arrived
        self._sent: Counter[tuple[str, str, str]] = Counter()  # answer bytes, same keys
        self._counts_lock = threading.Lock()

    def add_token(self, database: str, token: str, *, delete: bool = True) -> None:
        """Another user's token on ``database``; ``delete=False``: no Delete Record right."""
        self._database_of[token] = database
        if not delete:
            self._no_delete.add(token)

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
        if action == "delete" and params.get("token", "").strip() in self._no_delete:
            # REDCap checks the right before anything else (API/record/delete.php), HTTP 400
            return render_error(ApiError(NO_DELETE), error_format(params))
        return self._answer(database, params, commit=True)

    def _answer(self, database: str, params: dict[str, str], *, commit: bool) -> Response:
        try:
            if not database:
                raise ApiError(NO_PERMISSION, 403)
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
            return fault_bodies.out_of_memory()
        if fault.kind == "dropped_rows":
            return fault_bodies.dropped_rows(self._answer(database, params, commit=True))
        if fault.kind in ("timeout", "lost_answer"):
            if fault.kind == "lost_answer":  # the work is done; only its answer never arrives
                self._answer(database, params, commit=True)
            self.stopping.wait(fault.delay_s)
            return fault_bodies.gateway_timeout()
        return fault_bodies.truncated(self._answer(database, params, commit=False))

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
            raise ApiError(f"The action '{action}' is not supported by this sandbox")
        if content == "generateNextRecordName":
            return render_text(self.next_record_name(database))
        if content == "version":
            return render_text(REDCAP_VERSION)
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
            return render_text("")
        return render_json({"count": len(plan.ids)})

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
        low, high = _parse_time(begin, "dateRangeBegin"), _parse_time(end, "dateRangeEnd")
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
        named = {r.get(schema.record_id, "").strip() for r in rows}
        with self.store.lock:
            highest = self.store.max_numeric_name(database)
            existing = {} if force_auto_number else self.store.load(database, named)
            plan = plan_import(schema, rows, existing, highest, force_auto_number=force_auto_number)
            if commit:
                now = self.clock().strftime(TIME_FORMAT)
                self.store.write(database, plan.changes, now, overwrite=overwrite)
        return plan

    def delete_records(self, database: str, records: Sequence[str]) -> int:
        """Delete whole records, all or none (REDCap refuses if one does not exist)."""
        if not records:
            raise ApiError("No records were provided to delete")
        with self.store.lock:
            missing = sorted(set(records) - self.store.matching(database, records))
            if missing:
                raise ApiError(
                    "One or more of the records provided cannot be deleted because they do not "
                    "exist in the project. The following records do not exist: "
                    + ", ".join(missing)
                )
            self.store.delete(database, records)
        return len(set(records))

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
            "production_time": self.created,
            "in_production": 1,
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
    out = []
    for spec in schema.fields:
        for col in spec.export_names():
            code = col.split("___", 1)[1] if spec.type == "checkbox" else ""
            out.append(
                {"original_field_name": spec.name, "choice_value": code, "export_field_name": col}
            )
    return out


def _parse_time(value: str | None, name: str) -> str | None:
    if not value:
        return None
    for pattern in _TIME_INPUTS:
        try:
            return datetime.strptime(value.strip(), pattern).strftime(TIME_FORMAT)
        except ValueError:
            continue
    raise ApiError(f"The value of {name} is not a valid date/time (YYYY-MM-DD HH:MM:SS): {value}")
