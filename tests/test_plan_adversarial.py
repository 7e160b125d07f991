"""The plan against odd but real data: spellings, renamed projects, hand-sent requests, key changes.

Each numbered case of issue 15 has a unit test; the property test at the end generates snapshots
that mix all of them for a few true patients and checks the guarantees that matter, whatever the
data: one patient, one ID per project; no stored or sent name given to another patient; every
study served once or skipped with a reason; a changed hash scheme refuses to plan.
"""

import random
import re
import unicodedata
from collections import defaultdict
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoid_lib.errors import HashSchemeChanged
from autoid_lib.hash_scheme import HASH_SCHEME_RECORD
from autoid_lib.hashing import PatientHasher, sha512_hex
from autoid_lib.plan import (
    ALREADY_TRANSFERRED,
    AMBIGUOUS_AE_TITLE,
    AUTOID_CONFLICT,
    AUTOID_NAME_VARIANT,
    EMPTY_PATIENT_ID,
    PROJECT_MISCONFIGURED,
    SKIPPED,
    TRANSFER,
    PlanSettings,
    plan,
)
from autoid_lib.secret import Secret
from autoid_lib.snapshot import AutoIdRow, ExistingTransfer, IncomingStudy, ProjectRecord, Snapshot

NOW = datetime(2026, 11, 28, 8, 0)
KEY_ONE = Secret("env:K1", "key-one")
KEY_TWO = Secret("env:K2", "key-two")


def settings_for(hasher=None, seed=1):
    return PlanSettings(hasher or PatientHasher(), "2026-11-28 08:00", rng=random.Random(seed))


def project(name="PROJ_P", ae="AE_P", pattern=r"P_\d{3}", record_id=None, use=True):
    return ProjectRecord(record_id or name or "0", name, use, ae, pattern)


def study(uid, patient, ae="AE_P", transfers=(), date="20261120"):
    return IncomingStudy(uid, ae, patient, date, tuple(transfers))


def row(value, hash_, project_name="PROJ_P", record_id="1"):
    return AutoIdRow(record_id, project_name, hash_, value)


def snapshot(projects, studies, rows=()):
    return Snapshot(tuple(projects), tuple(studies), tuple(rows), NOW, NOW)


def served(result):
    return {s.study_uid: s.pseudonym for s in result.studies if s.action == TRANSFER}


def reasons(result):
    return {s.study_uid: s.reason for s in result.studies if s.action == SKIPPED}


def kinds(result):
    return {a.kind for a in result.anomalies}


# -- case 1: every spelling of one patient finds the legacy row --------------------------------


@pytest.mark.parametrize(
    ("stored", "spellings"),
    [("ABC\x00", ["ABC\x00", "ABC ", "ABC"]), ("ABCD ", ["ABCD ", "ABCD"])],
)
def test_all_spellings_of_one_patient_get_the_legacy_rows_id(stored, spellings):
    rows = [row("P_100", sha512_hex(stored))]
    studies = [study(f"1.{i}", raw) for i, raw in enumerate(spellings)]
    result = plan(snapshot([project()], studies, rows), settings_for())
    assert set(served(result).values()) == {"P_100"}
    assert len(served(result)) == len(spellings) and not result.new_ids


def test_a_later_run_with_only_the_plain_spelling_still_finds_the_padded_row():
    rows = [row("P_100", sha512_hex("ABC\x00"))]
    result = plan(snapshot([project()], [study("1.1", "ABC")], rows), settings_for())
    assert served(result) == {"1.1": "P_100"}


# -- case 2: the hash scheme is recorded and a change refuses to plan ---------------------------


def test_the_first_plan_records_the_hash_schemes_fingerprint_never_the_key():
    hasher = PatientHasher("hmac-sha256", KEY_ONE)
    result = plan(snapshot([project()], []), settings_for(hasher))
    (record,) = result.kit_rows
    assert record.project_name == HASH_SCHEME_RECORD and record.value == hasher.fingerprint
    assert "key-one" not in repr(result.kit_rows) and not result.is_empty


