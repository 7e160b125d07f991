"""The planning core, without a server: each legacy defect the plan could cause, and invariants."""

import random
import re
from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from autoid_lib.hashing import PatientHasher, sha512_hex
from autoid_lib.plan import (
    ALREADY_TRANSFERRED,
    AMBIGUOUS_AE_TITLE,
    AUTOID_CONFLICT,
    EMPTY_PATIENT_ID,
    ID_SPACE_EXHAUSTED,
    INVALID_PATTERN,
    SKIPPED,
    TRANSFER,
    PlanSettings,
    plan,
)
from autoid_lib.secret import Secret
from autoid_lib.snapshot import AutoIdRow, ExistingTransfer, IncomingStudy, ProjectRecord, Snapshot

NOW = datetime(2026, 11, 28, 8, 0)
SETTINGS = PlanSettings(
    hasher=PatientHasher(), requested_at="2026-11-28 08:00", rng=random.Random(1)
)


def project(name="KNEE", ae="KNEE_AE", pattern=r"K\d{3}", use=True):
    return ProjectRecord(record_id=name, name=name, use_autoid=use, ae_title=ae, pattern=pattern)


def study(uid, patient, ae="KNEE_AE", date="20261120", transfers=()):
    return IncomingStudy(
        uid=uid, ae_title=ae, patient_id=patient, study_date=date, transfers=transfers
    )


def row(value, patient, project_name="KNEE", record_id="1", hash_=None):
    return AutoIdRow(record_id, project_name, hash_ or sha512_hex(patient), value)


def snapshot(projects, studies, rows=()):
    return Snapshot(tuple(projects), tuple(studies), tuple(rows), NOW, NOW)


def outcomes(result):
    return {s.study_uid: s for s in result.studies}


def test_known_patient_reuses_the_stored_id_and_writes_no_autoid_row():
    result = plan(snapshot([project()], [study("1.1", "PAT1")], [row("K123", "PAT1")]), SETTINGS)
    assert result.new_ids == ()
    (transfer,) = result.transfers
    assert (transfer.study_uid, transfer.pseudonym, transfer.instance) == ("1.1", "K123", 1)
    assert transfer.project_name == "KNEE"
    assert transfer.requested_date == "2026-11-28 08:00"
    assert outcomes(result)["1.1"].id_source == "reused"


def test_new_patient_with_two_studies_gets_one_id():  # legacy defect 2
    studies = [study("1.1", "PAT9"), study("1.2", "PAT9"), study("1.3", " PAT9 ")]
    result = plan(snapshot([project()], studies), SETTINGS)
    assert len(result.new_ids) == 1
    assert {t.pseudonym for t in result.transfers} == {result.new_ids[0].value}
    assert len(result.transfers) == 3


def test_new_ids_fullmatch_and_avoid_every_stored_value():  # legacy defects 1 and 4
    rows = [row(f"K{i:03d}", f"OLD{i}", record_id=str(i)) for i in range(995)]
    studies = [study(f"2.{i}", f"NEW{i}") for i in range(5)]
    result = plan(snapshot([project()], studies, rows), SETTINGS)
    values = [n.value for n in result.new_ids]
    assert len(values) == len(set(values)) == 5
    assert all(re.fullmatch(r"K\d{3}", v) for v in values)
    assert not set(values) & {r.value for r in rows}


def test_empty_patient_ids_are_skipped_and_never_share_an_id():  # legacy defect 5
    studies = [study("3.1", ""), study("3.2", "   "), study("3.3", "\x00")]
    result = plan(snapshot([project()], studies), SETTINGS)
    assert result.new_ids == () and result.transfers == ()
    assert {s.reason for s in result.studies} == {EMPTY_PATIENT_ID}
    assert [(a.kind, a.count) for a in result.anomalies] == [("empty_patient_id", 3)]


def test_an_empty_patient_id_with_a_transfer_is_already_transferred_not_skipped():
    done = study("3.4", " ", transfers=(ExistingTransfer(1, "KNEE", "K001"),))
    result = plan(snapshot([project()], [done]), SETTINGS)
    assert [(s.action, s.reason) for s in result.studies] == [(ALREADY_TRANSFERRED, "")]


