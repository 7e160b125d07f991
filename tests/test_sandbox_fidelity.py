"""The sandbox's contract: each behaviour of REDCap the kit relies on, as REDCap 15.7.6 does it.

Measured on 2026-12-07 against a real REDCap 15.7.6 (PHP 8.2, MariaDB 10.11; the table in
docs/sandbox.md), or read in its PHP source where a docstring says "source" and names the file
(API/…, Classes/…; texts from its English.ini). One test per behaviour, named for it; each
fails on a sandbox kinder than REDCap. Requests go over HTTP, as a client sends them.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from autoid_lib.sandbox.flat import invalid_value
from autoid_lib.sandbox.schema import Field
from autoid_lib.sandbox.server import CREATOR_RIGHTS

T0 = datetime(2026, 12, 7, 10, 0, 0)
NOT_VALIDATED = (
    "The value you provided could not be validated because it does not follow the expected "
    "format. Please try again."
)


def post(sb, database: str, **params) -> requests.Response:
    form = {"token": sb.tokens[database], "format": "json", **params}
    return requests.post(sb.url, data=form, timeout=10)


def with_token(sb, token: str, **params) -> requests.Response:
    return requests.post(sb.url, data={"token": token, "format": "json", **params}, timeout=10)


def _two_records(sb) -> None:
    sb.add_rows("autoid", [{"record_id": "1"}, {"record_id": "2"}])


def names(sb, database: str = "autoid") -> list[str]:
    return [str(row[_id(database)]) for row in sb.rows(database)]


def _id(database: str) -> str:
    return "study_instance_uid" if database == "incoming" else "record_id"


def import_json(sb, database: str, rows: list[dict], token: str = "", **params):
    form = {"content": "record", "action": "import", "data": json.dumps(rows), **params}
    return with_token(sb, token or sb.tokens[database], **form)


# -- delete (API/record/delete.php) ------------------------------------------------------------


def test_delete_refuses_records_as_a_plain_string_redcap_15_7_6(sandbox):
    """REDCap 15.7.6: ``records`` must be an array even for one name (api_136); nothing goes."""
    _two_records(sandbox)
    for records in ("1", "1,2"):
        answer = post(sandbox, "autoid", content="record", action="delete", records=records)
        assert answer.status_code == 400
        assert "must be passed as an array" in answer.json()["error"]
    assert [row["record_id"] for row in sandbox.rows("autoid")] == ["1", "2"]


def test_delete_takes_records_as_an_array_redcap_15_7_6(sandbox):
    _two_records(sandbox)
    answer = post(sandbox, "autoid", content="record", action="delete", **{"records[0]": "2"})
    assert answer.status_code == 200 and answer.json() == 1
    assert [row["record_id"] for row in sandbox.rows("autoid")] == ["1"]


def test_delete_without_records_is_an_empty_array_redcap_15_7_6(sandbox):
    """REDCap's API/index.php makes a missing ``records`` an empty array: api_137."""
    answer = post(sandbox, "autoid", content="record", action="delete")
    assert answer.status_code == 400 and "is an empty array" in answer.json()["error"]


def test_delete_of_an_unknown_record_deletes_nothing_redcap_15_7_6(sandbox):
    _two_records(sandbox)
    form = {"records[0]": "1", "records[1]": "nope"}
    answer = post(sandbox, "autoid", content="record", action="delete", **form)
    assert answer.status_code == 400
    assert answer.json()["error"].endswith("The following records do not exist: nope")
    assert len(sandbox.rows("autoid")) == 2


def test_delete_without_the_delete_right_is_refused_with_403_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source, API/index.php: a token without "Delete Records" is refused with
    403 "You do not have Delete Record privileges" before the method runs; nothing goes."""
    _two_records(sandbox)
    weak = sandbox.add_token("autoid", delete=False)
    answer = with_token(sandbox, weak, content="record", action="delete", **{"records[0]": "1"})
    assert answer.status_code == 403
    assert answer.json() == {"error": "You do not have Delete Record privileges"}
    assert names(sandbox) == ["1", "2"]


def test_delete_needs_the_import_right_too_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source, API/record/delete.php: "Delete Records" without "API
    Import/Update" answers 400 api_135, before the records are looked at."""
    _two_records(sandbox)
    weak = sandbox.add_token("autoid", import_=False)
    answer = with_token(sandbox, weak, content="record", action="delete", records="1")
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "Insufficient user privileges: You must have 'API Import/Update' privileges and "
        "'Delete Records' privileges in the project in order to utilize this API method."
    )
    assert names(sandbox) == ["1", "2"]