@pytest.mark.parametrize(
    ("written", "configured"),
    [
        (PatientHasher("hmac-sha256", KEY_ONE), PatientHasher("hmac-sha256", KEY_TWO)),
        (PatientHasher("hmac-sha256", KEY_ONE), PatientHasher()),
    ],
)
def test_a_changed_hash_key_or_scheme_refuses_to_plan(written, configured):
    rows = [
        row("P_202", written.primary("K3")),
        row(written.fingerprint, written.fingerprint, HASH_SCHEME_RECORD, "2"),
    ]
    with pytest.raises(HashSchemeChanged, match="previous_hash") as raised:
        plan(snapshot([project()], [study("1.1", "K3")], rows), settings_for(configured))
    assert "key-one" not in str(raised.value) and "key-two" not in str(raised.value)


def test_a_rotation_naming_the_previous_key_keeps_patients_and_records_the_new_key():
    old = PatientHasher("hmac-sha256", KEY_ONE)
    new = PatientHasher("hmac-sha256", KEY_TWO, previous=old)
    rows = [
        row("P_202", old.primary("K3")),
        row(old.fingerprint, old.fingerprint, HASH_SCHEME_RECORD),
    ]
    result = plan(snapshot([project()], [study("1.1", "K3")], rows), settings_for(new))
    assert served(result) == {"1.1": "P_202"}
    assert [r.value for r in result.kit_rows] == [new.fingerprint]


def test_moving_from_the_legacy_sha512_to_hmac_needs_no_previous_settings():
    rows = [row("P_202", sha512_hex("K3")), row("sha512", "sha512", HASH_SCHEME_RECORD)]
    hasher = PatientHasher("hmac-sha256", KEY_ONE)
    result = plan(snapshot([project()], [study("1.1", "K3")], rows), settings_for(hasher))
    assert served(result) == {"1.1": "P_202"}


def test_the_newest_scheme_record_counts():
    hasher = PatientHasher("hmac-sha256", KEY_ONE)
    rows = [
        row("sha512", "sha512", HASH_SCHEME_RECORD, "3"),
        row(hasher.fingerprint, hasher.fingerprint, HASH_SCHEME_RECORD, "10"),
    ]
    with pytest.raises(HashSchemeChanged):
        plan(snapshot([project()], [], rows), settings_for(PatientHasher()))
    assert plan(snapshot([project()], [], rows), settings_for(hasher)).kit_rows == ()


# -- case 4: requests already sent count as the patient's name ---------------------------------


def test_a_study_sent_by_hand_gives_the_patients_next_study_the_same_name():
    sent = study("1.1", "PAT", transfers=[ExistingTransfer(1, "PROJ_P", "P_555")])
    result = plan(snapshot([project()], [sent, study("1.2", "PAT")]), settings_for())
    assert served(result) == {"1.2": "P_555"}
    (new,) = result.new_ids  # AutoID learns the name, so later runs find it
    assert new.value == "P_555" and new.hash == sha512_hex("PAT")
    assert "transfer_mismatch" not in kinds(result)


def test_a_name_sent_for_another_patient_is_never_adopted():
    first = study("1.1", "ONE", transfers=[ExistingTransfer(1, "PROJ_P", "P_555")])
    second = study("1.2", "TWO", transfers=[ExistingTransfer(1, "PROJ_P", "P_555")])
    result = plan(snapshot([project()], [first, second, study("1.3", "ONE")]), settings_for())
    assert reasons(result) == {"1.3": AUTOID_CONFLICT}
    assert "transfer_name_conflict" in kinds(result)


def test_a_sent_name_that_autoid_gives_another_patient_is_a_conflict():
    sent = study("1.1", "ONE", transfers=[ExistingTransfer(1, "PROJ_P", "P_555")])
    rows = [row("P_555", sha512_hex("TWO"))]
    result = plan(
        snapshot([project()], [sent, study("1.2", "ONE"), study("1.3", "TWO")], rows),
        settings_for(),
    )
    assert reasons(result) == {"1.2": AUTOID_CONFLICT, "1.3": AUTOID_CONFLICT}


