"""REDCap's wire format: form parameters in, JSON/CSV/XML bodies and error shapes out.

Clients decide success from the body, not the status (PyCap looks for an ``error`` key in
JSON, a leading ``ERROR:`` in CSV and ``<error>`` otherwise), so errors must be rendered in
the format the request asked for, exactly as REDCap renders them.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl

JSON_TYPE = "application/json; charset=utf-8"
CSV_TYPE = "text/csv; charset=utf-8"
XML_TYPE = "text/xml; charset=utf-8"
TEXT_TYPE = "text/html; charset=utf-8"

NO_PERMISSION = "You do not have permissions to use the API"
# REDCap 15.7.6's own texts (LanguageUpdater/English.ini): api_135, api_136, api_137
NO_DELETE = (
    "Insufficient user privileges: You must have 'API Import/Update' privileges and 'Delete "
    "Records' privileges in the project in order to utilize this API method."
)
RECORDS_NOT_ARRAY = (
    "Incorrect format for 'records' parameter. It must be passed as an array, even if it only "
    "contains a single record name."
)
RECORDS_EMPTY = (
    "The 'records' parameter is an empty array. The parameter must be an array containing one "
    "or more record names to delete."
)
# API/index.php checks the token's rights before any method runs: HTTP 403 with these texts
NO_EXPORT_RIGHT = "You do not have API Export privileges"
NO_IMPORT_RIGHT = "You do not have API Import/Update privileges"
NO_DELETE_RIGHT = "You do not have Delete Record privileges"
NO_RENAME_RIGHT = "You do not have Rename Record privileges"
# Records::saveData (English.ini data_import_tool_217, system_config_947, data_import_tool_190,
# data_import_tool_193, config_functions_77, data_import_tool_222, data_import_tool_227)
DUPLICATE_RECORDS = (
    "The records listed below occur more than once. Please remove any duplicates and try again:"
)
DEVELOPMENT_LIMIT = (
    "NOTICE: No new records can be created since this project has already met the limit of "
    "{limit} records while in Development status. If you have questions regarding this, please "
    "contact your REDCap Administrator."
)
INVALID_DATE = (
    "Invalid date format. (NOTE: Dates must be imported here only in Y-M-D format, regardless "
    "of the specific date format designated for this field.)"
)
INVALID_DATETIME = (
    "Invalid date format. (NOTE: Dates must be imported here only in Y-M-D H:M[:S] format, "
    "regardless of the specific date format designated for this field.)"
)
NOT_VALIDATED = (
    "The value you provided could not be validated because it does not follow the expected "
    "format. Please try again."
)
NOT_A_CATEGORY = "The value is not a valid category for"
NOT_A_CHECKBOX_VALUE = (
    "is a checkbox field and thus can only have a value of '1' (checked) or '0' (unchecked)."
)
# REDCap::renameRecord (api_187, api_189, api_188; data_entry_318/319)
RENAME_NO_RECORD = "Current record name must be provided."
RENAME_NO_NEW_NAME = "New record name must be provided."
RENAME_UNKNOWN = "Current Record does not exists."
RENAME_TAKEN = (
    '{label} "{old}" could not be changed to "{new}" because that record already exists! Please '
    "try again."
)


class ApiError(Exception):
    """A request REDCap would refuse: rendered as ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


Response = tuple[int, str, bytes]  # status, content type, body


# PHP's max_input_vars default: variables past it are dropped with only a log warning, so a
# request with 1,500 ``records[i]`` fields is answered for the first thousand or so.
MAX_INPUT_VARS = 1000


def parse_form(body: bytes) -> dict[str, str]:
    """Decode a form-encoded POST body as PHP does: a repeated key keeps its last value, and
    variables past ``MAX_INPUT_VARS`` are silently dropped."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError("The request body is not valid UTF-8") from exc
    return dict(parse_qsl(text, keep_blank_values=True)[:MAX_INPUT_VARS])


def list_param(params: dict[str, str], name: str) -> list[str]:
    """An array parameter: ``name[0]``, ``name[1]``, … or one comma-separated ``name``."""
    indexed = []
    pattern = re.compile(rf"{re.escape(name)}\[(\d*)\]$")
    for key, value in params.items():
        match = pattern.match(key)
        if match:
            indexed.append((int(match.group(1) or 0), value))
    if indexed:
        return [v.strip() for _, v in sorted(indexed) if v.strip()]
    raw = params.get(name, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def array_param(params: dict[str, str], name: str) -> list[str] | None:
    """A parameter PHP received as an array (``name[0]``, ``name[1]``, …); None when it came
    as a non-empty plain string, which REDCap's delete refuses. Absent or blank is an empty
    array, as REDCap's ``API/index.php`` makes it."""
    pattern = re.compile(rf"{re.escape(name)}\[(\d*)\]$")
    indexed = [(int(m.group(1) or 0), v) for k, v in params.items() if (m := pattern.match(k))]
    if not indexed and params.get(name, ""):
        return None
    return [value for _, value in sorted(indexed)]


