"""The whole run against the sandbox over HTTP, through PyCap: fail closed, batched, idempotent."""

import random
import threading
from collections import Counter
from dataclasses import replace

import pytest
from scenarios import patient_rows, stored_rows

from autoid_lib.config import load_settings
from autoid_lib.errors import LockHeld
from autoid_lib.hashing import PatientHasher, sha512_hex
from autoid_lib.lock import run_lock
from autoid_lib.run import run_autoid
from autoid_lib.secret import Secret


def settings_for(sb, tmp_path, **overrides):
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    if overrides:
        settings = replace(settings, redcap=replace(settings.redcap, **overrides))
    return settings


def transfer_requests(sb) -> Counter:
    """Transfer requests per study UID, as REDCap holds them."""
    return Counter(
        row["study_instance_uid"]
        for row in sb.rows("incoming")
        if row.get("redcap_repeat_instrument") == "transfers" and row["transfer_project_name"]
    )


def autoid_pairs(sb) -> list[tuple[str, str, str]]:
    return [
        (r["autoid_project_name"], r["autoid_hash"], r["autoid_value"]) for r in sb.rows("autoid")
    ]


def assert_one_to_one(sb):
    """Per project: no row twice, one hash → one value and one value → one hash."""
    rows = autoid_pairs(sb)
    assert len(rows) == len(set(rows)), "an AutoID row was written twice"
    assert max(Counter((p, h) for p, h, _ in rows).values(), default=1) == 1
    assert max(Counter((p, v) for p, _, v in rows).values(), default=1) == 1


def add_project(sb, name, ae_title, pattern, record_id="900"):
    sb.add_rows(
        "projects",
        [
            {
                "record_id": record_id,
                "project_name": name,
                "project_use_autoid": "1",
                "project_autoid_aetitle": ae_title,
                "project_patient_naming": pattern,
            }
        ],
    )


def add_studies(sb, studies):
    sb.add_rows(
        "incoming",
        [
            {
                "study_instance_uid": uid,
                "study_aetitle_addressed": ae,
                "study_patient_id": patient,
                "study_date": "20261127",
            }
            for uid, ae, patient in studies
        ],
    )


def test_live_run_serves_every_study_once_and_a_second_run_changes_nothing(demo_sandbox, tmp_path):
    settings = settings_for(demo_sandbox, tmp_path)
    before = transfer_requests(demo_sandbox)
    first = run_autoid(settings, rng=random.Random(1))
    assert first.error is None and first.problems == []
    after = transfer_requests(demo_sandbox)
    created = after - before
    assert sum(created.values()) == len(first.plan.transfers) > 0
    assert max(after.values()) == max(before.values(), default=1) == 1
    # the first look with no local copy (each table: record names, one chunk: 6); the plan
    # writes, so: ticket, REDCap's clock (the ticket among the changes), AutoID again (one
    # request), the planned studies' transfer requests again; the writes and their re-reads
    # (4); the local copy's mark; release (docs/run.md, "Requests per run")
    assert first.api_requests == 16
    assert_one_to_one(demo_sandbox)

    rows_before = demo_sandbox.rows("autoid")
    demo_sandbox.reset_counts()
    second = run_autoid(settings)
    assert second.plan.is_empty
    assert demo_sandbox.rows("autoid") == rows_before  # not even a new mark: nothing taken in
    assert transfer_requests(demo_sandbox) == after
    # quiet: AutoID and Projects whole in one request each (the copy says they are small), the
    # window's studies in one (the last window's size says it is small); no lease, no write
    assert second.api_requests == demo_sandbox.total_requests() == 3
    assert demo_sandbox.request_counts()[("autoid", "record", "import")] == 0
    assert not demo_sandbox.rows(
        "autoid", filter_logic="[autoid_project_name] = '[autoid-kit:lease]'"
    )