def test_legacy_rows_hashed_with_trailing_spaces_still_match():
    raw = "PAT5  "
    rows = [row("K555", raw)]  # the legacy job hashed the raw value
    result = plan(snapshot([project()], [study("4.1", raw)], rows), SETTINGS)
    assert [t.pseudonym for t in result.transfers] == ["K555"]
    assert result.new_ids == ()


def test_a_patient_stored_under_the_dicom_padded_id_keeps_it():
    rows = [row("K555", "PAT05 ")]  # odd-length ID, padded to even length by DICOM
    result = plan(snapshot([project()], [study("4.2", "PAT05")], rows), SETTINGS)
    assert [t.pseudonym for t in result.transfers] == ["K555"] and result.new_ids == ()


def test_shared_ae_title_skips_its_studies_and_reports_it():  # legacy defect 6
    projects = [project("A", ae="SHARED"), project("B", ae="SHARED")]
    result = plan(snapshot(projects, [study("5.1", "PAT1", ae="SHARED")]), SETTINGS)
    assert result.transfers == ()
    assert outcomes(result)["5.1"].reason == AMBIGUOUS_AE_TITLE
    assert [a.kind for a in result.anomalies] == ["ambiguous_ae_title"]


def test_exhausted_space_serves_what_it_can_and_reports_the_rest():  # legacy defect 10
    rows = [row(f"S{i}", f"OLD{i}", "SMALL", str(i)) for i in range(8)]
    projects = [project("SMALL", ae="SMALL_AE", pattern=r"S[0-9]")]
    studies = [study(f"6.{i}", f"NEW{i}", ae="SMALL_AE", date=f"2026112{i}") for i in range(4)]
    result = plan(snapshot(projects, studies, rows), SETTINGS)
    assert sorted(n.value for n in result.new_ids) == ["S8", "S9"]
    reasons = [outcomes(result)[f"6.{i}"].reason for i in range(4)]
    assert reasons == ["", "", ID_SPACE_EXHAUSTED, ID_SPACE_EXHAUSTED]  # earliest served first
    assert "id_space_exhausted" in {a.kind for a in result.anomalies}


def test_invalid_pattern_skips_new_patients_but_serves_known_ones():
    projects = [project(pattern="K\\d+")]
    studies = [study("7.1", "KNOWN"), study("7.2", "NEW")]
    result = plan(snapshot(projects, studies, [row("K001", "KNOWN")]), SETTINGS)
    assert [t.study_uid for t in result.transfers] == ["7.1"]
    assert outcomes(result)["7.2"].reason == INVALID_PATTERN
    assert "invalid_pattern" in {a.kind for a in result.anomalies}


def test_autoid_conflicts_are_reported_and_never_extended():
    rows = [
        row("K001", "TWO_IDS", record_id="1"),
        row("K002", "TWO_IDS", record_id="2"),
        row("K003", "SHARE_A", record_id="3"),
        row("K003", "SHARE_B", record_id="4"),
    ]
    studies = [study("8.1", "TWO_IDS"), study("8.2", "SHARE_A"), study("8.3", "SHARE_B")]
    result = plan(snapshot([project()], studies, rows), SETTINGS)
    assert result.transfers == () and result.new_ids == ()
    assert {s.reason for s in result.studies} == {AUTOID_CONFLICT}
    kinds = {a.kind for a in result.anomalies}
    assert {"autoid_conflict_hash", "autoid_conflict_value"} <= kinds


def test_a_study_with_a_transfer_request_gets_nothing_and_new_ones_use_the_next_instance():
    done = study("9.1", "PAT1", transfers=(ExistingTransfer(1, "KNEE", "K123"),))
    blank = study("9.2", "PAT1", transfers=(ExistingTransfer(2, "", ""),))
    result = plan(snapshot([project()], [done, blank], [row("K123", "PAT1")]), SETTINGS)
    assert outcomes(result)["9.1"].action == ALREADY_TRANSFERRED
    assert [(t.study_uid, t.instance) for t in result.transfers] == [("9.2", 3)]
    assert result.anomalies == ()


def test_hmac_writes_keyed_hashes_and_legacy_patients_keep_their_id():  # legacy defect 7
    hasher = PatientHasher("hmac-sha256", Secret("env:TEST", "k" * 32))
    hmac_settings = PlanSettings(hasher=hasher, requested_at="x", rng=random.Random(2))
    studies = [study("10.1", "LEGACY"), study("10.2", "FRESH")]
    result = plan(snapshot([project()], studies, [row("K777", "LEGACY")]), hmac_settings)
    assert outcomes(result)["10.1"].pseudonym == "K777"
    (new,) = result.new_ids
    assert new.hash == hasher.primary("FRESH") != sha512_hex("FRESH")


