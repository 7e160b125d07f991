"""REDCap's flat record shape, both ways: stored records -> export rows, import rows -> writes.

A flat export has one row per record for the non-repeating instruments and one row per
instance of each repeating instrument that has a requested field; ``redcap_repeat_instrument``
and ``redcap_repeat_instance`` tell them apart (blank on the record's own row). An import is
checked completely before anything is written: unknown fields, blank record ids, repeat
instances on non-repeating instruments and invalid values each refuse the whole import.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from .protocol import (
    DUPLICATE_RECORDS,
    INVALID_DATE,
    INVALID_DATETIME,
    NOT_A_CATEGORY,
    NOT_A_CHECKBOX_VALUE,
    NOT_VALIDATED,
    ApiError,
)
from .schema import (
    COMPLETE_CHOICES,
    NON_IMPORTABLE_TYPES,
    REPEAT_INSTANCE,
    REPEAT_INSTRUMENT,
    Field,
    Schema,
)
from .store import BASE, RecordData, Slot, fold

# REDCap's validation types the three dictionaries use: the shape, the strptime pattern that
# makes a date a real calendar value (REDCap's regular expressions check months, days and leap
# years), and REDCap's text when a value fails (Records::saveData)
_VALIDATORS: dict[str, tuple[re.Pattern[str], str, str]] = {
    "integer": (re.compile(r"[-+]?\d+"), "", NOT_VALIDATED),
    "date_ymd": (re.compile(r"\d{4}-\d{2}-\d{2}"), "%Y-%m-%d", INVALID_DATE),
    "datetime_ymd": (
        re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"),
        "%Y-%m-%d %H:%M",
        INVALID_DATETIME,
    ),
    "datetime_seconds_ymd": (
        re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"),
        "%Y-%m-%d %H:%M:%S",
        INVALID_DATETIME,
    ),
    "mrn_11d": (re.compile(r"\d{11}"), "", NOT_VALIDATED),
}
# PHP's trim(): what REDCap strips from a record name (values are stored as given)
PHP_SPACE = " \t\n\r\0\x0b"
# REDCap's classic projects have one event; its unique name is part of an import row's key
FIRST_EVENT = "event_1_arm_1"


# -- export -----------------------------------------------------------------------------


def export_columns(schema: Schema, fields: Sequence[str], forms: Sequence[str]) -> list[str]:
    """The header of a flat export for the requested ``fields``/``forms`` (all if neither)."""
    columns = schema.columns()
    bad_forms = [f for f in forms if f not in schema.forms]
    if bad_forms:
        raise ApiError(
            f'The following values in the parameter "forms" are not valid: {", ".join(bad_forms)}'
        )
    known = {f.name for f in schema.fields} | {f"{form}_complete" for form in schema.forms}
    bad_fields = [f for f in fields if f not in known]
    if bad_fields:
        raise ApiError(
            f'The following values in the parameter "fields" are not valid: {", ".join(bad_fields)}'
        )
    wanted: set[str] = set()
    if not fields and not forms:
        wanted = set(columns)
    for name in fields:
        spec = schema.spec(name)
        wanted.update(spec.export_names() if spec else (name,))
    for form in forms:
        wanted.update(col for col, (col_form, _) in columns.items() if col_form == form)
    header = [schema.record_id]
    if schema.repeating:
        header += [REPEAT_INSTRUMENT, REPEAT_INSTANCE]
    header += [col for col in columns if col in wanted and col != schema.record_id]
    return header


def flat_rows(
    schema: Schema,
    records: dict[str, RecordData],
    header: Sequence[str],
    *,
    labels: bool = False,
) -> list[dict[str, object]]:
    """Rows in REDCap's order: each record's own row, then its repeating instances by form."""
    columns = schema.columns()
    rid = schema.record_id
    data_cols = [c for c in header if c in columns and c != rid]
    repeat_forms = [
        form for form in schema.repeating if any(columns[c][0] == form for c in data_cols)
    ]
    rows: list[dict[str, object]] = []
    for name, data in records.items():
        rows.append(_row(schema, name, BASE, data.get(BASE, {}), header, data_cols, labels))
        for form in repeat_forms:
            for slot in sorted(s for s in data if s[0] == form):
                rows.append(_row(schema, name, slot, data[slot], header, data_cols, labels))
    return rows


def _row(schema, name, slot: Slot, values, header, data_cols, labels) -> dict[str, object]:
    form_of_slot, instance = slot
    columns = schema.columns()
    row: dict[str, object] = dict.fromkeys(header, "")
    row[schema.record_id] = name
    if schema.repeating and form_of_slot:
        row[REPEAT_INSTRUMENT] = form_of_slot
        row[REPEAT_INSTANCE] = instance
    for col in data_cols:
        form, spec = columns[col]
        on_this_row = form == form_of_slot if form_of_slot else not schema.is_repeating(form)
        if not on_this_row:
            continue
        value = values.get(col, "")
        if spec is not None and spec.type == "checkbox" and value == "":
            value = "0"
        row[col] = _label(spec, value) if labels and value != "" else value
    return row


def _label(spec: Field | None, value: str) -> str:
    if spec is None:
        return dict(COMPLETE_CHOICES).get(value, value)
    if spec.type == "checkbox":
        return "Checked" if value == "1" else "Unchecked"
    if spec.type in {"dropdown", "radio", "yesno"}:
        return dict(spec.choices).get(value, value)
    return value


# -- import -----------------------------------------------------------------------------


@dataclass
class ImportPlan:
    """What an import will write, and what it answers with."""

    changes: dict[str, RecordData] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)  # record names as stored, first-seen order
    auto_ids: list[str] = field(default_factory=list)  # "new,old" pairs


def plan_import(
    schema: Schema,
    rows: list[dict[str, str]],
    existing: dict[str, RecordData],
    highest_number: int,
    *,
    force_auto_number: bool = False,
) -> ImportPlan:
    """Validate ``rows`` against ``schema`` and turn them into per-slot writes.

    ``existing`` must hold the stored data of every record the rows name (for ``"new"``
    instances and form status); ``highest_number`` is the largest numeric record name
    (auto-numbering continues from it).
    """
    columns = schema.columns()
    rid = schema.record_id
    duplicates = _duplicate_rows(schema, rows)
    if duplicates:
        raise ApiError(f"{DUPLICATE_RECORDS} {', '.join(duplicates)}")
    _check_columns(schema, rows, columns)
    errors: list[str] = []
    plan = ImportPlan()
    renamed: dict[str, str] = {}
    next_number = highest_number + 1
    next_instance: dict[tuple[str, str], int] = {}
    # a name differing only in case from a stored one (or an earlier row's) is that record,
    # under the name first stored (Records::checkRecordNamesCaseSensitive)
    known = {fold(n): n for n in existing}
    for number, row in enumerate(rows, start=1):
        old = record_name(row.get(rid, ""))
        if not old:
            raise ApiError(
                f"The record ID field ({rid}) is blank in row {number}; every row needs a record ID"
            )
        _check_name(old)
        if force_auto_number:
            if old not in renamed:
                renamed[old] = str(next_number)
                next_number += 1
                plan.auto_ids.append(f"{renamed[old]},{old}")
            name = renamed[old]
        else:
            name = known.setdefault(fold(old), old)
            if name not in plan.changes:
                plan.auto_ids.append(f"{name},{name}")
        if name not in plan.changes:
            plan.ids.append(name)
        slots = plan.changes.setdefault(name, {})
        slot = _slot_of(schema, row, number, name, existing, next_instance)
        values = slots.setdefault(slot, {})
        for col, value in row.items():
            if col in (rid, REPEAT_INSTRUMENT, REPEAT_INSTANCE):
                continue
            form, spec = columns[col]
            here = form == slot[0] if slot[0] else not schema.is_repeating(form)
            if not here:
                if value.strip():
                    errors.append(_error_line(name, col, value, _misplaced(schema, form, slot)))
                continue
            problem = invalid_value(spec, col, value)
            if problem:
                errors.append(_error_line(name, col, value, problem))
            values[col] = value
    if errors:
        raise ApiError("\n".join(errors))
    _default_form_status(schema, plan.changes, existing, renamed)
    return plan


def record_name(raw: str) -> str:
    """A record name as REDCap stores it: PHP's ``trim`` applied."""
    return raw.strip(PHP_SPACE)


