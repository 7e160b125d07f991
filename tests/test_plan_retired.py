"""The planner and retired AutoID rows (``autoid_lib.retired``): reserved for ever, never served,
and requests sent under them are history."""

import random

from test_plan import SETTINGS, outcomes, project, row, snapshot, study

from autoid_lib.hashing import PatientHasher, sha512_hex
from autoid_lib.plan import ALREADY_TRANSFERRED, AUTOID_CONFLICT, ID_SPACE_EXHAUSTED, plan
from autoid_lib.retired import (
    retired_by_project,
    retired_from,
    retired_name,
    superseded_requests,
)
from autoid_lib.snapshot import AutoIdRow, ExistingTransfer

RETIRED = retired_name("KNEE")
KNEE = project(pattern=r"K\d")


def retired(value, patient, record_id="90"):
    return row(value, patient, project_name=RETIRED, record_id=record_id)


def test_a_retired_row_names_its_project_and_is_a_kit_record():
    r = retired("K1", "A")
    assert r.is_kit_record and retired_from(r) == "KNEE"
    assert retired_from(row("K1", "A")) is None
    assert retired_by_project([r]) == {"knee": {"K1": {sha512_hex("A")}}}


def test_a_retired_value_is_never_handed_out_again():
    studies = [study("1.1", "NEW1"), study("1.2", "NEW2", date="20261121")]
    result = plan(snapshot([project(pattern="K[12]")], studies, [retired("K1", "OLD")]), SETTINGS)
    assert [n.value for n in result.new_ids] == ["K2"]
    assert outcomes(result)["1.2"].reason == ID_SPACE_EXHAUSTED


def test_the_patient_of_a_retired_row_is_served_under_its_live_id():
    rows = [row("K1", "A", record_id="1"), retired("K2", "A")]
    sent = study("2.1", "A", transfers=(ExistingTransfer(1, "KNEE", "K2"),))
    result = plan(snapshot([KNEE], [sent, study("2.2", "A")], rows), SETTINGS)
    assert [(t.study_uid, t.pseudonym) for t in result.transfers] == [("2.2", "K1")]
    assert outcomes(result)["2.1"].action == ALREADY_TRANSFERRED
    # until autoid repair --resend requests it again under K1, the run says so
    assert [a.kind for a in result.anomalies] == ["transfer_mismatch"]


def test_a_resent_study_is_sound_and_its_old_request_is_history():
    old = ExistingTransfer(1, "KNEE", "K2")
    resent = ExistingTransfer(2, "KNEE", "K1")
    rows = [row("K1", "A", record_id="1"), retired("K2", "A")]
    result = plan(snapshot([KNEE], [study("3.1", "A", transfers=(old, resent))], rows), SETTINGS)
    assert result.transfers == () and result.anomalies == ()


def test_a_shared_id_left_to_one_patient_serves_both_patients():
    rows = [
        row("K5", "KEEPER", record_id="1"),
        retired("K5", "MOVED", record_id="2"),
        row("K6", "MOVED", record_id="3"),
    ]
    studies = [
        study("4.1", "KEEPER", transfers=(ExistingTransfer(1, "KNEE", "K5"),)),
        study("4.2", "MOVED", transfers=(ExistingTransfer(1, "KNEE", "K5"),)),
        study("4.3", "KEEPER"),
        study("4.4", "MOVED"),
    ]
    result = plan(snapshot([KNEE], studies, rows), SETTINGS)
    served = {t.study_uid: t.pseudonym for t in result.transfers}
    assert served == {"4.3": "K5", "4.4": "K6"}


def test_nobody_is_adopted_under_a_retired_value():
    # a request under K2 sent by hand after the repair: K2 is retired and nobody's live ID
    sent = study("5.1", "B", transfers=(ExistingTransfer(1, "KNEE", "K2"),))
    rows = [row("K1", "A", record_id="1"), retired("K2", "A")]
    result = plan(snapshot([KNEE], [sent, study("5.2", "B")], rows), SETTINGS)
    assert outcomes(result)["5.2"].reason == AUTOID_CONFLICT
    assert result.new_ids == ()


def test_only_requests_of_the_retired_patient_are_superseded():
    hasher = PatientHasher()
    retired_rows = retired_by_project([retired("K5", "MOVED")])
    studies = [
        study("6.1", "MOVED ", transfers=(ExistingTransfer(1, "knee", "K5"),)),  # padded, case
        study("6.2", "KEEPER", transfers=(ExistingTransfer(1, "KNEE", "K5"),)),
        study("6.3", "MOVED", transfers=(ExistingTransfer(1, "HIP", "K5"),)),
    ]
    assert superseded_requests(studies, retired_rows, hasher) == {("6.1", 1)}


def test_a_retired_empty_id_row_makes_its_studies_sound():
    rows = [AutoIdRow("9", RETIRED, sha512_hex(""), "K3")]
    sent = study("7.1", "", transfers=(ExistingTransfer(1, "KNEE", "K3"),))
    settings = SETTINGS.__class__(hasher=PatientHasher(), requested_at="x", rng=random.Random(3))
    result = plan(snapshot([KNEE], [sent, study("7.2", "NEW")], rows), settings)
    assert result.anomalies == ()
    assert [n.value for n in result.new_ids] != ["K3"]


def test_explore_counts_retired_values_as_used():
    from autoid_lib.explore.answers import project_values

    rows = [row("K1", "A", record_id="1"), retired("K2", "A"), row("H1", "A", project_name="HIP")]
    assert project_values(rows, "KNEE") == {"K1", "K2"}