def test_dry_run_reads_and_plans_but_writes_nothing(demo_sandbox, tmp_path):  # legacy defect 11
    settings = settings_for(demo_sandbox, tmp_path)
    incoming, autoid = demo_sandbox.rows("incoming"), demo_sandbox.rows("autoid")
    result = run_autoid(settings, dry_run=True)
    assert result.plan.transfers and result.mode == "dry"
    assert demo_sandbox.rows("incoming") == incoming and demo_sandbox.rows("autoid") == autoid
    assert result.api_requests == 6  # three tables: record names, then one chunk each


def test_500_new_studies_across_many_projects_take_at_most_14_requests(sandbox, tmp_path):
    # legacy defect 9: one round trip per ID and per transfer
    for p in range(20):
        add_project(sandbox, f"PRJ{p}", f"AE{p}", rf"P{p}_\d{{4}}", record_id=str(p + 1))
    add_studies(sandbox, [(f"1.2.{i}", f"AE{i // 2 % 20}", f"PATIENT{i // 2}") for i in range(500)])
    sandbox.reset_counts()
    result = run_autoid(load_settings(sandbox.write_kit_files(tmp_path)))
    assert result.error is None and result.problems == []
    assert len(result.plan.transfers) == 500 and len(result.plan.new_ids) == 250
    # the first look (6), the lease and the reads again (4), the writes and their re-reads, the
    # copy's mark, the release: the same whatever the number of studies and projects
    assert sandbox.total_requests() == result.api_requests <= 16
    assert len(patient_rows(sandbox)) == 250


def test_new_patient_with_two_studies_gets_one_id_in_redcap(sandbox, tmp_path):  # defect 2
    add_project(sandbox, "KNEE", "KNEE_AE", r"K\d{3}")
    add_studies(sandbox, [("1.1", "KNEE_AE", "PAT1"), ("1.2", "KNEE_AE", "PAT1 ")])
    run_autoid(load_settings(sandbox.write_kit_files(tmp_path)))
    (row,) = patient_rows(sandbox)
    assert row["autoid_hash"] == sha512_hex("PAT1") and row["autoid_method"] == "1"
    names = {r["transfer_name"] for r in sandbox.rows("incoming") if r.get("transfer_name")}
    assert names == {row["autoid_value"]}


def test_one_patient_id_in_two_unicode_forms_gets_one_id(sandbox, tmp_path):
    """``MÜLLER^1970`` composed (NFC) and decomposed (NFD) in one run: one patient, one ID
    stored under the NFC form's hash; a legacy row hashed from the NFD form is found too."""
    nfc, nfd = "M\u00dcLLER^1970", "MU\u0308LLER^1970"
    add_project(sandbox, "KNEE", "KNEE_AE", r"K\d{3}")
    add_studies(sandbox, [("1.1", "KNEE_AE", nfc), ("1.2", "KNEE_AE", nfd + " ")])
    settings = load_settings(sandbox.write_kit_files(tmp_path))
    run_autoid(settings)
    (row,) = patient_rows(sandbox)
    assert row["autoid_hash"] == sha512_hex(nfc)
    names = {r["transfer_name"] for r in sandbox.rows("incoming") if r.get("transfer_name")}
    assert names == {row["autoid_value"]}
    legacy = {"autoid_project_name": "KNEE", "autoid_value": "K777", "autoid_method": "1"}
    sandbox.add_rows(
        "autoid", [{"record_id": "77", "autoid_hash": sha512_hex("ANNE\u0301"), **legacy}]
    )
    add_studies(sandbox, [("1.3", "KNEE_AE", "ANN\u00c9"), ("1.4", "KNEE_AE", "ANNE\u0301")])
    again = run_autoid(settings)
    assert {t.pseudonym for t in again.plan.transfers} == {"K777"} and not again.plan.new_ids