def _check_name(name: str) -> None:
    """Record names REDCap refuses (data_import_tool_215/216, 233)."""
    if any(char in name for char in "+'&#"):
        raise ApiError(
            f"The record name ({name}) cannot contain a plus sign (+), ampersand (&), pound sign "
            "(#), or apostrophe."
        )
    if len(name) > 100:
        raise ApiError(
            "Record names must be 100 characters or less in length. The following record name "
            f"is too long and thus cannot be imported: {name}"
        )


def _duplicate_rows(schema: Schema, rows: list[dict[str, str]]) -> list[str]:
    """REDCap refuses two rows for the same record (case ignored) in one import into a project
    without repeating instruments, forceAutoNumber or not; it names each repeat by its row key
    (record-event-instrument-instance)."""
    if schema.repeating:
        return []
    seen: set[str] = set()
    repeats: list[str] = []
    for row in rows:
        name = record_name(row.get(schema.record_id, ""))
        instrument = row.get(REPEAT_INSTRUMENT, "") if row.get(REPEAT_INSTANCE, "") else ""
        instance = row.get(REPEAT_INSTANCE, "")
        key = f"{name}-{FIRST_EVENT}-{instrument}-{instance}"
        if fold(key) in seen and key not in repeats:
            repeats.append(key)
        seen.add(fold(key))
    return repeats