@pytest.mark.parametrize(
    "request_", [ExistingTransfer(1, "OTHER", "O_1"), ExistingTransfer(1, "PROJ_P", "")]
)
def test_a_request_to_another_project_or_without_a_name_is_reported(request_):
    result = plan(
        snapshot([project()], [study("1.1", "PAT", transfers=[request_])]), settings_for()
    )
    assert result.studies[0].action == ALREADY_TRANSFERRED
    assert "transfer_mismatch" in kinds(result)


# -- case 5: an AE title claimed twice is ambiguous, whatever else is wrong ---------------------


def test_a_duplicate_named_project_sharing_an_ae_title_makes_it_ambiguous():
    projects = [
        project("PROJ_A", "AE_1", record_id="1"),
        project("PROJ_A", "AE_2", record_id="2"),
        project("PROJ_B", "AE_2", record_id="3"),
    ]
    result = plan(snapshot(projects, [study("1.1", "PAT", ae="AE_2")]), settings_for())
    assert reasons(result) == {"1.1": AMBIGUOUS_AE_TITLE}
    assert {"ambiguous_ae_title", "project_misconfigured"} <= kinds(result)


def test_a_nameless_auto_id_record_on_a_projects_ae_title_makes_it_ambiguous():
    projects = [project("", "AE_C", record_id="7"), project("PROJ_C", "AE_C")]
    result = plan(snapshot(projects, [study("1.1", "PAT", ae="AE_C")]), settings_for())
    assert reasons(result) == {"1.1": AMBIGUOUS_AE_TITLE}
    assert result.studies[0].project_name == "record 7 / PROJ_C"


def test_projects_named_alike_but_for_case_are_not_served():
    projects = [project("PROJ_P", "AE_1"), project("Proj_P", "AE_2", record_id="2")]
    studies = [study("1.1", "PAT", ae="AE_1"), study("1.2", "PAT", ae="AE_2")]
    result = plan(snapshot(projects, studies), settings_for())
    assert reasons(result) == {"1.1": PROJECT_MISCONFIGURED, "1.2": PROJECT_MISCONFIGURED}


# -- case 6: rows under a case variant of the project's name -----------------------------------


def test_rows_of_a_renamed_project_are_neither_handed_out_nor_guessed():
    rows = [
        row("P_0", sha512_hex("OLDPAT"), "Proj_P", "1"),
        row("P_1", sha512_hex("OTHEROLD"), "Proj_P", "2"),
    ]
    studies = [study("1.1", "OLDPAT"), study("1.2", "NEWPAT")]
    result = plan(snapshot([project(pattern="P_[0-2]")], studies, rows), settings_for())
    assert reasons(result) == {"1.1": AUTOID_NAME_VARIANT}
    assert served(result) == {"1.2": "P_2"}  # P_0 and P_1 stay with their patients
    assert "autoid_name_variant" in kinds(result)


# -- case 7: NULs and spaces only are empty -----------------------------------------------------


def test_ids_of_nuls_and_spaces_are_skipped_as_empty():
    studies = [study("1.1", "\x00 \x00 \x00"), study("1.2", "\x00\x00 \x00 \x00\x00")]
    result = plan(snapshot([project()], studies), settings_for())
    assert reasons(result) == {"1.1": EMPTY_PATIENT_ID, "1.2": EMPTY_PATIENT_ID}


# -- case 9 (low): upper-case hex ---------------------------------------------------------------


def test_a_hash_stored_in_upper_case_hex_is_found():
    rows = [row("P_100", sha512_hex("PAT").upper())]
    result = plan(snapshot([project()], [study("1.1", "PAT")], rows), settings_for())
    assert served(result) == {"1.1": "P_100"}


# -- the whole plan over generated adversarial snapshots ----------------------------------------

TRUE_PATIENTS = ("A", "AB", "ABC", "ABCD", "M\u00dcLLER")  # the last one NFC: Ü composed
VALUES = ("X1", "X2", "X3", "Y1", "Y2", "Z9")


def study_spellings(patient):
    nfd = unicodedata.normalize("NFD", patient)  # the same ID as sent by another modality
    return [patient, patient + " ", patient + "\x00", " " + patient, patient + " \x00", nfd + " "]


def stored_spellings(patient):  # what the legacy job hashed: the raw, DICOM-padded value
    nfd = unicodedata.normalize("NFD", patient)
    return [patient, patient + " ", patient + "\x00", nfd, nfd + "\x00"]


