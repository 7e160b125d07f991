"""The local copy of AutoID and Projects (docs/run.md, "Reading what changed"): real runs
against the sandbox over HTTP, through PyCap, with tables larger than one chunk so that runs
read the record list and the changes. Each test checks what REDCap ends up holding."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scenarios import autoid, project

from autoid_lib.config import load_settings
from autoid_lib.hashing import sha512_hex
from autoid_lib.redcap.table_cache import FILE_NAME
from autoid_lib.run import run_autoid
from autoid_lib.vocab import AnomalyKind

CHUNK = 4  # records per read request: the tables below take several
PATIENTS = 12
PROJECT = project("1", "KNEE", "KNEE_AE", r"K\d{4}")
FAST_LEASE = {"expiry_s": 2.5, "clock_skew_s": 0, "wait_s": 0}


def a_site(sb) -> None:
    """One project and ``PATIENTS`` patients with an ID: PAT001 has K0001, and so on, written
    a day ago (outside any overlap, as at a real site)."""
    sb.set_now(datetime.now() - timedelta(days=1))
    sb.add_rows("projects", [PROJECT])
    sb.add_rows(
        "autoid",
        [autoid(n, "KNEE", f"PAT{n:03d}", f"K{n:04d}") for n in range(1, PATIENTS + 1)],
    )
    sb.set_now(None)


def settings_for(sb, tmp_path, cache=None, **redcap):
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    redcap = {"read_chunk_records": CHUNK, **redcap}
    settings = replace(settings, redcap=replace(settings.redcap, **redcap))
    return replace(settings, cache=replace(settings.cache, **(cache or {})))


def arrives(sb, patient: str, uid: str) -> None:
    study = {"study_instance_uid": uid, "study_aetitle_addressed": "KNEE_AE"}
    sb.add_rows("incoming", [{**study, "study_patient_id": patient, "study_date": "20261203"}])


def sent(sb) -> dict[str, list[str]]:
    """Study UID -> the names its transfer requests carry."""
    names: dict[str, list[str]] = {}
    for row in sb.rows("incoming"):
        if row.get("redcap_repeat_instrument") == "transfers" and row.get("transfer_name"):
            names.setdefault(row["study_instance_uid"], []).append(row["transfer_name"])
    return names


def ids_of(sb, patient: str) -> list[str]:
    hashed = sha512_hex(patient)
    return [r["autoid_value"] for r in sb.rows("autoid") if r["autoid_hash"] == hashed]


def assert_one_to_one(sb) -> None:
    rows = [
        (r["autoid_project_name"], r["autoid_hash"], r["autoid_value"]) for r in sb.rows("autoid")
    ]
    rows = [row for row in rows if not row[0].startswith("[")]  # lease tickets
    assert max(Counter((p, h) for p, h, _ in rows).values(), default=1) == 1
    assert max(Counter((p, v) for p, _, v in rows).values(), default=1) == 1


def test_the_second_run_reads_the_record_list_and_the_changes(sandbox, tmp_path):
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    first = run_autoid(settings)
    assert first.table_reads["autoid"].startswith("read whole (no local copy yet)")
    assert (tmp_path / "autoid-state" / FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "autoid-state").stat().st_mode & 0o777 == 0o700
    arrives(sandbox, "PAT003", "1.2.3.1")
    arrives(sandbox, "NEWPATIENT", "1.2.3.2")
    second = run_autoid(settings)
    assert second.error is None and second.problems == []
    assert second.table_reads["autoid"].startswith("changes since")
    assert sent(sandbox)["1.2.3.1"] == ["K0003"]
    assert (
        sent(sandbox)["1.2.3.2"] == ids_of(sandbox, "NEWPATIENT")
        and len(ids_of(sandbox, "NEWPATIENT")) == 1
    )
    assert_one_to_one(sandbox)
    stored = (tmp_path / "autoid-state" / FILE_NAME).read_bytes()
    assert b"PAT0" not in stored and b"NEWPATIENT" not in stored  # hashes and names only
    assert sha512_hex("PAT003").encode() in stored  # (its new rows come with the next read)
    quiet = run_autoid(settings)
    whole = run_autoid(settings, full_read=True)
    assert quiet.plan.is_empty and whole.plan.is_empty
    assert whole.table_reads["autoid"].startswith("read whole (asked for (--full-read))")
    assert quiet.api_bytes < whole.api_bytes


def test_without_the_copy_every_run_reads_whole(sandbox, tmp_path):
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path, cache={"enabled": False})
    run_autoid(settings)
    again = run_autoid(settings)
    assert again.table_reads["autoid"].startswith("read whole (no local copy ([cache] enabled")
    assert not (tmp_path / "autoid-state").exists()


def test_a_row_edited_in_redcap_is_seen_by_the_next_run(sandbox, tmp_path):
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    run_autoid(settings)
    sandbox.add_rows("autoid", [{"record_id": "3", "autoid_value": "K0999"}])
    arrives(sandbox, "PAT003", "1.2.3.1")
    result = run_autoid(settings)
    assert result.table_reads["autoid"].startswith("changes since")
    assert sent(sandbox) == {"1.2.3.1": ["K0999"]}


def test_a_row_deleted_in_redcap_is_seen_by_the_next_run(sandbox, tmp_path):
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    run_autoid(settings)
    sandbox.app.delete_records("autoid", ["3"])
    arrives(sandbox, "PAT003", "1.2.3.1")
    uncached = run_autoid(
        replace(settings, cache=replace(settings.cache, enabled=False)),
        dry_run=True,
        rng=random.Random(7),
    )
    result = run_autoid(settings, rng=random.Random(7))
    assert "1 deleted" in result.table_reads["autoid"]
    assert [n.value for n in result.plan.new_ids] == [n.value for n in uncached.plan.new_ids]
    assert sent(sandbox) == {"1.2.3.1": ids_of(sandbox, "PAT003")}
    assert_one_to_one(sandbox)


def damage(path, how: str) -> None:
    if how == "garbage":
        path.write_bytes(b"not a database at all" * 100)
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:1500])
    else:  # a row changed behind the kit's back: SQLite is fine, the checksum is not
        with sqlite3.connect(path) as db:
            db.execute("UPDATE rows SET data = replace(data, 'K0003', 'K0777') WHERE record = '3'")


@pytest.mark.parametrize("how", ["garbage", "truncated", "row changed"])
def test_a_damaged_copy_is_detected_and_rebuilt(sandbox, tmp_path, how):
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    run_autoid(settings)
    damage(tmp_path / "autoid-state" / FILE_NAME, how)
    arrives(sandbox, "PAT003", "1.2.3.1")
    result = run_autoid(settings)
    assert "damaged" in result.table_reads["autoid"]
    assert sent(sandbox) == {"1.2.3.1": ["K0003"]}
    assert run_autoid(settings).table_reads["autoid"].startswith("changes since")


def test_a_copy_of_another_redcap_project_is_not_used(sandbox, tmp_path):
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    run_autoid(settings)
    moved = replace(
        settings.redcap,
        urls={
            **settings.redcap.urls,
            "autoid": settings.redcap.urls["autoid"].replace("127.0.0.1", "localhost"),
        },
    )
    result = run_autoid(replace(settings, redcap=moved))
    assert "another REDCap project" in result.table_reads["autoid"]


@pytest.mark.parametrize("retries, outcome", [(0, "failed"), (1, "ok")])
def test_a_record_list_missing_rows_is_caught_against_the_copy(sandbox, tmp_path, retries, outcome):
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path, read_retries=retries)
    run_autoid(settings)
    arrives(sandbox, "NEWPATIENT", "1.2.3.2")
    stored = len(sandbox.rows("autoid"))
    # the run's first AutoID export is the record list (the lease and the clock's check come
    # only once the plan writes): every third record left out, silently
    sandbox.inject_fault("dropped_rows", database="autoid", action="export", nth=1, times=1)
    result = run_autoid(settings)
    assert result.status == outcome
    if outcome == "failed":
        assert result.error.step == "read AutoID table"
        assert "the record list lacked" in result.error.message
        assert len(sandbox.rows("autoid")) == stored and sent(sandbox) == {}
    else:
        assert len(ids_of(sandbox, "NEWPATIENT")) == 1


def _killed_while_saving(config: str, cache_dir: str) -> None:
    """A run whose process is killed inside the copy's save transaction."""
    import os
    import signal

    from autoid_lib.redcap import table_cache

    settings = load_settings(config)
    settings = replace(
        settings,
        redcap=replace(settings.redcap, read_chunk_records=CHUNK),
        cache=replace(settings.cache, dir=__import__("pathlib").Path(cache_dir)),
        lease={"enabled": False},
    )

    def die(row):
        os.kill(os.getpid(), signal.SIGKILL)

    table_cache._text = die  # the first row text is written inside the transaction
    run_autoid(settings)


