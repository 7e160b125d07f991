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

from .protocol import ApiError
from .schema import (
    COMPLETE_CHOICES,
    NON_IMPORTABLE_TYPES,
    REPEAT_INSTANCE,
    REPEAT_INSTRUMENT,
    Field,
    Schema,
)
from .store import BASE, RecordData, Slot

_VALIDATORS = {
    "integer": re.compile(r"-?\d+"),
    "date_ymd": re.compile(r"\d{4}-\d{2}-\d{2}"),
    "datetime_ymd": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"),
    "datetime_seconds_ymd": re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}"),
    "mrn_11d": re.compile(r"\d{11}"),
}


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
    _check_columns(schema, rows, columns)
    errors: list[str] = []
    plan = ImportPlan()
    renamed: dict[str, str] = {}
    next_number = highest_number + 1
    next_instance: dict[tuple[str, str], int] = {}
    for number, row in enumerate(rows, start=1):
        old = row.get(rid, "").strip()
        if not old:
            raise ApiError(
                f"The record ID field ({rid}) is blank in row {number}; every row needs a record ID"
            )
        if force_auto_number:
            if old not in renamed:
                renamed[old] = str(next_number)
                next_number += 1
                plan.auto_ids.append(f"{renamed[old]},{old}")
            name = renamed[old]
        else:
            name = old
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
            problem = _invalid(spec, col, value)
            if problem:
                errors.append(_error_line(name, col, value, problem))
            values[col] = value
    if errors:
        raise ApiError("\n".join(errors))
    _default_form_status(schema, plan.changes, existing, renamed)
    return plan


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


def _invalid(spec: Field | None, col: str, value: str) -> str:
    value = value.strip()
    if not value:
        return ""
    if spec is None:
        ok = value in dict(COMPLETE_CHOICES)
    elif spec.type == "checkbox":
        ok = value in {"0", "1"}
    elif spec.type in {"dropdown", "radio", "yesno"}:
        ok = value in spec.choice_codes()
    else:
        pattern = _VALIDATORS.get(spec.validation)
        ok = pattern is None or bool(pattern.fullmatch(value))
        if ok and spec.validation == "integer" and spec.validation_min:
            ok = int(value) >= int(spec.validation_min)
        if not ok:
            return (
                f"The value you provided could not be validated because it does not follow the "
                f"expected format ({spec.validation}). Please try again."
            )
    return "" if ok else f"The value is not a valid category for {col}"


def _error_line(record: str, col: str, value: str, message: str) -> str:
    return f'"{record}","{col}","{value}","{message}"'


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