def test_two_auto_id_projects_with_one_name_are_reported_and_not_served():
    projects = [project("KNEE", ae="AE1"), project("KNEE", ae="AE2"), project("HIP", ae="AE3")]
    studies = [study("14.1", "P", ae="AE1"), study("14.2", "P", ae="AE3")]
    result = plan(snapshot(projects, studies), SETTINGS)
    assert [t.project_name for t in result.transfers] == ["HIP"]
    assert [(a.kind, a.project) for a in result.anomalies] == [("project_misconfigured", "KNEE")]


def test_names_already_sent_under_a_transfer_are_never_given_to_another_patient():
    sent = study("15.1", "A", transfers=(ExistingTransfer(1, "KNEE", "K1"),))  # no AutoID row
    studies = [sent, study("15.2", "B"), study("15.3", "C", date="20261121")]
    result = plan(snapshot([project(pattern="K[12]")], studies), SETTINGS)
    assert [n.value for n in result.new_ids] == ["K2"]
    assert outcomes(result)["15.3"].reason == ID_SPACE_EXHAUSTED


def test_an_incomplete_autoid_row_still_reserves_its_value():
    rows = [AutoIdRow("1", "KNEE", "", "K1")]
    studies = [study("16.1", "A"), study("16.2", "B", date="20261121")]
    result = plan(snapshot([project(pattern="K[12]")], studies, rows), SETTINGS)
    assert [n.value for n in result.new_ids] == ["K2"]
    assert outcomes(result)["16.2"].reason == ID_SPACE_EXHAUSTED
    assert "autoid_incomplete_rows" in {a.kind for a in result.anomalies}


def test_studies_of_a_misconfigured_project_are_skipped_not_lost():
    projects = [project("", ae="NONAME")]
    studies = [study("17.1", "A", ae="NONAME"), study("17.2", "B", ae="NONAME", transfers=(
        ExistingTransfer(1, "X", "x"),))]  # fmt: skip
    result = plan(snapshot(projects, studies), SETTINGS)
    assert [(s.study_uid, s.action, s.reason) for s in result.studies] == [
        ("17.1", SKIPPED, "project misconfigured"),
        ("17.2", ALREADY_TRANSFERRED, ""),
    ]


def test_a_transferred_study_on_a_shared_ae_title_is_transferred_not_skipped():
    projects = [project("A", ae="SHARED"), project("B", ae="SHARED")]
    done = study("18.1", "P", ae="SHARED", transfers=(ExistingTransfer(1, "A", "A1"),))
    result = plan(snapshot(projects, [done]), SETTINGS)
    assert [(s.action, s.reason) for s in result.studies] == [(ALREADY_TRANSFERRED, "")]


def test_an_unknown_project_filter_name_is_reported():
    result = plan(
        snapshot([project()], [study("19.1", "P")]),
        PlanSettings(PatientHasher(), "x", projects=frozenset({"KNEE", "KNEES"})),
    )
    assert [(a.kind, a.project) for a in result.anomalies] == [("unknown_project_filter", "KNEES")]
    assert len(result.transfers) == 1


def test_a_full_space_without_new_patients_says_it_is_full():
    rows = [row(f"S{i}", f"OLD{i}", "SMALL", str(i)) for i in range(10)]
    result = plan(snapshot([project("SMALL", ae="S_AE", pattern="S[0-9]")], [], rows), SETTINGS)
    assert [a.kind for a in result.anomalies] == ["id_space_exhausted"]


def test_studies_of_other_ae_titles_and_disabled_projects_are_ignored():
    projects = [project(), project("OFF", ae="OFF_AE", use=False)]
    studies = [study("11.1", "P", ae="OFF_AE"), study("11.2", "P", ae="UNKNOWN")]
    result = plan(snapshot(projects, studies), SETTINGS)
    assert result.studies == () and result.studies_in_window == 2