def test_a_run_killed_while_saving_the_copy_leaves_the_next_run_exact(sandbox, tmp_path):
    a_site(sandbox)
    first = run_autoid(settings_for(sandbox, tmp_path))  # with its lease: confirms the clock
    assert first.error is None
    settings = replace(settings_for(sandbox, tmp_path), lease={"enabled": False})
    sandbox.add_rows("autoid", [{"record_id": "5", "autoid_value": "K0555"}])  # a change
    arrives(sandbox, "PAT005", "1.2.3.5")
    arrives(sandbox, "NEWPATIENT", "1.2.3.6")
    config = sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    child = multiprocessing.get_context("spawn").Process(
        target=_killed_while_saving, args=(str(config), str(settings.cache.dir))
    )
    child.start()
    child.join(120)
    assert child.exitcode == -9
    assert sent(sandbox) == {}  # killed before any write
    result = run_autoid(settings)
    assert result.table_reads["autoid"].startswith("changes since")  # the old copy, intact
    assert sent(sandbox)["1.2.3.5"] == ["K0555"]
    assert sent(sandbox)["1.2.3.6"] == ids_of(sandbox, "NEWPATIENT")
    assert_one_to_one(sandbox)


@pytest.mark.parametrize("nth", range(1, 18))
def test_a_fault_at_any_request_of_a_run_with_the_copy_is_completed_exactly(
    sandbox_factory, tmp_path, nth
):
    sb = sandbox_factory(seed="empty")
    a_site(sb)
    settings = settings_for(sb, tmp_path, timeout_s=1, read_retries=0)
    settings = replace(settings, lease=FAST_LEASE)
    run_autoid(settings)  # the copy
    for n, patient in enumerate(["PAT002", "PAT007", "NEW1", "NEW2", "NEW2"], start=1):
        arrives(sb, patient, f"1.2.3.{n}")
    sb.add_rows("autoid", [{"record_id": "7", "autoid_value": "K0777"}])
    sb.reset_counts()
    sb.inject_fault("http500", nth=nth)
    run_autoid(settings)
    sb.clear_faults()
    final = run_autoid(settings)
    if final.error is not None and final.error.type == "LeaseHeld":  # its release was lost
        import time

        time.sleep(FAST_LEASE["expiry_s"])
        final = run_autoid(settings)
    assert final.error is None and final.problems == []
    names = sent(sb)
    assert sorted(names) == [f"1.2.3.{n}" for n in range(1, 6)]
    assert all(len(found) == 1 for found in names.values())  # one request per study
    assert names["1.2.3.1"] == ["K0002"] and names["1.2.3.2"] == ["K0777"]
    assert names["1.2.3.4"] == names["1.2.3.5"] == ids_of(sb, "NEW2")
    assert len(ids_of(sb, "NEW1")) == len(ids_of(sb, "NEW2")) == 1
    assert_one_to_one(sb)
    assert run_autoid(settings).plan.is_empty


