"""Issue 15's ten adversarial setups, each driven through a real run against the sandbox.

The plan-level tests (test_plan_adversarial.py) show the rules; these show that the whole run —
PyCap, the sandbox's JSON, the write and the verify — gives the behaviour docs/run.md describes,
and that none of them gives a patient a second ID or reuses a stored value.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from scenarios import patient_rows

from autoid_lib.config import load_settings
from autoid_lib.errors import HashSchemeChanged
from autoid_lib.hashing import sha512_hex
from autoid_lib.records.last_success import FILE_NAME, record_success
from autoid_lib.records.summary import run_summary
from autoid_lib.run import run_autoid

KEY_ONE = "k1-" + "1" * 40
KEY_TWO = "k2-" + "2" * 40


def add_project(sb, name, ae, pattern, record_id):
    sb.add_rows("projects", [{
        "record_id": record_id, "project_name": name, "project_use_autoid": "1",
        "project_autoid_aetitle": ae, "project_patient_naming": pattern,
    }])  # fmt: skip


def add_study(sb, uid, ae, patient, request=None):
    rows = [{"study_instance_uid": uid, "study_aetitle_addressed": ae,
             "study_patient_id": patient, "study_date": "20261127"}]  # fmt: skip
    if request:
        rows.append({
            "study_instance_uid": uid, "redcap_repeat_instrument": "transfers",
            "redcap_repeat_instance": "1", "transfer_requested_date": "2026-11-27 10:00",
            "transfer_project_name": request[0], "transfer_name": request[1],
        })  # fmt: skip
    sb.add_rows("incoming", rows)


def add_autoid(sb, record_id, project, hash_, value):
    row = {"record_id": record_id, "autoid_project_name": project, "autoid_hash": hash_,
           "autoid_value": value, "autoid_method": "1"}  # fmt: skip
    sb.add_rows("autoid", [row])


def names_sent(sb) -> dict[str, list[tuple[str, str]]]:
    """Study UID -> its transfer requests (project, name)."""
    sent: dict[str, list[tuple[str, str]]] = {}
    for row in sb.rows("incoming"):
        if row.get("redcap_repeat_instrument") == "transfers" and row["transfer_project_name"]:
            sent.setdefault(row["study_instance_uid"], []).append(
                (row["transfer_project_name"], row["transfer_name"])
            )
    return sent


def settings_for(sb, tmp_path, run_lines: str = ""):
    config = sb.write_kit_files(tmp_path / "kit", reports_dir=tmp_path / "reports")
    text = config.read_text()
    if run_lines:
        text = text.replace('hash = "sha512"\n', run_lines + "\n")
    config.write_text(text)
    return load_settings(config)


def assert_one_patient_one_id(sb):
    values_of, hashes_of = {}, {}
    for r in patient_rows(sb):
        if r["autoid_hash"] and r["autoid_value"]:
            values_of.setdefault((r["autoid_project_name"], r["autoid_hash"]), set()).add(
                r["autoid_value"]
            )
            hashes_of.setdefault((r["autoid_project_name"], r["autoid_value"]), set()).add(
                r["autoid_hash"]
            )
    assert all(len(v) == 1 for v in values_of.values()), "a patient hash with two IDs"
    assert all(len(h) == 1 for h in hashes_of.values()), "an ID stored for two patients"
    assert all(len(v) == 1 for v in names_sent(sb).values()), "a study with two requests"


@pytest.mark.parametrize(
    ("stored", "spellings"),
    [("ABC\x00", ["ABC\x00", "ABC ", "ABC"]), ("ABCD ", ["ABCD ", "ABCD"])],
)
def test_case_1_every_spelling_gets_the_legacy_rows_id(sandbox, tmp_path, stored, spellings):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    add_autoid(sandbox, "1", "PROJ_P", sha512_hex(stored), "P_100")
    for i, raw in enumerate(spellings):
        add_study(sandbox, f"1.{i}", "AE_P", raw)
    result = run_autoid(settings_for(sandbox, tmp_path))
    assert result.status == "ok" and not result.problems
    assert {uid: names for uid, names in names_sent(sandbox).items()} == {
        f"1.{i}": [("PROJ_P", "P_100")] for i in range(len(spellings))
    }
    assert len(patient_rows(sandbox)) == 1  # no second row: the patient was known
    add_study(sandbox, "2.1", "AE_P", stored.strip("\x00 "))  # a later run, plain spelling
    run_autoid(settings_for(sandbox, tmp_path))
    assert names_sent(sandbox)["2.1"] == [("PROJ_P", "P_100")]


def test_case_2_a_changed_hash_key_fails_the_run_before_any_write(sandbox, tmp_path, monkeypatch):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    add_study(sandbox, "1.1", "AE_P", "K3")
    monkeypatch.setenv("AUTOID_HASH_KEY", KEY_ONE)
    keyed = 'hash = "hmac-sha256"\nhash_key = "env:AUTOID_HASH_KEY"'
    assert run_autoid(settings_for(sandbox, tmp_path, keyed)).status == "ok"
    (first,) = names_sent(sandbox)["1.1"]

    add_study(sandbox, "1.2", "AE_P", "K3")
    monkeypatch.setenv("AUTOID_HASH_KEY", KEY_TWO)
    before = (len(sandbox.rows("autoid")), names_sent(sandbox))
    failed = run_autoid(settings_for(sandbox, tmp_path, keyed))
    assert failed.status == "failed" and failed.error.step == "plan"
    assert (
        failed.error.type == HashSchemeChanged.__name__ and "previous_hash" in failed.error.message
    )
    assert KEY_ONE not in failed.error.message and KEY_TWO not in failed.error.message
    assert (len(sandbox.rows("autoid")), names_sent(sandbox)) == before
    # sha512 after HMAC: refused as well
    assert run_autoid(settings_for(sandbox, tmp_path)).error.type == "HashSchemeChanged"

    monkeypatch.setenv("AUTOID_OLD_KEY", KEY_ONE)
    rotation = keyed + '\nprevious_hash = "hmac-sha256"\nprevious_hash_key = "env:AUTOID_OLD_KEY"'
    rotated = run_autoid(settings_for(sandbox, tmp_path, rotation))
    assert rotated.status == "ok" and names_sent(sandbox)["1.2"] == [first]
    assert_one_patient_one_id(sandbox)


@pytest.mark.parametrize("setup", ["empty", "project only", "other traffic", "quiet project"])
def test_case_3_a_run_with_nothing_to_do_is_ok(sandbox, tmp_path, setup):
    if setup != "empty":
        add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    if setup == "other traffic":
        add_study(sandbox, "1.1", "CLINIC_AE", "PAT1")
    if setup == "quiet project":
        add_project(sandbox, "PROJ_Q", "AE_Q", r"Q_\d{3}", "2")
        add_study(sandbox, "1.1", "AE_P", "PAT1")
    projects = ["PROJ_Q"] if setup == "quiet project" else None
    result = run_autoid(settings_for(sandbox, tmp_path), projects=projects)
    assert result.status == "ok", result.headline
    assert "nothing to do" in result.headline
    summary = run_summary(result)
    assert summary["transfers_created"] == 0 and summary["error"] is None
    json.dumps(summary)  # serialisable: integers, not numpy


def test_case_4_a_study_sent_by_hand_names_the_patients_next_study(sandbox, tmp_path):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    add_study(sandbox, "1.1", "AE_P", "PAT", request=("PROJ_P", "P_555"))
    add_study(sandbox, "1.2", "AE_P", "PAT")
    add_study(sandbox, "1.3", "AE_P", "OTHER", request=("PROJ_X", "X_1"))
    add_study(sandbox, "1.4", "AE_P", "THIRD", request=("PROJ_P", ""))
    result = run_autoid(settings_for(sandbox, tmp_path))
    assert names_sent(sandbox)["1.2"] == [("PROJ_P", "P_555")]
    assert [(r["autoid_hash"], r["autoid_value"]) for r in patient_rows(sandbox)] == [
        (sha512_hex("PAT"), "P_555")
    ]
    mismatch = [a for a in result.plan.anomalies if a.kind == "transfer_mismatch"]
    assert mismatch and mismatch[0].count == 2  # another project; an empty name
    assert not result.problems
    assert_one_patient_one_id(sandbox)


def test_case_5_an_ae_title_claimed_twice_is_ambiguous(sandbox, tmp_path):
    add_project(sandbox, "PROJ_A", "AE_1", r"A_\d", "1")
    add_project(sandbox, "PROJ_A", "AE_2", r"A_\d", "2")
    add_project(sandbox, "PROJ_B", "AE_2", r"B_\d", "3")
    add_project(sandbox, "", "AE_C", r"C_\d", "4")
    add_project(sandbox, "PROJ_C", "AE_C", r"C_\d", "5")
    add_study(sandbox, "1.1", "AE_2", "PAT1")
    add_study(sandbox, "1.2", "AE_C", "PAT2")
    result = run_autoid(settings_for(sandbox, tmp_path))
    assert names_sent(sandbox) == {}
    assert result.plan.skipped_by_reason() == {"ambiguous AE title": 2}
    assert sum(a.kind == "ambiguous_ae_title" for a in result.plan.anomalies) == 2


def test_case_6_rows_of_a_renamed_project_are_kept_apart(sandbox, tmp_path):
    add_project(sandbox, "PROJ_P", "AE_P", "P_[0-1]", "1")
    add_autoid(sandbox, "1", "Proj_P", sha512_hex("OLDPAT"), "P_0")
    add_autoid(sandbox, "2", "Proj_P", sha512_hex("OTHEROLD"), "P_1")
    add_study(sandbox, "1.1", "AE_P", "OLDPAT")
    add_study(sandbox, "1.2", "AE_P", "NEWPAT")
    result = run_autoid(settings_for(sandbox, tmp_path))
    assert names_sent(sandbox) == {}  # P_0 and P_1 stay with their patients: the space is full
    assert result.plan.skipped_by_reason() == {
        "AutoID rows under a variant project name": 1,
        "ID space exhausted": 1,
    }
    assert "autoid_name_variant" in {a.kind for a in result.plan.anomalies}
    assert len(patient_rows(sandbox)) == 2


def test_case_7_ids_of_nuls_and_spaces_are_empty(sandbox, tmp_path):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    add_study(sandbox, "1.1", "AE_P", "\x00 \x00 \x00")
    add_study(sandbox, "1.2", "AE_P", "\x00\x00 \x00 \x00\x00")
    result = run_autoid(settings_for(sandbox, tmp_path))
    assert names_sent(sandbox) == {} and patient_rows(sandbox) == []
    assert result.plan.skipped_by_reason() == {"empty patient ID": 2}


def test_case_8_an_empty_stored_value_is_no_second_id(sandbox, tmp_path):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    add_autoid(sandbox, "1", "PROJ_P", sha512_hex("K3"), "")
    add_study(sandbox, "1.1", "AE_P", "K3")
    result = run_autoid(settings_for(sandbox, tmp_path))
    assert result.status == "attention" and result.problems == []  # the incomplete row: reported
    assert len(names_sent(sandbox)["1.1"]) == 1


def test_case_9_an_upper_case_hash_is_found(sandbox, tmp_path):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    add_autoid(sandbox, "1", "PROJ_P", sha512_hex("PAT").upper(), "P_100")
    add_study(sandbox, "1.1", "AE_P", "PAT")
    run_autoid(settings_for(sandbox, tmp_path))
    assert names_sent(sandbox)["1.1"] == [("PROJ_P", "P_100")]


def test_case_10_the_window_reaches_back_over_an_outage(sandbox, tmp_path):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    now = datetime.now().replace(microsecond=0)
    sandbox.set_now(now - timedelta(days=19))
    add_study(sandbox, "1.1", "AE_P", "PAT")  # arrived 19 days ago, never modified since
    sandbox.set_now(None)
    settings = settings_for(sandbox, tmp_path)
    record_success(settings.run.reports_dir, now - timedelta(days=20))
    result = run_autoid(settings)
    assert "extended to cover the 20 days since the last successful run" in result.headline
    assert run_summary(result)["window"]["catch_up_days"] >= 6
    assert names_sent(sandbox)["1.1"][0][0] == "PROJ_P"
    stored = json.loads((settings.run.reports_dir / FILE_NAME).read_text())
    assert stored["window_end"][:10] == f"{now:%Y-%m-%d}"


def test_case_10_beyond_the_catch_up_maximum_the_gap_is_reported_with_its_command(
    sandbox, tmp_path
):
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    now = datetime.now().replace(microsecond=0)
    sandbox.set_now(now - timedelta(days=70))
    add_study(sandbox, "1.1", "AE_P", "PAT")
    sandbox.set_now(None)
    settings = settings_for(sandbox, tmp_path)
    record_success(settings.run.reports_dir, now - timedelta(days=100))
    result = run_autoid(settings)
    (gap,) = [a for a in result.plan.anomalies if a.kind == "window_gap"]
    assert result.status == "attention" and names_sent(sandbox) == {}
    days = int(gap.action.rsplit(" ", 1)[1])
    assert 100 <= days <= 101
    run_autoid(settings, lookback_days=days)
    assert names_sent(sandbox)["1.1"][0][0] == "PROJ_P"


def test_a_study_modified_after_the_windows_end_on_redcaps_clock_is_read(sandbox, tmp_path):
    """REDCap's clock ahead of the kit's (skew, or the repeated hour of a DST fall-back): the
    read has no end, so the study is served now, not an hour later (issue 18, item 6)."""
    add_project(sandbox, "PROJ_P", "AE_P", r"P_\d{3}", "1")
    sandbox.set_now(datetime.now() + timedelta(minutes=50))
    add_study(sandbox, "1.1", "AE_P", "PAT")
    sandbox.set_now(None)
    run_autoid(settings_for(sandbox, tmp_path))
    assert names_sent(sandbox)["1.1"][0][0] == "PROJ_P"