# -- import: one record once per request (Classes/Records.php saveData) ------------------------


@pytest.mark.parametrize("force", ["true", "false"])
def test_an_import_naming_one_record_twice_is_refused_redcap_15_7_6(sandbox, force):
    """REDCap 15.7.6: forceAutoNumber with the same temporary name twice → 400 "…occur more
    than once", nothing written (measured); source (Records::saveData, data_import_tool_217):
    the same for any import into a project without repeating instruments, case ignored."""
    rows = [
        {"record_id": "x1", "autoid_value": "A"},
        {"record_id": "X1", "autoid_value": "B"},
    ]
    answer = import_json(sandbox, "autoid", rows, forceAutoNumber=force)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "The records listed below occur more than once. Please remove any duplicates and try "
        "again: X1-event_1_arm_1--"
    )
    assert sandbox.rows("autoid") == []


# -- import: validation (Classes/Records.php saveData) -----------------------------------------


@pytest.mark.parametrize(
    ("database", "field", "value", "text"),
    [
        ("incoming", "transfer_date", "2024-13-01 10:00", "Y-M-D H:M[:S] format"),
        ("incoming", "transfer_date", "2024-02-30 10:00", "Y-M-D H:M[:S] format"),
        ("incoming", "transfer_requested_date", "2024-01-01 24:00", "Y-M-D H:M[:S] format"),
        ("projects", "project_rec_start_date", "2023-02-29", "Y-M-D format"),
    ],
)
def test_an_impossible_date_or_datetime_is_refused_redcap_15_7_6(
    sandbox, database, field, value, text
):
    """REDCap 15.7.6: ``2024-13-01 10:00`` in a datetime field → 400 "Invalid date format…"
    (measured); its validation checks real calendar values (data_import_tool_190/193)."""
    row = {_id(database): "r1", field: value}
    if database == "incoming":
        row |= {"redcap_repeat_instrument": "transfers", "redcap_repeat_instance": "1"}
    answer = import_json(sandbox, database, [row])
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error.startswith(f'"r1","{field}","{value}","Invalid date format. (NOTE: Dates must')
    assert text in error
    assert sandbox.rows(database) == []


@pytest.mark.parametrize(
    ("validation", "good", "bad"),
    [
        ("date_ymd", "2024-02-29", "2023-02-29"),
        ("datetime_ymd", "2024-12-31 23:59", "2024-12-31 23:60"),
        ("datetime_seconds_ymd", "2024-12-31 23:59:59", "2024-04-31 10:00:00"),
    ],
)
def test_dates_are_checked_as_calendar_values_redcap_15_7_6(validation, good, bad):
    """REDCap 15.7.6 source (Classes/Records.php, its date regular expressions): a date or
    datetime must exist on the calendar, leap years included."""
    spec = Field("f", "form", "text", "F", validation=validation)
    assert invalid_value(spec, "f", good) == ""
    assert invalid_value(spec, "f", bad).startswith("Invalid date format.")


def test_a_non_integer_in_an_integer_field_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 (measured): "The value you provided could not be validated because it does
    not follow the expected format. Please try again.", one CSV line per bad value."""
    row = {
        "study_instance_uid": "1.2.3",
        "redcap_repeat_instrument": "series",
        "redcap_repeat_instance": "1",
        "series_num_files": "12a",
    }
    answer = import_json(sandbox, "incoming", [row])
    assert answer.status_code == 400
    assert answer.json()["error"] == f'"1.2.3","series_num_files","12a","{NOT_VALIDATED}"'
    assert sandbox.rows("incoming") == []