def test_check_says_what_the_copy_holds(sandbox, tmp_path):
    from autoid_lib.check import check_setup

    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    assert check_setup(settings).checks["local copy"].startswith("none yet")
    run_autoid(settings)
    line = check_setup(settings).checks["local copy"]
    # 12 patients, the hash scheme's record, the copy's mark (redcap.copy_mark) and the run's
    # lease ticket as the verifying read saw it (routinely gone at the next read)
    assert line.startswith("ok (") and "AutoID 15 records and Projects 1 record" in line
    (tmp_path / "autoid-state" / FILE_NAME).write_bytes(b"garbage" * 1000)
    assert check_setup(settings).checks["local copy"].startswith("unreadable")


def test_autoid_run_full_read_reaches_the_notebook(sandbox, tmp_path):
    """``--full-read`` goes through papermill to the run; summary.json says how it read."""
    import json

    from autoid_lib.cli.main import main

    a_site(sandbox)
    config = sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    text = config.read_text().replace(
        "timeout_s = 10", f"timeout_s = 10\nread_chunk_records = {CHUNK}"
    )
    config.write_text(text)
    for options in ([], [], ["--full-read"]):
        assert main(["run", "--config", str(config), "--quiet", *options]) == 0
    summaries = sorted((tmp_path / "reports").glob("*-live/summary.json"))
    reads = [json.loads(path.read_text())["table_reads"]["autoid"] for path in summaries]
    assert reads[0].startswith("read whole (no local copy yet)")
    assert reads[1].startswith("changes since")
    assert reads[2].startswith("read whole (asked for (--full-read))")
    assert all(json.loads(path.read_text())["api_bytes"] > 0 for path in summaries)