def flag(value: str | None) -> bool:
    """REDCap's booleans arrive as ``true``/``1`` (PyCap sends Python's ``True``)."""
    return (value or "").strip().lower() in {"true", "1"}


def return_format(params: dict[str, str]) -> str:
    """REDCap's ``$returnFormat`` (API/index.php): ``returnFormat``, else ``format``, else
    XML. Errors and plain answers are rendered in it."""
    fmt = (params.get("returnFormat") or params.get("format") or "xml").lower()
    return fmt if fmt in {"json", "csv", "xml"} else "xml"


error_format = return_format


def render_error(error: ApiError, fmt: str) -> Response:
    if fmt == "json":
        return error.status, JSON_TYPE, json.dumps({"error": error.message}).encode()
    if fmt == "csv":
        return error.status, CSV_TYPE, f"ERROR: {error.message}".encode()
    # RestUtility::sendResponse: one line, the message not escaped
    body = f'<?xml version="1.0" encoding="UTF-8" ?><hash><error>{error.message}</error></hash>'
    return error.status, XML_TYPE, body.encode()


def render_json(value: Any, status: int = 200) -> Response:
    return status, JSON_TYPE, json.dumps(value, ensure_ascii=False).encode("utf-8")


def render_plain(text: str, fmt: str) -> Response:
    """A bare value (a version, a record name) as RestUtility::sendResponse sends it: the
    body as is, the content type of ``fmt``."""
    content_type = {"json": JSON_TYPE, "csv": CSV_TYPE}.get(fmt, XML_TYPE)
    return 200, content_type, text.encode("utf-8")


def render_text(text: str, status: int = 200) -> Response:
    return status, TEXT_TYPE, text.encode("utf-8")


def render_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> Response:
    """Flat rows as a JSON array or a CSV table (header always present)."""
    if fmt == "json":
        return render_json(list(rows))
    if fmt == "csv":
        return 200, CSV_TYPE, to_csv(rows, columns).encode("utf-8")
    raise ApiError(f"The format '{fmt}' is not supported by this sandbox")


def to_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return buf.getvalue()


def decode_rows(fmt: str, text: str) -> list[dict[str, str]]:
    """Rows of an import in ``json`` or ``csv``; every value becomes a string."""
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(f"The data being imported is not valid JSON: {exc.msg}") from exc
        except ValueError as exc:  # valid JSON Python will not read (an integer too long)
            raise ApiError(f"The data being imported is not valid JSON: {exc}") from exc
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ApiError(
                "The data being imported is not formatted correctly (JSON array of objects)"
            )
        return [{str(k): _as_text(v) for k, v in row.items()} for row in data]
    if fmt == "csv":
        reader = csv.reader(io.StringIO(text.lstrip("\ufeff")))
        try:
            table = [r for r in reader if any(cell.strip() for cell in r)]
        except csv.Error as exc:
            raise ApiError(f"The data being imported is not valid CSV: {exc}") from exc
        if not table:
            raise ApiError("The data being imported is empty (no CSV header row)")
        header = [h.strip() for h in table[0]]
        if "" in header or len(set(header)) != len(header):
            raise ApiError("The CSV header row has blank or repeated column names")
        rows = []
        for number, cells in enumerate(table[1:], start=2):
            if len(cells) != len(header):
                raise ApiError(
                    f"The CSV data is malformed: line {number} has {len(cells)} values "
                    f"but the header has {len(header)} columns"
                )
            rows.append(dict(zip(header, cells, strict=True)))
        return rows
    raise ApiError(f"The format '{fmt}' is not supported by this sandbox")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        raise ApiError("The data being imported is not formatted correctly (nested value)")
    return str(value)