def test_a_value_below_a_field_minimum_is_stored_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source (Records::saveData): a text field's minimum is a soft check, a
    warning only; the value is saved."""
    row = {
        "study_instance_uid": "1.2.3",
        "redcap_repeat_instrument": "series",
        "redcap_repeat_instance": "1",
        "series_num_files": "-1",
    }
    assert import_json(sandbox, "incoming", [row]).status_code == 200
    assert sandbox.rows("incoming")[1]["series_num_files"] == "-1"


def test_a_choice_outside_a_field_s_choices_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source (Records::saveData, data_import_tool_222/227)."""
    answer = import_json(sandbox, "autoid", [{"record_id": "1", "autoid_method": "9"}])
    assert answer.json()["error"] == (
        '"1","autoid_method","9","The value is not a valid category for autoid_method"'
    )
    row = {
        "study_instance_uid": "1.2.3",
        "redcap_repeat_instrument": "transfers",
        "redcap_repeat_instance": "1",
        "transfer_error___1": "2",
    }
    answer = import_json(sandbox, "incoming", [row])
    assert answer.json()["error"].endswith(
        "transfer_error___1 is a checkbox field and thus can only have a value of '1' (checked) "
        "or '0' (unchecked).\""
    )


@pytest.mark.parametrize("name", ["a+b", "a&b", "a#b", "o'neil", "x" * 101])
def test_record_names_redcap_cannot_store_are_refused_redcap_15_7_6(sandbox, name):
    """REDCap 15.7.6 source (Records::saveData, data_import_tool_215/216/233)."""
    answer = import_json(sandbox, "autoid", [{"record_id": name}])
    assert answer.status_code == 400
    assert sandbox.rows("autoid") == []


# -- record names (MySQL collation; Records::checkRecordNamesCaseSensitive) --------------------


def test_record_names_ignore_case_and_the_stored_name_stays_redcap_15_7_6(sandbox):
    """REDCap 15.7.6: importing ``ABC`` after ``abc`` overwrote ``abc`` (measured: one
    record). Source (Records::checkRecordNamesCaseSensitive): the import is conformed to the
    stored name, so ``abc`` stays; lookups by name match as MySQL's case-insensitive collation
    does: an export or a delete by ``ABC`` finds ``abc``."""
    assert import_json(sandbox, "autoid", [{"record_id": "abc", "autoid_value": "1"}]).ok
    answer = import_json(
        sandbox, "autoid", [{"record_id": "ABC", "autoid_value": "2"}], returnContent="ids"
    )
    assert answer.json() == ["abc"]
    assert [(r["record_id"], r["autoid_value"]) for r in sandbox.rows("autoid")] == [("abc", "2")]
    listed = post(sandbox, "autoid", content="record", **{"records[0]": "ABC"}).json()
    assert [row["record_id"] for row in listed] == ["abc"]
    gone = post(sandbox, "autoid", content="record", action="delete", **{"records[0]": "Abc"})
    assert gone.status_code == 200 and gone.json() == 1
    assert sandbox.rows("autoid") == []


def test_a_record_name_is_trimmed_but_values_are_not_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 (measured): a trailing space in a record name is trimmed; values are
    stored as sent."""
    assert import_json(sandbox, "autoid", [{"record_id": "abc ", "autoid_value": "v "}]).ok
    assert [(r["record_id"], r["autoid_value"]) for r in sandbox.rows("autoid")] == [("abc", "v ")]


# -- dateRangeBegin / dateRangeEnd (API/record/export.php reformatDate) ------------------------


def _changed(sb, **bounds) -> list[str]:
    answer = post(sb, "autoid", content="record", **{"fields[0]": "record_id"}, **bounds)
    assert answer.status_code == 200, answer.text
    return [row["record_id"] for row in answer.json()]


@pytest.mark.parametrize(
    "begin",
    [
        "2026-12-07 11:00:00.123456",
        "2026-12-07 11:00:00+01:00",
        "2026-12-07T11:00:00.5",
        "2026-12-07T11:00:00+01:00",
    ],
)
def test_date_range_begin_with_fractions_or_an_offset_begins_that_day_redcap_15_7_6(
    sandbox_factory, begin
):
    """REDCap 15.7.6 (measured): fractional seconds or a UTC offset → the time is dropped and
    the range begins at 00:00 of that day (wider), not a 400."""
    sb = sandbox_factory(now=T0)
    sb.add_rows("autoid", [{"record_id": "1"}])
    sb.advance(timedelta(hours=2))
    assert _changed(sb, dateRangeBegin=begin) == ["1"]
    assert _changed(sb, dateRangeBegin="2026-12-07 11:00:00") == []


@pytest.mark.parametrize(
    ("bound", "listed"),
    [("2026-12-07T09:59", ["1"]), ("2026-12-07T10:01", []), ("2026-12-07 9:59:00", ["1"])],
)
def test_date_range_begin_reads_t_and_hours_minutes_redcap_15_7_6(sandbox_factory, bound, listed):
    """REDCap 15.7.6 (measured): a ``T`` separator and ``HH:MM`` parse, to the minute."""
    sb = sandbox_factory(now=T0)
    sb.add_rows("autoid", [{"record_id": "1"}])
    assert _changed(sb, dateRangeBegin=bound) == listed


@pytest.mark.parametrize(
    ("end", "listed"),
    [("2026-12-07 09:00:00.5", ["1"]), ("2026-12-06T23:00:00+01:00", []), ("2026-12-07", ["1"])],
)
def test_date_range_end_with_fractions_or_an_offset_ends_that_day_redcap_15_7_6(
    sandbox_factory, end, listed
):
    """REDCap 15.7.6 source (API/record/export.php reformatDate): an end whose time is not
    H:M[:S] ends at 23:59:59 of its day (wider), as a begin starts at 00:00."""
    sb = sandbox_factory(now=T0)
    sb.add_rows("autoid", [{"record_id": "1"}])
    assert _changed(sb, dateRangeEnd=end) == listed


def test_date_range_begin_alone_ends_now_redcap_15_7_6(sandbox_factory):
    """REDCap 15.7.6 source (API/record/export.php): a ``dateRangeBegin`` without an end
    ranges to REDCap's now; a change stamped later (its clock set back) is not listed."""
    sb = sandbox_factory(now=T0)
    sb.add_rows("autoid", [{"record_id": "1"}])
    sb.set_now(T0 - timedelta(hours=1))
    assert _changed(sb, dateRangeBegin="2026-12-07 00:00:00") == []