def test_a_redcap_restored_from_a_backup_is_caught_before_the_copy_is_trusted(sandbox, tmp_path):
    """Issue 23, case 1: REDCap restored from last night's backup. After the backup an admin
    changed PAT002's ID from K0002 to K0090 and a new patient was served; two runs read both
    into the copy. The restore puts K0002 back with its old log time and removes the new
    patient: "changes since" cannot show either. PAT002's next study must go out under K0002,
    as AutoID holds it, and the run must say REDCap went back."""
    from autoid_lib.check import check_setup

    a_site(sandbox)
    settings = replace(settings_for(sandbox, tmp_path), lease={"enabled": False})
    run_autoid(settings)
    check_setup(settings)  # without the lease, a daily check confirms REDCap's clock
    backup = sandbox.backup()
    sandbox.add_rows("autoid", [{"record_id": "2", "autoid_value": "K0090"}])
    arrives(sandbox, "PATC", "1.2.8.1")
    assert run_autoid(settings).error is None
    assert run_autoid(settings).error is None
    sandbox.restore(backup)
    check_setup(settings)
    arrives(sandbox, "PAT002", "1.2.8.2")
    result = run_autoid(settings)
    assert result.error is None
    assert sent(sandbox)["1.2.8.2"] == ["K0002"]
    assert result.table_reads["autoid"].startswith("read whole (REDCap went back in time")
    (back,) = [a for a in result.plan.anomalies if a.kind == AnomalyKind.REDCAP_WENT_BACK]
    assert "restored from a backup" in back.message
    assert_one_to_one(sandbox)


def test_the_older_mark_goes_with_the_lease_ticket_in_one_delete(sandbox, tmp_path):
    """Issue 26: a run that creates IDs writes the copy's new mark; its older mark is deleted
    in the release's one delete, with the ticket (REDCap 15.7.6 deletes a records[] array all
    or nothing: API/record/delete.php)."""
    from autoid_lib.redcap.copy_mark import is_mark_row

    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    run_autoid(settings)
    (first,) = [r["record_id"] for r in sandbox.rows("autoid") if is_mark_row(r)]
    arrives(sandbox, "NEWPATIENT", "1.2.9.1")
    sandbox.reset_counts()
    assert run_autoid(settings).error is None
    (second,) = [r["record_id"] for r in sandbox.rows("autoid") if is_mark_row(r)]
    assert second != first
    assert sandbox.request_counts()[("autoid", "record", "delete")] == 1
    assert not [
        r for r in sandbox.rows("autoid") if r["autoid_project_name"] == "[autoid-kit:lease]"
    ]
    sandbox.reset_counts()
    quiet = run_autoid(settings)  # the copy, with its new mark, is trusted: no whole read
    assert quiet.plan.is_empty and quiet.table_reads["autoid"].startswith("changes since")
    assert sum(sandbox.request_counts().values()) <= 5


def test_deleted_autoid_rows_raise_an_anomaly(sandbox, tmp_path):
    """Issue 24, item 7: AutoID rows vanishing is what a data manager most needs to hear of;
    not only a phrase in the run's details."""
    a_site(sandbox)
    settings = settings_for(sandbox, tmp_path)
    run_autoid(settings)
    sandbox.app.delete_records("autoid", ["3", "4"])
    result = run_autoid(settings)
    (gone,) = [a for a in result.plan.anomalies if a.kind == AnomalyKind.AUTOID_ROWS_DELETED]
    assert gone.message.startswith("2 AutoID rows deleted in REDCap since the last run")
    assert result.status == "attention"