@pytest.mark.parametrize("fault", ["http500", "truncated", "oom", "timeout"])
def test_a_failed_autoid_read_writes_nothing(sandbox, tmp_path, fault):  # legacy defect 3
    add_project(sandbox, "KNEE", "KNEE_AE", r"K\d{3}")
    sandbox.add_rows("autoid", [{"record_id": "1", "autoid_project_name": "KNEE",
                                 "autoid_hash": sha512_hex("KNOWN"), "autoid_value": "K001",
                                 "autoid_method": "1"}])  # fmt: skip
    add_studies(sandbox, [("1.1", "KNEE_AE", "KNOWN")])
    settings = settings_for(sandbox, tmp_path, timeout_s=0.5, read_retries=1)
    sandbox.inject_fault(fault, database="autoid", action="export", times=10, delay_s=2)
    result = run_autoid(settings)
    # the first AutoID read is the clock's check on the run's own lease ticket
    assert result.status == "failed" and result.error.step.startswith("read AutoID")
    assert "autoid" in result.error.message
    assert len(sandbox.rows("autoid")) == 1
    assert not transfer_requests(sandbox)
    assert sandbox.tokens["autoid"] not in result.error.message


@pytest.mark.parametrize("nth", range(1, 15))
def test_fault_at_any_request_fails_closed_and_the_next_run_completes(
    sandbox_factory, tmp_path, nth
):
    # the first look, no lease yet: 1-2 AutoID (names, chunk: no copy of it yet), 3 projects
    # and 4 the window (one request each: the dry run's copy and window size); the plan
    # writes: 5 ticket, 6 REDCap's clock (the ticket among the changes), 7 AutoID again (one
    # request), 8 the planned studies' transfer requests again; 9 AutoID import, 10 AutoID
    # re-read, 11 transfers import, 12 transfers re-read, 13 the local copy's mark, 14 release
    sb = sandbox_factory(seed="demo")
    settings = settings_for(sb, tmp_path, timeout_s=1, read_retries=0)
    settings = replace(settings, lease={"expiry_s": 2.5, "clock_skew_s": 0, "wait_s": 0})
    expected = run_autoid(settings, dry_run=True).plan
    assert (len(expected.new_ids), len(expected.transfers)) != (0, 0)
    before, stored = transfer_requests(sb), len(stored_rows(sb))
    sb.reset_counts()
    sb.inject_fault("http500", nth=nth)
    failed = run_autoid(settings)
    sb.clear_faults()
    released = 5 < nth < 14  # nothing after the fault but giving the lease back
    assert sb.total_requests() == nth + released
    # a lost mark costs the next run a whole read; a lost release is an anomaly: the work is done
    assert (failed.status == "failed") == (nth < 13)
    if nth < 13 and failed.error.step.startswith(("read", "lease")):
        assert transfer_requests(sb) == before and len(stored_rows(sb)) == stored
    if nth == 14:  # the ticket was not given back: an anomaly, and the next run of this
        # installation recognises it as its own (recorded, process gone) and removes it
        assert [a.kind for a in failed.run_anomalies] == ["lease_not_released"]
    final = run_autoid(settings)
    assert final.error is None and final.problems == []
    assert sum((transfer_requests(sb) - before).values()) == len(expected.transfers)
    assert max(transfer_requests(sb).values()) == 1
    tickets = [r for r in stored_rows(sb) if r["autoid_project_name"] == "[autoid-kit:lease]"]
    # the work was done: the final run writes nothing, not even its old ticket's removal
    assert len(tickets) == (nth == 14)
    assert len(stored_rows(sb)) == stored + len(expected.autoid_writes) + len(tickets)
    assert_one_to_one(sb)
    assert run_autoid(settings).plan.is_empty


def test_a_run_cut_off_between_chunks_is_completed_without_duplicates(demo_sandbox, tmp_path):
    settings = settings_for(demo_sandbox, tmp_path, chunk_size=5)
    expected = run_autoid(settings, dry_run=True).plan
    before = transfer_requests(demo_sandbox)
    demo_sandbox.inject_fault("http500", database="incoming", action="import", nth=2)
    failed = run_autoid(settings)
    assert failed.error.step == "write" and "may have been written in part" in failed.error.message
    assert sum((transfer_requests(demo_sandbox) - before).values()) == 5  # the first chunk
    demo_sandbox.clear_faults()
    final = run_autoid(settings)
    assert final.error is None and final.problems == []
    assert sum((transfer_requests(demo_sandbox) - before).values()) == len(expected.transfers)
    assert max(transfer_requests(demo_sandbox).values()) == 1
    assert_one_to_one(demo_sandbox)