def test_record_times_and_date_ranges_use_redcaps_time_zone_redcap_15_7_6(sandbox_factory):
    """REDCap 15.7.6 (measured): record times and the ``dateRange`` filter are on its PHP
    ``date.timezone`` (its log said 17:55 when UTC was 16:55), not UTC or the client's zone."""
    zone = ZoneInfo("Pacific/Kiritimati")  # UTC+14: never the machine's zone
    sb = sandbox_factory(timezone="Pacific/Kiritimati")
    sb.add_rows("autoid", [{"record_id": "1"}])
    there = datetime.now(zone).replace(tzinfo=None, microsecond=0)
    assert abs(sb.now() - there) < timedelta(minutes=1)
    a_minute_ago = (there - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert _changed(sb, dateRangeBegin=a_minute_ago) == ["1"]


@pytest.mark.parametrize("bound", ["yesterday", "07.12.2026"])
def test_an_unreadable_date_range_begin_is_no_bound_redcap_15_7_6(sandbox_factory, bound):
    """REDCap 15.7.6 source (API/record/export.php): a begin that is not Y-M-D is replaced by
    2004-08-01; never a 400."""
    sb = sandbox_factory(now=T0)
    sb.add_rows("autoid", [{"record_id": "1"}])
    assert _changed(sb, dateRangeBegin=bound) == ["1"]


# -- version, field names, project info, error shapes -----------------------------------------


@pytest.mark.parametrize("fmt", ["json", "csv", "xml"])
def test_version_is_15_7_6_as_csv_redcap_15_7_6(sandbox, fmt):
    """REDCap 15.7.6 (measured): ``content=version`` answers ``15.7.6`` as text/csv, also with
    format=json (API/version/export.php sends it as CSV)."""
    answer = post(sandbox, "autoid", content="version", format=fmt)
    assert answer.status_code == 200 and answer.text == "15.7.6"
    assert answer.headers["Content-Type"].startswith("text/csv")


def test_export_field_names_of_incoming_has_30_entries_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 (measured): 30 entries for Incoming; source (REDCap::getExportFieldNames):
    no descriptive or file field, a checkbox once per choice, and each form's ``_complete``."""
    entries = post(sandbox, "incoming", content="exportFieldNames").json()
    assert len(entries) == 30
    exported = [entry["export_field_name"] for entry in entries]
    assert "transfer_info_text" not in exported
    assert exported[-3:] == ["transfer_mapped_uid", "transfer_error_message", "transfers_complete"]
    assert {"incoming_studies_complete", "series_complete", "transfers_complete"} <= set(exported)
    assert [e["choice_value"] for e in entries if e["original_field_name"] == "transfer_error"] == [
        "1",
        "2",
        "3",
    ]
    projects = post(sandbox, "projects", content="exportFieldNames").json()
    assert "leave_alone_current_rek" not in {e["original_field_name"] for e in projects}


def test_project_info_has_redcaps_fields_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source (API/project/export.php, Project::getAttributesApiExportProjectInfo):
    these keys in this order, integers as numbers; ``in_production`` is the status (1)."""
    info = post(sandbox, "autoid", content="project").json()
    assert list(info) == [
        "project_id",
        "project_title",
        "creation_time",
        "production_time",
        "in_production",
        "project_language",
        "purpose",
        "purpose_other",
        "project_notes",
        "custom_record_label",
        "secondary_unique_field",
        "is_longitudinal",
        "has_repeating_instruments_or_events",
        "surveys_enabled",
        "scheduling_enabled",
        "record_autonumbering_enabled",
        "randomization_enabled",
        "ddp_enabled",
        "project_irb_number",
        "project_grant_number",
        "project_pi_firstname",
        "project_pi_lastname",
        "display_today_now_button",
        "missing_data_codes",
        "external_modules",
        "bypass_branching_erase_field_prompt",
    ]
    assert info["in_production"] == 1 and info["is_longitudinal"] == 0


@pytest.mark.parametrize(
    ("fmt", "content_type", "body"),
    [
        ("json", "application/json", '{"error": "You do not have API Export privileges"}'),
        ("csv", "text/csv", "ERROR: You do not have API Export privileges"),
        (
            "xml",
            "text/xml",
            '<?xml version="1.0" encoding="UTF-8" ?><hash><error>You do not have API Export '
            "privileges</error></hash>",
        ),
    ],
)
def test_errors_follow_return_format_redcap_15_7_6(sandbox, fmt, content_type, body):
    """REDCap 15.7.6 source (RestUtility::sendResponse): an error's body and content type
    follow ``returnFormat`` (else ``format``, else XML); XML on one line, unescaped."""
    token = sandbox.add_token("autoid", export=False)
    answer = with_token(sandbox, token, content="record", returnFormat=fmt)
    assert answer.status_code == 403
    assert answer.headers["Content-Type"].startswith(content_type)
    assert answer.text == body


# -- rights (API/index.php) --------------------------------------------------------------------


def test_a_token_without_the_import_right_cannot_import_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source (API/index.php): 403 "You do not have API Import/Update
    privileges"; nothing written."""
    token = sandbox.add_token("autoid", import_=False)
    answer = import_json(sandbox, "autoid", [{"record_id": "1"}], token=token)
    assert answer.status_code == 403
    assert answer.json() == {"error": "You do not have API Import/Update privileges"}
    assert sandbox.rows("autoid") == []


def test_a_token_without_the_export_right_cannot_export_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source (API/index.php): every export method (records, version, project,
    metadata, next record name) needs "API Export"."""
    token = sandbox.add_token("autoid", export=False)
    for content in ("record", "version", "project", "metadata", "generateNextRecordName"):
        answer = with_token(sandbox, token, content=content)
        assert answer.status_code == 403, content
        assert answer.json() == {"error": "You do not have API Export privileges"}


def test_a_project_creator_may_neither_delete_nor_rename_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 (measured): a project's creator gets API export and import but neither
    "Delete Records" nor "Rename Records"; source (API/index.php) for the 403 texts."""
    _two_records(sandbox)
    creator = sandbox.add_token("autoid", rights=CREATOR_RIGHTS)
    assert import_json(sandbox, "autoid", [{"record_id": "3"}], token=creator).ok
    delete = with_token(sandbox, creator, content="record", action="delete", **{"records[0]": "1"})
    assert (delete.status_code, delete.json()["error"]) == (
        403,
        "You do not have Delete Record privileges",
    )
    rename = with_token(
        sandbox, creator, content="record", action="rename", record="1", new_record_name="9"
    )
    assert (rename.status_code, rename.json()["error"]) == (
        403,
        "You do not have Rename Record privileges",
    )
    assert names(sandbox) == ["1", "2", "3"]


# -- development status (Project::reachedMaxRecordCount) ---------------------------------------


def test_a_project_in_development_refuses_imports_past_50_records_redcap_15_7_6(sandbox_factory):
    """REDCap 15.7.6 (measured): a project in development refuses an import once it would pass
    50 records (system_config_947), nothing written; source (Records::saveData): every record
    the import names counts, so at 50 even an update is refused. ``in_production`` is 0."""
    sb = sandbox_factory(status={"autoid": "development"})
    assert post(sb, "autoid", content="project").json()["in_production"] == 0
    assert post(sb, "projects", content="project").json()["in_production"] == 1
    sb.add_rows("autoid", [{"record_id": str(n)} for n in range(1, 50)])
    too_many = import_json(sb, "autoid", [{"record_id": "50"}, {"record_id": "51"}])
    assert too_many.status_code == 400
    assert too_many.json()["error"] == (
        "NOTICE: No new records can be created since this project has already met the limit of "
        "50 records while in Development status. If you have questions regarding this, please "
        "contact your REDCap Administrator."
    )
    assert len(sb.rows("autoid")) == 49
    assert import_json(sb, "autoid", [{"record_id": "50"}]).ok
    update = import_json(sb, "autoid", [{"record_id": "1", "autoid_value": "x"}])
    assert update.status_code == 400 and "Development status" in update.json()["error"]
    sb.set_status("autoid", "production")
    assert import_json(sb, "autoid", [{"record_id": "51"}]).ok


# -- rename (API/record/rename.php, REDCap::renameRecord) --------------------------------------


def test_rename_gives_a_record_its_new_name_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source (API/record/rename.php): ``record`` and ``new_record_name``; the
    answer is ``1``."""
    _two_records(sandbox)
    answer = post(
        sandbox, "autoid", content="record", action="rename", record="2", new_record_name="b"
    )
    assert answer.status_code == 200 and answer.text == "1"
    assert names(sandbox) == ["1", "b"]


def test_a_rename_counts_as_a_change_under_the_new_name_redcap_15_7_6(sandbox_factory):
    """REDCap 15.7.6 (measured): a rename is a change in the log; ``dateRangeBegin`` lists
    the record under its new name."""
    sb = sandbox_factory(now=T0)
    _two_records(sb)
    sb.advance(timedelta(hours=1))
    post(sb, "autoid", content="record", action="rename", record="1", new_record_name="one")
    assert _changed(sb, dateRangeBegin="2026-12-07 10:30:00") == ["one"]


@pytest.mark.parametrize(
    ("record", "new", "text"),
    [
        ("7", "x", "Current Record does not exists."),
        ("", "x", "Current record name must be provided."),
        ("1", "", "New record name must be provided."),
        (
            "1",
            "2",
            'Record ID "1" could not be changed to "2" because that record already exists! '
            "Please try again.",
        ),
    ],
)
def test_rename_refusals_come_back_as_http_200_text_redcap_15_7_6(sandbox, record, new, text):
    """REDCap 15.7.6 source (API/record/rename.php sends REDCap::renameRecord's answer, an
    error text included, with HTTP 200)."""
    _two_records(sandbox)
    answer = post(
        sandbox, "autoid", content="record", action="rename", record=record, new_record_name=new
    )
    assert (answer.status_code, answer.text) == (200, text)
    assert names(sandbox) == ["1", "2"]


# -- out of memory (Classes/System.php) --------------------------------------------------------


def test_out_of_memory_is_http_500_with_a_json_error_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 source (System.php): past the 2 GB limit of an API request, HTTP 500 with
    ``{"error": "REDCap ran out of server memory…"}`` in the request's return format."""
    sandbox.inject_fault("oom", database="incoming", content="record")
    answer = post(sandbox, "incoming", content="record")
    assert answer.status_code == 500
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json() == {
        "error": "REDCap ran out of server memory. The request cannot be processed. Please try "
        "importing/exporting a smaller amount of data."
    }


def test_an_import_costs_time_per_row_as_at_redcap_15_7_6(sandbox_factory):
    """REDCap 15.7.6 (measured, 2 vCPU): about 8 ms an imported row (15–19 s per 2,000 AutoID
    rows). ``import_row_cost_s`` makes the sandbox as slow, so tests and benchmarks see a long
    write phase; a lower bound on a modelled wait, not a speed target."""
    import time

    sb = sandbox_factory(seed="empty", import_row_cost_s=0.02)
    rows = [{"record_id": str(n)} for n in range(1, 51)]
    started = time.monotonic()
    answer = post(sb, "autoid", content="record", data=json.dumps(rows), returnContent="count")
    assert answer.json() == {"count": 50}
    assert time.monotonic() - started >= 50 * 0.02