# -- the copy changes nothing a run decides -----------------------------------------------------

step = st.one_of(
    st.tuples(st.just("arrive"), st.sampled_from(["PAT001", "PAT004", "PAT009", "NEWA", "NEWB"])),
    st.tuples(st.just("edit"), st.integers(1, PATIENTS)),
    st.tuples(st.just("delete"), st.integers(1, PATIENTS)),
    st.tuples(st.just("damage"), st.just(0)),
    st.tuples(st.just("run"), st.just(0)),
    st.tuples(st.just("backup"), st.just(0)),
    st.tuples(st.just("restore"), st.just(0)),  # to the last backup, if any
)
# what only a run through the copy can see, which a whole read cannot compare
COPY_ONLY = {AnomalyKind.AUTOID_ROWS_DELETED, AnomalyKind.REDCAP_WENT_BACK}


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=st.lists(step, min_size=2, max_size=8))
@example(steps=[("backup", 0), ("edit", 4), ("run", 0), ("restore", 0), ("arrive", "PAT004")])
@example(steps=[("backup", 0), ("delete", 3), ("run", 0), ("restore", 0), ("arrive", "PAT003")])
def test_with_the_copy_a_run_plans_what_a_run_without_it_plans(
    sandbox_factory, tmp_path_factory, steps
):
    """Whatever happens in REDCap between runs (studies, rows edited or deleted by hand, a
    damaged copy, REDCap restored from any earlier backup with its log), a run through the
    copy plans exactly what a run reading whole would."""
    sb = sandbox_factory(seed="empty")
    folder = tmp_path_factory.mktemp("copy")
    a_site(sb)
    cached = settings_for(sb, folder)
    whole = replace(cached, cache=replace(cached.cache, enabled=False))
    run_autoid(cached)
    gone: set[int] = set()
    backup: tuple[sqlite3.Connection, set[int]] | None = None
    for n, (action, value) in enumerate([*steps, ("run", 0)]):
        if action == "backup":
            backup = (sb.backup(), set(gone))
        elif action == "restore" and backup is not None:
            sb.restore(backup[0])
            gone = set(backup[1])
        elif action == "arrive":
            arrives(sb, str(value), f"1.2.9.{n}")
        elif action == "edit" and value not in gone:
            sb.add_rows("autoid", [{"record_id": str(value), "autoid_value": f"K9{n:03d}"}])
        elif action == "delete" and value not in gone:
            sb.app.delete_records("autoid", [str(value)])
            gone.add(value)
        elif action == "damage":
            damage(folder / "autoid-state" / FILE_NAME, "row changed")
        elif action == "run":
            expected = run_autoid(whole, dry_run=True, rng=random.Random(n)).plan
            planned = run_autoid(cached, rng=random.Random(n)).plan
            assert planned.new_ids == expected.new_ids
            assert planned.transfers == expected.transfers
            assert [a for a in planned.anomalies if a.kind not in COPY_ONLY] == list(
                expected.anomalies
            )
            assert_one_to_one(sb)


def test_check_fails_on_a_copy_folder_it_cannot_write(sandbox, tmp_path):
    from autoid_lib.check import check_setup

    a_site(sandbox)
    (tmp_path / "a-file").write_text("")
    settings = settings_for(sandbox, tmp_path, cache={"dir": tmp_path / "a-file" / "state"})
    report = check_setup(settings)
    assert not report.ok and report.checks["local copy folder"].startswith("FAILED")


def test_a_copy_that_cannot_be_written_costs_whole_reads_never_the_run(sandbox, tmp_path):
    a_site(sandbox)
    (tmp_path / "a-file").write_text("")
    settings = settings_for(sandbox, tmp_path, cache={"dir": tmp_path / "a-file" / "state"})
    arrives(sandbox, "PAT003", "1.2.3.1")
    for _ in range(2):
        result = run_autoid(settings)
        assert result.error is None and result.table_reads["autoid"].startswith("read whole")
    assert sent(sandbox) == {"1.2.3.1": ["K0003"]}