def test_two_runs_started_at_once_exactly_one_works(demo_sandbox, tmp_path):
    settings = settings_for(demo_sandbox, tmp_path)
    demo_sandbox.inject_fault("timeout", database="projects", action="export", times=1, delay_s=1)
    outcomes = []

    def start():
        try:
            outcomes.append(run_autoid(settings).status)
        except LockHeld:
            outcomes.append("locked")

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["attention", "locked"]  # the demo data needs attention


def test_a_held_lock_stops_the_run_before_any_request(demo_sandbox, tmp_path):
    settings = settings_for(demo_sandbox, tmp_path)
    with run_lock(settings.run.lock_file), pytest.raises(LockHeld):
        run_autoid(settings)
    assert demo_sandbox.total_requests() == 0


def test_hmac_run_stores_keyed_hashes(sandbox, tmp_path, monkeypatch):  # legacy defect 7
    add_project(sandbox, "KNEE", "KNEE_AE", r"K\d{3}")
    add_studies(sandbox, [("1.1", "KNEE_AE", "PAT1")])
    config = sandbox.write_kit_files(tmp_path)
    monkeypatch.setenv("AUTOID_HASH_KEY", "a-long-site-secret-key-0123456789")
    text = config.read_text().replace(
        'hash = "sha512"', 'hash = "hmac-sha256"\nhash_key = "env:AUTOID_HASH_KEY"'
    )
    config.write_text(text)
    assert run_autoid(load_settings(config)).error is None
    (row,) = patient_rows(sandbox)
    key = Secret("env:AUTOID_HASH_KEY", "a-long-site-secret-key-0123456789")
    assert row["autoid_hash"] == PatientHasher("hmac-sha256", key).primary("PAT1")


def test_transfers_in_their_own_database_are_read_and_written_there(demo_sandbox, tmp_path):
    """A [redcap.urls] transfers override that differs from incoming takes the separate path."""
    config = demo_sandbox.write_kit_files(tmp_path)
    other_url = demo_sandbox.url.replace("127.0.0.1", "localhost")
    config.write_text(config.read_text() + f'\n[redcap.urls]\ntransfers = "{other_url}"\n')
    settings = load_settings(config)
    assert not settings.redcap.same_database("incoming", "transfers")
    expected = run_autoid(settings, dry_run=True).plan
    demo_sandbox.reset_counts()
    result = run_autoid(settings)
    assert result.error is None and result.problems == []
    assert len(result.plan.transfers) == len(expected.transfers) > 0
    # the first look: AutoID (names, chunk), Projects and the window (one request each: the
    # dry run's copy and window size) and its transfers; the plan writes: ticket, REDCap's
    # clock, AutoID again, the planned studies' transfers again; the writes and their re-reads
    # (4); the local copy's mark; release
    assert demo_sandbox.total_requests() == 15
    assert run_autoid(settings).plan.is_empty

    chunked = replace(settings, redcap=replace(settings.redcap, read_chunk_records=20))
    demo_sandbox.reset_counts()
    again = run_autoid(chunked, dry_run=True)  # ~215 studies: their transfers in 11 reads
    # 20 records an export: AutoID as its record list and the changes (names, chunk), Projects
    # in one, the window as names and 11 chunks, then its transfers in 11
    assert again.plan.is_empty and demo_sandbox.total_requests() == 3 + 1 + 12 + 11


