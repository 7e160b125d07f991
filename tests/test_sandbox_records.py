"""Records through PyCap over real HTTP: flat export shapes, imports, and REDCap's refusals."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest
from redcap import Project, RedcapError

UID1, UID2 = "1.2.3.1", "1.2.3.2"


def project(sb, db: str) -> Project:
    return Project(sb.url, sb.tokens[db], timeout=10)


@pytest.fixture
def incoming(sandbox):
    """Two studies: UID1 with two series and one transfer, UID2 with nothing repeating."""
    sandbox.add_rows(
        "incoming",
        [
            {
                "study_instance_uid": UID1,
                "study_patient_id": "111",
                "study_aetitle_addressed": "AE1",
            },
            {
                "study_instance_uid": UID2,
                "study_patient_id": "222",
                "study_aetitle_addressed": "AE2",
            },
            *[
                {
                    "study_instance_uid": UID1,
                    "redcap_repeat_instrument": "series",
                    "redcap_repeat_instance": n,
                    "series_description": f"s{n}",
                }
                for n in (1, 2)
            ],
            {
                "study_instance_uid": UID1,
                "redcap_repeat_instrument": "transfers",
                "redcap_repeat_instance": 1,
                "transfer_project_name": "P1",
                "transfer_error___2": "1",
            },
        ],
    )
    return project(sandbox, "incoming")


def test_flat_export_has_a_row_per_record_and_per_repeating_instance(incoming):
    rows = incoming.export_records()
    shapes = [(r["study_instance_uid"], r["redcap_repeat_instrument"]) for r in rows]
    assert shapes == [
        (UID1, ""),
        (UID1, "series"),
        (UID1, "series"),
        (UID1, "transfers"),
        (UID2, ""),
    ]
    base, series1, series2, transfer, _ = rows
    assert base["redcap_repeat_instance"] == ""
    assert (series1["redcap_repeat_instance"], series2["redcap_repeat_instance"]) == (1, 2)
    assert base["study_patient_id"] == "111" and base["series_description"] == ""
    assert series2["series_description"] == "s2" and series2["study_patient_id"] == ""
    assert transfer["transfer_error___1"] == "0" and transfer["transfer_error___2"] == "1"
    assert "transfer_error" not in base and "transfer_info_text" not in base
    assert base["incoming_studies_complete"] == "0"
    assert all(
        isinstance(v, str) for r in rows for k, v in r.items() if k != "redcap_repeat_instance"
    )


def test_export_fields_keeps_only_instruments_with_a_requested_field(incoming):
    rows = incoming.export_records(fields=["study_patient_id", "transfer_project_name"])
    assert list(rows[0]) == [
        "study_instance_uid",
        "redcap_repeat_instrument",
        "redcap_repeat_instance",
        "study_patient_id",
        "transfer_project_name",
    ]
    assert [r["redcap_repeat_instrument"] for r in rows] == ["", "transfers", ""]
    assert rows[1]["transfer_project_name"] == "P1"


def test_export_forms_and_records(incoming):
    rows = incoming.export_records(forms=["series"], records=[UID1])
    assert {r["study_instance_uid"] for r in rows} == {UID1}
    assert [r["redcap_repeat_instrument"] for r in rows] == ["", "series", "series"]
    assert "series_complete" in rows[0] and "study_patient_id" not in rows[0]


def test_export_csv_and_dataframe(incoming):
    text = incoming.export_records(format_type="csv", fields=["study_patient_id"])
    assert text.splitlines() == [
        "study_instance_uid,redcap_repeat_instrument,redcap_repeat_instance,study_patient_id",
        f"{UID1},,,111",
        f"{UID2},,,222",
    ]
    df = incoming.export_records(format_type="df")
    assert isinstance(df, pd.DataFrame)
    assert df.index.name == "study_instance_uid"
    assert len(df) == 5 and list(df["series_description"].dropna()) == ["s1", "s2"]


def test_export_raw_or_label(sandbox):
    sandbox.add_rows(
        "projects", [{"record_id": "1", "project_use_autoid": "1", "project_type": "2"}]
    )
    raw = project(sandbox, "projects").export_records(fields=["project_use_autoid", "project_type"])
    label = project(sandbox, "projects").export_records(
        fields=["project_use_autoid", "project_type"], raw_or_label="label"
    )
    assert (raw[0]["project_use_autoid"], raw[0]["project_type"]) == ("1", "2")
    assert label[0]["project_use_autoid"] == "Yes"
    assert label[0]["project_type"] == "no REK quality control or operational support"
    assert "redcap_repeat_instrument" not in raw[0]  # no repeating instruments in Projects


def test_export_filter_logic(incoming):
    only = incoming.export_records(
        fields=["study_patient_id"], filter_logic="[study_patient_id] = '222'"
    )
    assert [r["study_instance_uid"] for r in only] == [UID2]
    both = incoming.export_records(
        fields=["study_patient_id"],
        filter_logic="([study_aetitle_addressed] = 'AE1' or [study_patient_id] = \"222\")",
    )
    assert len(both) == 2
    neither = incoming.export_records(
        fields=["study_patient_id"],
        filter_logic="[study_aetitle_addressed] <> 'AE1' and [transfer_project_name] = 'P1'",
    )
    assert neither == []


def test_export_date_range_selects_records_created_or_modified(sandbox_factory):
    start = datetime(2024, 5, 1, 12, 0, 0)
    sb = sandbox_factory(seed="empty", now=start)
    sb.add_rows("autoid", [{"record_id": "1", "autoid_value": "A"}, {"record_id": "2"}])
    sb.set_now(start + timedelta(days=3))
    sb.add_rows("autoid", [{"record_id": "3", "autoid_value": "C"}])
    sb.add_rows("autoid", [{"record_id": "1", "autoid_value": "A"}])  # unchanged: not modified
    sb.add_rows("autoid", [{"record_id": "2", "autoid_value": "B"}])  # changed: modified
    autoid = project(sb, "autoid")
    recent = autoid.export_records(date_begin=start + timedelta(days=2))
    assert [r["record_id"] for r in recent] == ["2", "3"]
    early = autoid.export_records(date_begin=start, date_end=start + timedelta(days=1))
    assert [r["record_id"] for r in early] == ["1", "2"]


def test_import_normal_keeps_and_overwrite_erases_stored_values(sandbox):
    autoid = project(sandbox, "autoid")
    autoid.import_records([{"record_id": "1", "autoid_value": "X1", "autoid_hash": "h"}])
    assert autoid.import_records([{"record_id": "1", "autoid_value": "", "autoid_hash": "h2"}]) == {
        "count": 1
    }
    row = autoid.export_records()[0]
    assert (row["autoid_value"], row["autoid_hash"]) == ("X1", "h2")
    autoid.import_records([{"record_id": "1", "autoid_value": ""}], overwrite="overwrite")
    row = autoid.export_records()[0]
    assert (row["autoid_value"], row["autoid_hash"]) == ("", "h2")


def test_import_force_auto_number_returns_auto_ids(sandbox):
    autoid = project(sandbox, "autoid")
    assert autoid.generate_next_record_name() == "1"
    autoid.import_records([{"record_id": "7", "autoid_value": "A"}])
    assert autoid.generate_next_record_name() == "8"
    assert autoid.generate_next_record_name() == "8"  # reserves nothing
    answer = autoid.import_records(
        [{"record_id": "x", "autoid_value": "B"}, {"record_id": "y", "autoid_value": "C"}],
        force_auto_number=True,
        return_content="auto_ids",
    )
    assert answer == ["8,x", "9,y"]
    values = {r["record_id"]: r["autoid_value"] for r in autoid.export_records()}
    assert values == {"7": "A", "8": "B", "9": "C"}
    assert autoid.import_records([{"record_id": "9"}], return_content="ids") == ["9"]


def test_import_csv_and_new_repeat_instances(incoming):
    added = incoming.import_records(
        "study_instance_uid,redcap_repeat_instrument,redcap_repeat_instance,transfer_project_name\n"
        f"{UID1},transfers,new,P2\n{UID2},transfers,new,P3\n{UID2},transfers,new,P4\n",
        import_format="csv",
    )
    assert added == {"count": 2}
    rows = incoming.export_records(fields=["transfer_project_name"])
    got = [
        (r["study_instance_uid"], r["redcap_repeat_instance"], r["transfer_project_name"])
        for r in rows
        if r["redcap_repeat_instrument"] == "transfers"
    ]
    assert got == [(UID1, 1, "P1"), (UID1, 2, "P2"), (UID2, 1, "P3"), (UID2, 2, "P4")]
    assert (
        incoming.export_records(format_type="csv", fields=["transfer_project_name"]).count(
            "transfers"
        )
        == 4
    )


def test_import_dataframe_round_trip(incoming):
    df = incoming.export_records(format_type="df", fields=["study_patient_id"])
    df["study_patient_id"] = df["study_patient_id"].astype(str) + "9"
    assert incoming.import_records(df, import_format="df") == {"count": 2}
    assert {
        r["study_patient_id"] for r in incoming.export_records(fields=["study_patient_id"])
    } == {
        "1119",
        "2229",
    }


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"study_instance_uid": UID1, "no_such_field": "1"}], "not found in the project"),
        ([{"study_patient_id": "9"}], "record ID field"),
        ([{"study_instance_uid": "", "study_patient_id": "9"}], "record ID field"),
        (
            [
                {
                    "study_instance_uid": UID1,
                    "redcap_repeat_instrument": "incoming_studies",
                    "redcap_repeat_instance": 1,
                    "study_patient_id": "9",
                }
            ],
            "not a repeating instrument",
        ),
        ([{"study_instance_uid": UID1, "transfer_project_name": "P9"}], "repeating instrument"),
        ([{"study_instance_uid": UID1, "transfer_error___1": "5"}], "repeating instrument"),
        ([{"study_instance_uid": UID1, "transfer_info_text": "x"}], "not found in the project"),
    ],
)
def test_bad_imports_are_refused_whole(incoming, rows, message):
    before = incoming.export_records()
    good = {"study_instance_uid": "9.9.9", "study_patient_id": "new"}
    with pytest.raises(RedcapError, match=message):
        incoming.import_records([good, *rows])
    assert incoming.export_records() == before


def test_invalid_values_are_listed_like_redcap(sandbox):
    projects = project(sandbox, "projects")
    with pytest.raises(RedcapError) as refused:
        projects.import_records(
            [{"record_id": "1", "project_use_autoid": "yes", "project_rec_start_date": "1.1.2024"}]
        )
    text = str(refused.value)
    assert '"1","project_use_autoid","yes","The value is not a valid category' in text
    assert "project_rec_start_date" in text
    assert projects.export_records() == []


def test_malformed_data_answers_400(sandbox):
    import requests

    base = {"token": sandbox.tokens["autoid"], "content": "record", "returnFormat": "json"}
    for fmt, data in (
        ("json", '[{"record_id": "1"'),
        ("json", '"text"'),
        ("csv", "record_id\n1,2\n"),
    ):
        answer = requests.post(sandbox.url, data={**base, "format": fmt, "data": data}, timeout=5)
        assert answer.status_code == 400
        assert "error" in answer.json()
    assert sandbox.rows("autoid") == []


def test_export_errors_for_unknown_fields_and_bad_filters(incoming):
    with pytest.raises(RedcapError, match="fields"):
        incoming.export_records(fields=["nope"])
    with pytest.raises(RedcapError, match="filterLogic"):
        incoming.export_records(filter_logic="[study_patient_id] ~ 'x'")


def test_repeating_dataframe_round_trip(incoming):
    df = incoming.export_records(format_type="df", fields=["transfer_project_name"])
    assert df["redcap_repeat_instance"].dtype == float  # pandas reads 1 and blanks as 1.0, NaN
    assert incoming.import_records(df, import_format="df") == {"count": 2}
    assert len(incoming.export_records(fields=["transfer_project_name"])) == 3