def _check_columns(schema: Schema, rows, columns) -> None:
    seen = dict.fromkeys(col for row in rows for col in row)
    allowed = set(columns) | {REPEAT_INSTRUMENT, REPEAT_INSTANCE}
    unknown = [
        c
        for c in seen
        if c not in allowed or (columns.get(c, ("", None))[1] or _NONE).type in NON_IMPORTABLE_TYPES
    ]
    if unknown:
        raise ApiError(
            "The following fields were not found in the project as real data fields: "
            + ", ".join(unknown)
        )
    if rows and schema.record_id not in seen:
        raise ApiError(
            f"The record ID field ({schema.record_id}) is missing from the data being imported"
        )


_NONE = Field("", "", "text", "")


def _slot_of(schema, row, number, name, existing, next_instance) -> Slot:
    form = row.get(REPEAT_INSTRUMENT, "").strip()
    instance = row.get(REPEAT_INSTANCE, "").strip()
    if not form and not instance:
        return BASE
    if not form or not schema.is_repeating(form):
        shown = form or "(blank)"
        raise ApiError(
            f"Row {number} (record {name}) has a repeat instance but the instrument {shown} "
            "is not a repeating instrument in this project; "
            f"repeating instruments: {', '.join(schema.repeating) or 'none'}"
        )
    if instance.lower() == "new":
        key = (name, form)
        if key not in next_instance:
            stored = [s[1] for s in existing.get(name, {}) if s[0] == form]
            next_instance[key] = max(stored, default=0) + 1
        chosen = next_instance[key]
        next_instance[key] += 1
        return (form, chosen)
    instance = re.sub(r"^(\d+)\.0*$", r"\1", instance)  # "1.0" from a pandas float column
    if not instance.isdigit() or int(instance) < 1:
        raise ApiError(
            f"Row {number} (record {name}): redcap_repeat_instance must be a positive whole "
            f"number or 'new', not {instance!r}"
        )
    key = (name, form)
    next_instance[key] = max(next_instance.get(key, 1), int(instance) + 1)
    return (form, int(instance))


def _misplaced(schema: Schema, form: str, slot: Slot) -> str:
    if schema.is_repeating(form):
        return (
            f"The field belongs to the repeating instrument {form}; give it on a row with "
            f"redcap_repeat_instrument = {form}"
        )
    return f"The field belongs to the non-repeating instrument {form}, not to {slot[0]}"


def invalid_value(spec: Field | None, col: str, value: str) -> str:
    """REDCap's text for a value it refuses, or "" (a value below a field's minimum is only a
    warning in REDCap: stored)."""
    value = value.strip()
    if not value:
        return ""
    if spec is None:  # a form status: a dropdown 0/1/2
        return "" if value in dict(COMPLETE_CHOICES) else f"{NOT_A_CATEGORY} {col}"
    if spec.type == "checkbox":
        return "" if value in {"0", "1"} else f"{col} {NOT_A_CHECKBOX_VALUE}"
    if spec.type in {"dropdown", "radio", "yesno"}:
        return "" if value in spec.choice_codes() else f"{NOT_A_CATEGORY} {col}"
    rule = _VALIDATORS.get(spec.validation)
    if rule is None:
        return ""
    shape, calendar, message = rule
    if not shape.fullmatch(value):
        return message
    if calendar:
        try:
            datetime.strptime(value, calendar)
        except ValueError:
            return message
    return ""


def _error_line(record: str, col: str, value: str, message: str) -> str:
    """One line of REDCap's import error list: CSV, quotes doubled."""
    quoted = [text.replace('"', '""') for text in (record, col, value, message)]
    return ",".join(f'"{text}"' for text in quoted)


def _default_form_status(schema, changes, existing, renamed) -> None:
    """REDCap marks a form that receives data 'Incomplete' (0) unless a status is given."""
    for name, slots in changes.items():
        stored_record = {} if renamed else existing.get(name, {})
        for slot, values in slots.items():
            stored = stored_record.get(slot, {})
            forms = (
                {slot[0]}
                if slot[0]
                else {schema.columns()[c][0] for c, v in values.items() if v.strip()}
            )
            for form in forms:
                status = f"{form}_complete"
                if not any(v.strip() for c, v in values.items() if schema.columns()[c][0] == form):
                    continue
                if not values.get(status, "").strip() and status not in stored:
                    values[status] = "0"