@pytest.mark.parametrize("database", ["autoid", "incoming"])
def test_an_import_whose_answer_is_lost_is_completed_by_the_next_run(
    demo_sandbox, tmp_path, database
):
    """REDCap wrote the import but the client timed out: the next run must not write it again."""
    settings = settings_for(demo_sandbox, tmp_path, timeout_s=0.5)
    expected = run_autoid(settings, dry_run=True).plan
    before, stored = transfer_requests(demo_sandbox), len(stored_rows(demo_sandbox))
    nth = 2 if database == "autoid" else 1  # the first AutoID import is the lease ticket
    demo_sandbox.inject_fault("lost_answer", database=database, action="import", nth=nth, delay_s=1)
    failed = run_autoid(settings)
    assert failed.error.step == "write" and "timed out" in failed.error.message
    assert len(stored_rows(demo_sandbox)) == stored + len(expected.autoid_writes)  # written
    demo_sandbox.clear_faults()
    final = run_autoid(settings)
    assert final.error is None and final.problems == []
    assert len(stored_rows(demo_sandbox)) == stored + len(expected.autoid_writes)
    assert sum((transfer_requests(demo_sandbox) - before).values()) == len(expected.transfers)
    assert max(transfer_requests(demo_sandbox).values()) == 1
    assert_one_to_one(demo_sandbox)


def test_a_refused_import_names_the_field_never_the_values(sandbox, tmp_path):
    """REDCap's import errors quote record IDs and values; none of that may reach a report."""
    from autoid_lib.errors import RedcapError
    from autoid_lib.plan import TransferRequest
    from autoid_lib.redcap.gateway import RedcapGateway

    uid = "1.2.840.99999.1234567"
    add_studies(sandbox, [(uid, "KNEE_AE", "PAT1")])
    gateway = RedcapGateway(load_settings(sandbox.write_kit_files(tmp_path)).redcap)
    bad_date = "28.11.2026 08:00"
    with pytest.raises(RedcapError) as refused:
        gateway.create_transfers([TransferRequest(uid, 1, "KNEE", "K001", bad_date)])
    message = str(refused.value)
    assert "transfer_requested_date" in message
    assert uid not in message and bad_date not in message and "K001" not in message


def test_a_request_added_between_read_and_write_is_never_overwritten(demo_sandbox, tmp_path):
    from autoid_lib.apply import apply_plan, verify_plan
    from autoid_lib.redcap.gateway import RedcapGateway

    settings = settings_for(demo_sandbox, tmp_path)
    planned = run_autoid(settings, dry_run=True).plan
    target = planned.transfers[0]
    demo_sandbox.add_rows("incoming", [{  # someone requests it by hand meanwhile
        "study_instance_uid": target.study_uid, "redcap_repeat_instrument": "transfers",
        "redcap_repeat_instance": str(target.instance), "transfer_project_name": "MANUAL",
    }])  # fmt: skip
    gateway = RedcapGateway(settings.redcap)
    apply_plan(planned, gateway)
    held = [
        (r["redcap_repeat_instance"], r["transfer_project_name"])
        for r in demo_sandbox.rows("incoming", records=[target.study_uid])
        if r.get("redcap_repeat_instrument") == "transfers" and r["transfer_project_name"]
    ]
    assert ("MANUAL" in {p for _, p in held}) and (target.project_name in {p for _, p in held})
    problems = verify_plan(planned, gateway)
    assert len(problems) == 1 and "REDCap holds 2" in problems[0]


def test_a_refused_connection_says_nothing_was_written(sandbox, tmp_path):
    """Issue 24, item 6: a write whose connection REDCap refused said "it may have been written
    in part"; a request that never left was certainly not written."""
    from autoid_lib.errors import RedcapError
    from autoid_lib.redcap.gateway import RedcapGateway

    settings = settings_for(sandbox, tmp_path, read_retries=0)
    sandbox.stop()  # nothing listens on the port any more: every connection is refused
    with pytest.raises(RedcapError) as refused:
        RedcapGateway(settings.redcap).rename_autoid_rows({"1": "KNEE"})
    assert str(refused.value).endswith("could not connect to the REDCap server "
        f"{settings.redcap.urls['autoid'].split('/')[2]}; nothing was written")  # fmt: skip
    assert "written in part" not in str(refused.value)