def identity(raw):
    """Who a study's patient ID really is, decided here and not by the code under test: the
    ID without DICOM padding, canonical Unicode forms being the same text."""
    return unicodedata.normalize("NFC", raw.strip(" \x00"))


def nfd(patient):  # an earlier kit version hashed the form it saw
    return unicodedata.normalize("NFD", patient)


HASHERS = {
    "sha512": PatientHasher(),
    "k1": PatientHasher("hmac-sha256", KEY_ONE),
    "k2": PatientHasher("hmac-sha256", KEY_TWO),
    "k2<-k1": PatientHasher("hmac-sha256", KEY_TWO, previous=PatientHasher("hmac-sha256", KEY_ONE)),
}


@st.composite
def adversarial(draw):
    """A snapshot, the hasher of the run, and who each row and request really belongs to."""
    projects = [project("P1", "AE1", r"X[1-5]", "1"), project("P2", "AE2", r"Y[1-3]", "2")]
    for extra in draw(st.sets(st.sampled_from(["dup", "dup-case", "nameless", "shared", "off"]))):
        projects.append(
            {
                "dup": project("P2", "AE3", r"Y\d", "3"),
                "dup-case": project("p2", "AE3", r"Y\d", "4"),
                "nameless": project("", draw(st.sampled_from(["AE1", "AE2"])), r"X\d", "5"),
                "shared": project("P3", "AE1", r"Z\d", "6"),
                "off": project("P4", "AE1", r"Z\d", "7", use=False),
            }[extra]
        )
    hasher_name = draw(st.sampled_from(sorted(HASHERS)))
    owner: dict[str, str | None] = {}  # record id -> true patient (None: unknown)
    rows, k1_rows = [], False
    for i in range(draw(st.integers(0, 6))):
        record_id = str(100 + i)
        patient = draw(st.sampled_from(TRUE_PATIENTS))
        scheme = draw(st.sampled_from(["sha512", "sha512", "k1"]))
        k1_rows |= scheme == "k1"
        hash_ = (
            sha512_hex(draw(st.sampled_from(stored_spellings(patient))))
            if scheme == "sha512"
            else HASHERS["k1"].primary(draw(st.sampled_from([patient, nfd(patient)])))
        )
        kind = draw(st.sampled_from(["complete"] * 4 + ["no-hash", "no-value", "upper"]))
        value = draw(st.sampled_from(VALUES))
        name = draw(st.sampled_from(["P1", "P1", "P2", "p1", " P1 "]))
        if kind == "no-hash":
            hash_ = ""
        elif kind == "no-value":
            value = ""
        elif kind == "upper":
            hash_ = hash_.upper()
        rows.append(AutoIdRow(record_id, name, hash_, value))
        owner[record_id] = patient if hash_ else None
    marker = HASHERS["k1"].fingerprint if k1_rows else draw(st.sampled_from([None, "sha512"]))
    if marker:
        rows.append(AutoIdRow("999", HASH_SCHEME_RECORD, marker, marker))
    studies = []
    for i in range(draw(st.integers(0, 10))):
        patient = draw(st.sampled_from((*TRUE_PATIENTS, "")))
        raw = draw(st.sampled_from(study_spellings(patient))) if patient else ""
        request = draw(
            st.sampled_from(
                [
                    None,
                    None,
                    None,
                    ("P1", "X4"),
                    ("P1", "X1"),
                    ("P2", "Y3"),
                    ("P1", ""),
                    ("P2", "X4"),
                ]
            )
        )
        transfers = (ExistingTransfer(1, *request),) if request else ()
        ae = draw(st.sampled_from(["AE1", "AE2", "AE3", "AE9"]))
        studies.append(IncomingStudy(f"1.{i}", ae, raw, f"202611{10 + i:02d}", transfers))
    return snapshot(projects, studies, rows), hasher_name, owner