def test_project_filter_plans_only_the_named_projects():
    projects = [project(), project("HIP", ae="HIP_AE", pattern=r"H\d{3}")]
    studies = [study("12.1", "P"), study("12.2", "P", ae="HIP_AE")]
    result = plan(
        snapshot(projects, studies), PlanSettings(PatientHasher(), "x", projects=frozenset({"HIP"}))
    )
    assert [t.project_name for t in result.transfers] == ["HIP"]


def test_plan_describes_itself_in_one_sentence():
    result = plan(snapshot([project()], [study("13.1", "A"), study("13.2", "")]), SETTINGS)
    assert result.describe() == (
        "1 transfer request(s), 1 new ID(s), 0 known ID(s) reused; "
        "1 study(ies) skipped (1 empty patient ID)"
    )


# -- invariants over arbitrary inputs ----------------------------------------------------------

patients = st.sampled_from(["A", "B", "C", "D", "E", "F", " A", "B ", ""])
ae_titles = st.sampled_from(["AE1", "AE2", "AE3", "NONE"])


@st.composite
def scenarios(draw):
    projects = [
        project("P1", ae="AE1", pattern=r"X[0-9]"),
        project("P2", ae="AE2", pattern=r"(Y|Z)[0-2]"),
        project("P3", ae=draw(st.sampled_from(["AE3", "AE2"])), pattern=r"Q\d"),
    ]
    known = draw(
        st.lists(st.tuples(st.sampled_from(["P1", "P2"]), patients), max_size=4, unique=True)
    )
    rows = []
    for i, (name, patient) in enumerate(known):
        if patient.strip():
            value = {"P1": f"X{i}", "P2": f"Y{i % 3}"}[name]
            if any(r.value == value and r.project_name == name for r in rows):
                continue
            rows.append(row(value, patient.strip(), name, str(i)))
    if draw(st.booleans()):
        rows.append(row("X9", "", "P1", "99", hash_=" "))  # incomplete: X9 is taken all the same
    sent = st.sampled_from([(), (ExistingTransfer(1, "P1", "X8"),), (ExistingTransfer(1, "", ""),)])
    studies = [
        study(f"1.{i}", draw(patients), ae=draw(ae_titles), date=f"202611{10 + i}",
              transfers=draw(sent))
        for i in range(draw(st.integers(0, 12)))
    ]  # fmt: skip
    return snapshot(projects, studies, rows)


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(0, 2**32))
def test_one_patient_one_id_and_one_id_one_patient(snap, seed):
    result = plan(snap, PlanSettings(PatientHasher(), "x", rng=random.Random(seed)))
    by_uid = {s.uid: s for s in snap.studies}
    taken = {(r.project_name, r.value) for r in snap.autoid_rows}
    taken |= {(t.project_name, t.name) for s in snap.studies for t in s.transfer_requests}
    # every stored patient keeps the stored ID; nobody else gets it
    id_of = {(r.project_name, r.hash): r.value for r in snap.autoid_rows if r.hash.strip()}
    patient_of = {(p, v): h for (p, h), v in id_of.items()}
    for transfer in result.transfers:
        patient = by_uid[transfer.study_uid].patient_id.strip()
        assert patient, "an empty patient ID was given an ID"
        key = (transfer.project_name, sha512_hex(patient))
        assert id_of.setdefault(key, transfer.pseudonym) == transfer.pseudonym
        owner = (transfer.project_name, transfer.pseudonym)
        assert patient_of.setdefault(owner, key[1]) == key[1]
    # a name already sent is only ever recorded for the patient it was sent for (adopted)
    adopted = {(s.project_name, s.pseudonym) for s in result.studies if s.id_source == "adopted"}
    for new in result.new_ids:
        assert (new.project_name, new.value) not in taken - adopted
    patterns = {p.name: p.pattern for p in snap.projects}
    for new in result.new_ids:
        assert (new.project_name, new.value) in adopted or re.fullmatch(
            patterns[new.project_name], new.value
        )
    assert len({(n.project_name, n.value) for n in result.new_ids}) == len(result.new_ids)
    # every study addressed to an auto-ID AE title has exactly one outcome
    addressed = [s for s in snap.studies if s.ae_title in {p.ae_title for p in snap.projects}]
    assert sorted(o.study_uid for o in result.studies) == sorted(s.uid for s in addressed)
    assert all(o.action in {TRANSFER, SKIPPED, ALREADY_TRANSFERRED} for o in result.studies)
