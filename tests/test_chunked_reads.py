"""Every table read is complete or fails: a names-only export, then checked record-list chunks
(docs/run.md, "Reading in chunks"). Against the sandbox over HTTP, through PyCap."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scenarios import autoid

from autoid_lib.config import load_settings
from autoid_lib.errors import RedcapError
from autoid_lib.hashing import sha512_hex
from autoid_lib.redcap.gateway import (
    HISTORY_STUDY_FIELDS,
    HISTORY_TRANSFER_FIELDS,
    MIN_CHUNK_RECORDS,
    STUDY_FIELDS,
    TRANSFER_FIELDS,
    RedcapGateway,
)
from autoid_lib.redcap.read_check import IncompleteRead, check_chunk, check_total
from autoid_lib.run import run_autoid
from autoid_lib.sandbox.faults import dropped_rows
from autoid_lib.sandbox.protocol import MAX_INPUT_VARS, parse_form

PROJECT = {
    "record_id": "1",
    "project_name": "KNEE",
    "project_use_autoid": "1",
    "project_autoid_aetitle": "KNEE_AE",
    "project_patient_naming": r"K\d{4}",
}


def settings_for(sb, tmp_path, **redcap):
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    return replace(settings, redcap=replace(settings.redcap, **redcap)) if redcap else settings


def known_patients(sb, count: int) -> dict[str, str]:
    """``count`` patients with an ID in KNEE; patient -> ID."""
    sb.add_rows("projects", [PROJECT])
    ids = {f"PATIENT{n:05d}": f"K{n:04d}" for n in range(1, count + 1)}
    sb.add_rows("autoid", [autoid(n, "KNEE", p, v) for n, (p, v) in enumerate(ids.items(), 1)])
    return ids


def returns(sb, patient: str, uid: str = "1.2.3.1") -> None:
    study = {"study_instance_uid": uid, "study_aetitle_addressed": "KNEE_AE"}
    sb.add_rows("incoming", [{**study, "study_patient_id": patient, "study_date": "20261127"}])


def ids_of(sb, patient: str) -> list[str]:
    return [r["autoid_value"] for r in sb.rows("autoid") if r["autoid_hash"] == sha512_hex(patient)]


def sent_names(sb) -> list[str]:
    return [r["transfer_name"] for r in sb.rows("incoming") if r.get("transfer_name")]


def a_dropped_patient(sb, ids: dict[str, str]) -> str:
    """A patient whose AutoID row the ``dropped_rows`` fault leaves out of a full answer."""
    header = list(sb.rows("autoid")[0])
    real = (200, "application/json", json.dumps(sb.rows("autoid")).encode())
    kept = {r["record_id"] for r in json.loads(dropped_rows(real)[2])}
    gone = [r for r in sb.rows("autoid") if r["record_id"] not in kept]
    assert gone and header[0] == "record_id"
    by_hash = {sha512_hex(p): p for p in ids}
    return by_hash[gone[0]["autoid_hash"]]


# -- complete or fail ---------------------------------------------------------------------------


def test_rows_silently_missing_from_every_answer_fail_the_run_before_any_write(sandbox, tmp_path):
    ids = known_patients(sandbox, 6)
    patient = a_dropped_patient(sandbox, ids)
    returns(sandbox, patient)
    settings = settings_for(sandbox, tmp_path, read_retries=1)
    # HTTP 200, valid JSON, a third of the records missing: only the large answers (the rows),
    # not the names-only export, as REDCap fails on large answers
    sandbox.inject_fault("dropped_rows", database="autoid", action="export", times=None,
                         above_bytes=400)  # fmt: skip
    result = run_autoid(settings, rng=random.Random(1))
    assert result.status == "failed" and result.error.step == "read AutoID table"
    assert "incomplete answer" in result.error.message and "(read 2x)" in result.error.message
    assert patient not in result.error.message
    assert ids_of(sandbox, patient) == [ids[patient]]  # no second ID
    assert sent_names(sandbox) == []


def test_one_short_answer_is_read_again_and_the_patient_keeps_the_id(sandbox, tmp_path):
    ids = known_patients(sandbox, 6)
    patient = a_dropped_patient(sandbox, ids)
    returns(sandbox, patient)
    settings = settings_for(sandbox, tmp_path)
    sandbox.inject_fault("dropped_rows", database="autoid", action="export", above_bytes=400)
    sandbox.reset_counts()
    result = run_autoid(settings, rng=random.Random(1))
    assert result.error is None and result.problems == []
    assert ids_of(sandbox, patient) == [ids[patient]]
    assert sent_names(sandbox) == [ids[patient]]
    # REDCap's clock (the run's ticket), the whole AutoID read twice (names, chunk), then once
    # more before the transfers
    assert sandbox.request_counts()[("autoid", "record", "export")] == 1 + 2 + 2 + 2


def test_a_record_deleted_between_the_names_and_its_chunk_starts_the_read_again(sandbox, tmp_path):
    known_patients(sandbox, 5)
    gateway = RedcapGateway(settings_for(sandbox, tmp_path).redcap, sleep=lambda _: None)
    answer = sandbox.app.handle
    asked: list[int] = []

    def another_user_deletes_after_the_names(body: bytes):
        reply = answer(body)
        asked.append(1)
        if len(asked) == 1:
            sandbox.app.delete_records("autoid", ["2"])
        return reply

    sandbox.app.handle = another_user_deletes_after_the_names
    rows = gateway.autoid_rows()
    assert sorted(r.record_id for r in rows) == ["1", "3", "4", "5"]
    assert gateway.requests == 4  # names, a short chunk, names again, the chunk


def test_an_answer_holding_records_not_asked_for_is_incomplete():
    rows = [{"record_id": "1"}, {"record_id": "2"}, {"record_id": "9"}]
    with pytest.raises(IncompleteRead, match="1 record"):
        check_chunk(rows, ["1", "2"], "record_id")


# -- bounded chunks -----------------------------------------------------------------------------


def test_chunks_never_hold_more_than_read_chunk_records(sandbox, tmp_path):
    ids = known_patients(sandbox, 230)
    settings = settings_for(sandbox, tmp_path, read_chunk_records=50)
    gateway = RedcapGateway(settings.redcap)
    rows = gateway.autoid_rows()
    assert sorted(r.value for r in rows) == sorted(ids.values())
    assert gateway.requests == 1 + 5  # names, then 50+50+50+50+30


def test_an_out_of_memory_answer_halves_the_chunk_and_the_run_succeeds(sandbox, tmp_path):
    ids = known_patients(sandbox, 200)
    patient = "PATIENT00150"
    returns(sandbox, patient)
    settings = settings_for(sandbox, tmp_path, read_chunk_records=200)
    row_bytes = len(json.dumps(sandbox.rows("autoid")).encode()) // 200
    # REDCap runs out of memory above ~60 rows: 200 -> 100 -> 50 records per request
    sandbox.inject_fault("oom", database="autoid", action="export", times=None,
                         above_bytes=60 * row_bytes)  # fmt: skip
    sandbox.reset_counts()
    result = run_autoid(settings, rng=random.Random(1))
    assert result.error is None and result.problems == []
    assert ids_of(sandbox, patient) == [ids[patient]] and sent_names(sandbox) == [ids[patient]]
    assert len([r for r in sandbox.rows("autoid") if r["autoid_project_name"] == "KNEE"]) == 200
    # the first look: names, 200 and 100 (out of memory), then 50 per request (4); as the plan
    # writes: REDCap's clock (the ticket), AutoID again with the ticket: names and 5 chunks
    # (the smaller size is kept); the re-read before the transfers: names and 5 chunks
    assert sandbox.request_counts()[("autoid", "record", "export")] == (
        (1 + 2 + 4) + 1 + (1 + 5) + (1 + 5)
    )


def test_out_of_memory_at_the_smallest_chunk_fails_closed(sandbox, tmp_path):
    known_patients(sandbox, 3 * MIN_CHUNK_RECORDS)
    returns(sandbox, "PATIENT00001")
    names_bytes = len(json.dumps([{"record_id": "00"}] * 3 * MIN_CHUNK_RECORDS))
    sandbox.inject_fault("oom", database="autoid", action="export", times=None,
                         above_bytes=names_bytes + 100)  # fmt: skip
    result = run_autoid(settings_for(sandbox, tmp_path), rng=random.Random(1))
    assert result.error.step == "read AutoID table"
    assert f"out of memory even for {MIN_CHUNK_RECORDS} records" in result.error.message
    assert sent_names(sandbox) == [] and len(sandbox.rows("autoid")) == 3 * MIN_CHUNK_RECORDS
    assert not [r for r in sandbox.rows("autoid") if r["autoid_project_name"] != "KNEE"]


def test_a_chunk_past_phps_max_input_vars_still_comes_back_whole(sandbox, tmp_path):
    # PyCap sends records[0], records[1], ...; PHP keeps the first 1000 form variables
    ids = known_patients(sandbox, MAX_INPUT_VARS + 200)
    gateway = RedcapGateway(settings_for(sandbox, tmp_path).redcap)
    assert len(gateway.autoid_rows()) == len(ids)
    assert gateway.requests == 2


def test_audit_and_run_reads_of_incoming_are_chunked_too(demo_sandbox, tmp_path):
    settings = settings_for(demo_sandbox, tmp_path, read_chunk_records=40)
    gateway = RedcapGateway(settings.redcap)
    history = gateway.incoming_studies(None, None, history=True)
    uids = {r["study_instance_uid"] for r in demo_sandbox.rows("incoming")}
    assert {s.uid for s in history} == uids
    chunks = -(-len(uids) // 40)
    assert gateway.requests == 1 + chunks
    fields = [*STUDY_FIELDS, *HISTORY_STUDY_FIELDS, *TRANSFER_FIELDS, *HISTORY_TRANSFER_FIELDS]
    transfers = Counter(  # what one export of all history holds
        r["study_instance_uid"]
        for r in demo_sandbox.rows("incoming", fields=fields)
        if r.get("redcap_repeat_instrument") == "transfers"
    )
    assert Counter({s.uid: len(s.transfers) for s in history if s.transfers}) == transfers


# -- the checks themselves ----------------------------------------------------------------------

names = st.lists(st.from_regex(r"[0-9]{1,6}", fullmatch=True), min_size=1, max_size=40, unique=True)


def rows_of(records, repeats: int = 0):
    own = [{"record_id": r, "redcap_repeat_instrument": ""} for r in records]
    extra = [{"record_id": r, "redcap_repeat_instrument": "transfers"} for r in records[:repeats]]
    return own + extra


@given(names, st.integers(0, 5))
def test_a_complete_answer_passes(records, repeats):
    check_chunk(rows_of(records, repeats), records, "record_id")


@given(names, st.data())
def test_any_record_left_out_is_found(records, data):
    gone = data.draw(st.sampled_from(records))
    with pytest.raises(IncompleteRead, match="missing"):
        check_chunk(rows_of([r for r in records if r != gone], 3), records, "record_id")


@given(names, st.data())
def test_a_record_returned_twice_is_found(records, data):
    twice = data.draw(st.sampled_from(records))
    with pytest.raises(IncompleteRead, match="twice"):
        check_chunk(rows_of([*records, twice]), records, "record_id")


def test_totals_must_add_up():
    check_total(5, 5)
    with pytest.raises(IncompleteRead):
        check_total(4, 5)


# -- the sandbox's new behaviours ---------------------------------------------------------------


def test_the_dropped_rows_fault_answers_200_with_valid_json_and_fewer_records():
    rows = [{"record_id": str(n), "x": ""} for n in range(1, 8)]
    status, _, body = dropped_rows((200, "application/json", json.dumps(rows).encode()))
    kept = json.loads(body)
    assert status == 200 and 0 < len(kept) < len(rows)
    one = [{"record_id": "1"}]
    assert json.loads(dropped_rows((200, "application/json", json.dumps(one).encode()))[2]) == []


def test_the_sandbox_drops_form_variables_past_max_input_vars():
    body = "&".join(f"records[{n}]={n}" for n in range(MAX_INPUT_VARS + 5)).encode()
    assert len(parse_form(body)) == MAX_INPUT_VARS


def test_a_fault_above_a_size_leaves_small_answers_alone(sandbox, tmp_path):
    known_patients(sandbox, 10)
    sandbox.inject_fault("http500", database="autoid", action="export", above_bytes=2000)
    gateway = RedcapGateway(settings_for(sandbox, tmp_path, read_retries=0).redcap)
    with pytest.raises(RedcapError, match="export AutoID table failed"):
        gateway.autoid_rows()  # the names pass (small), the rows (large) meet the fault
    assert gateway.requests == 2


# -- a small table or window in one export (issue 26: quiet runs) --------------------------------


def test_a_small_window_in_one_export_holds_what_names_and_chunks_hold(demo_sandbox, tmp_path):
    """REDCap 15.7.6's export.php turns ``dateRangeBegin``/``End`` into the list of records
    changed in the span and exports every row of those (API/record/export.php,
    getModifiedAndNewRecordsInSpan, then Records::getData): the same studies, with every
    transfer instance, as the names-only export and its chunks."""
    from autoid_lib.run import server_time

    gateway = RedcapGateway(settings_for(demo_sandbox, tmp_path).redcap)
    begin = server_time(demo_sandbox.now()) - timedelta(days=14)
    chunked = gateway.incoming_studies(begin, None)
    demo_sandbox.reset_counts()
    in_one = gateway.incoming_studies(begin, None, in_one=True)
    assert demo_sandbox.total_requests() == 1
    assert sorted(in_one, key=lambda s: s.uid) == sorted(chunked, key=lambda s: s.uid)
    assert any(s.transfers for s in in_one) and len(in_one) > 100


def test_a_table_in_one_export_that_runs_redcap_out_of_memory_is_read_in_chunks(sandbox, tmp_path):
    ids = known_patients(sandbox, 200)
    row_bytes = len(json.dumps(sandbox.rows("autoid")).encode()) // 200
    sandbox.inject_fault("oom", database="autoid", action="export", times=None,
                         above_bytes=120 * row_bytes)  # fmt: skip
    gateway = RedcapGateway(settings_for(sandbox, tmp_path, read_chunk_records=100).redcap)
    rows = gateway.table_rows("autoid", in_one=True)
    assert sorted(r["autoid_value"] for r in rows) == sorted(ids.values())
    assert gateway.requests == 1 + 1 + 2  # the one export (out of memory), names, 100 + 100


def test_the_second_run_reads_a_small_window_in_one_export(demo_sandbox, tmp_path):
    """The window's size is kept with the local copy: the next window of about that size is
    one export; a window grown past half of read_chunk_records goes back to names and chunks."""
    settings = settings_for(demo_sandbox, tmp_path)
    run_autoid(settings)
    demo_sandbox.reset_counts()
    assert run_autoid(settings).plan.is_empty
    assert demo_sandbox.request_counts()[("incoming", "record", "export")] == 1
    small = replace(settings, redcap=replace(settings.redcap, read_chunk_records=64))
    demo_sandbox.reset_counts()
    run_autoid(small, dry_run=True)  # 215 studies: more than 32
    assert demo_sandbox.request_counts()[("incoming", "record", "export")] == 1 + 4