def existing_names(snap, owner):
    """Per (project key, name): the true patients holding it (None: somebody unknown)."""
    held = defaultdict(set)
    for r in snap.autoid_rows:
        if r.value and r.project_name != HASH_SCHEME_RECORD:
            held[(r.project_name.strip().casefold(), r.value)].add(owner[r.record_id])
    for s in snap.studies:
        for t in s.transfer_requests:
            if t.name:
                held[(t.project_name.casefold(), t.name)].add(identity(s.patient_id) or None)
    return held


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(adversarial(), st.integers(0, 2**32))
def test_no_patient_gets_a_second_id_and_no_name_goes_to_another_patient(case, seed):
    snap, hasher_name, owner = case
    hasher = HASHERS[hasher_name]
    marker = next((r.value for r in snap.autoid_rows if r.project_name == HASH_SCHEME_RECORD), None)
    if marker is not None and marker not in hasher.accepted_fingerprints:
        with pytest.raises(HashSchemeChanged):
            plan(snap, settings_for(hasher, seed))
        return
    result = plan(snap, settings_for(hasher, seed))
    by_uid = {s.uid: s for s in snap.studies}
    held = existing_names(snap, owner)
    names_of = defaultdict(set)  # (project key, patient) -> names held before the run
    for (project_key, name), patients in held.items():
        for patient in patients:
            names_of[(project_key, patient)].add(name)

    # every study addressed to an auto-ID AE title has one outcome; only unambiguous ones served
    claims = defaultdict(list)
    for p in snap.projects:
        if p.use_autoid and p.ae_title.strip():
            claims[p.ae_title.strip()].append(p)
    addressed = sorted(s.uid for s in snap.studies if s.ae_title in claims)
    assert sorted(o.study_uid for o in result.studies) == addressed
    for outcome in result.studies:
        assert outcome.action in {TRANSFER, SKIPPED, ALREADY_TRANSFERRED}
        assert (outcome.action == SKIPPED) == bool(outcome.reason)
        assert (outcome.action == ALREADY_TRANSFERRED) == bool(
            by_uid[outcome.study_uid].transfer_requests
        )

    given_to = {}  # (project key, name) -> the patient the run gave it to
    for transfer in result.transfers:
        s = by_uid[transfer.study_uid]
        (claimant,) = claims[s.ae_title]  # never a shared or misconfigured title
        assert claimant.name == transfer.project_name
        patient = identity(s.patient_id)
        assert patient, "an empty patient ID was served"
        key = (transfer.project_name.casefold(), transfer.pseudonym)
        # no name held by somebody else, no name given to two patients in this run
        assert held.get(key, {patient}) == {patient}
        assert given_to.setdefault(key, patient) == patient
        # a patient who already has a name in this project keeps it
        before = names_of.get((transfer.project_name.casefold(), patient), set())
        assert not before or transfer.pseudonym in before
    per_patient = defaultdict(set)
    for transfer in result.transfers:
        patient = identity(by_uid[transfer.study_uid].patient_id)
        per_patient[(transfer.project_name, patient)].add(transfer.pseudonym)
    assert all(len(names) == 1 for names in per_patient.values())

    patterns = {p.name: p.pattern for p in snap.projects}
    for new in result.new_ids:
        assert (new.project_name.casefold(), new.value) not in held or held[
            (new.project_name.casefold(), new.value)
        ] == {given_to.get((new.project_name.casefold(), new.value))}
        if (new.project_name.casefold(), new.value) not in held:
            assert re.fullmatch(patterns[new.project_name], new.value)
    assert len({(n.project_name, n.value) for n in result.new_ids}) == len(result.new_ids)
    assert len({(n.project_name, n.hash) for n in result.new_ids}) == len(result.new_ids)


@pytest.mark.parametrize("name", [HASH_SCHEME_RECORD, "[autoid-kit:lease]"])
def test_the_kits_own_record_names_are_never_a_project_nor_a_patients_rows(name):
    rows = [row("P_100", sha512_hex("PAT"), "[autoid-kit:lease]")]  # a lease ticket, say
    projects = [project(name, "AE_K"), project()]
    studies = [study("1.1", "PAT", ae="AE_K"), study("1.2", "PAT")]
    result = plan(snapshot(projects, studies, rows), settings_for())
    assert reasons(result) == {"1.1": PROJECT_MISCONFIGURED}
    assert served(result)["1.2"] != "P_100"  # a kit record is not this patient's AutoID row
