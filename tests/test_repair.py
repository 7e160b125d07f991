"""``autoid repair`` against the sandbox over HTTP: legacy damage in, a state the run serves out."""

import csv
import json
import random
import stat
import time
from collections import Counter, defaultdict

import pytest
from test_run import settings_for

from autoid_lib.cli.main import main
from autoid_lib.errors import LockHeld
from autoid_lib.hashing import sha512_hex
from autoid_lib.lock import run_lock
from autoid_lib.repair.job import repair
from autoid_lib.retired import RETIRED_PREFIX
from autoid_lib.run import run_autoid

PROJECT = "KNEE"
PATTERN = r"K0\d"  # ten IDs: small enough to fill
# raw patient IDs: must never appear in any output
A, B, C, D = "0101901A001", "0101901B002", "0101901C003", "0101901D004"


def autoid_row(record_id, patient, value, project=PROJECT):
    return {
        "record_id": str(record_id),
        "autoid_project_name": project,
        "autoid_hash": sha512_hex(patient),
        "autoid_value": value,
        "autoid_method": "1",
    }


def study_row(uid, patient, date="20260101"):
    return {
        "study_instance_uid": uid,
        "study_aetitle_addressed": "KNEE_AE",
        "study_patient_id": patient,
        "study_date": date,
    }


def transfer_row(uid, instance, name, requested):
    return {
        "study_instance_uid": uid,
        "redcap_repeat_instrument": "transfers",
        "redcap_repeat_instance": str(instance),
        "transfer_requested_date": requested,
        "transfer_project_name": PROJECT,
        "transfer_name": name,
        "transfer_date": requested,
    }


def seed_legacy_damage(sb):
    """A with two IDs, B and C sharing one, a row for the empty ID, D clean; each sent."""
    sb.add_rows(
        "projects",
        [
            {
                "record_id": "1",
                "project_name": PROJECT,
                "project_use_autoid": "1",
                "project_autoid_aetitle": "KNEE_AE",
                "project_patient_naming": PATTERN,
            }
        ],
    )
    sb.add_rows(
        "autoid",
        [
            autoid_row(1, A, "K01"),
            autoid_row(2, A, "K02"),
            autoid_row(3, B, "K03"),
            autoid_row(4, C, "K03"),
            autoid_row(5, "", "K04"),
            autoid_row(6, D, "K05"),
        ],
    )
    sb.add_rows(
        "incoming",
        [
            study_row("1.2.3.1001", A),
            study_row("1.2.3.1002", A),
            study_row("1.2.3.1003", B),
            study_row("1.2.3.1004", C),
            study_row("1.2.3.1005", ""),
            study_row("1.2.3.1006", D),
        ],
    )
    sb.add_rows(
        "incoming",
        [
            transfer_row("1.2.3.1001", 1, "K01", "2026-01-01 10:00"),
            transfer_row("1.2.3.1002", 1, "K02", "2026-02-01 10:00"),
            transfer_row("1.2.3.1003", 1, "K03", "2026-01-05 10:00"),
            transfer_row("1.2.3.1004", 1, "K03", "2026-03-01 10:00"),
            transfer_row("1.2.3.1005", 1, "K04", "2026-01-07 10:00"),
            transfer_row("1.2.3.1006", 1, "K05", "2026-01-08 10:00"),
        ],
    )


def live_ids(sb):
    """(hash, value) of every live KNEE row."""
    return [
        (r["autoid_hash"], r["autoid_value"])
        for r in sb.rows("autoid")
        if r["autoid_project_name"] == PROJECT
    ]


def retired_values(sb):
    return {
        r["autoid_value"]
        for r in sb.rows("autoid")
        if str(r["autoid_project_name"]).startswith(RETIRED_PREFIX)
    }


def requests_of(sb):
    """Per study UID, the names of its transfer requests in instance order."""
    found = defaultdict(list)
    for r in sorted(sb.rows("incoming"), key=lambda r: int(r.get("redcap_repeat_instance") or 0)):
        if r.get("redcap_repeat_instrument") == "transfers" and r["transfer_project_name"]:
            found[r["study_instance_uid"]].append(r["transfer_name"])
    return found


def assert_one_to_one(sb):
    pairs = live_ids(sb)
    assert max(Counter(h for h, _ in pairs).values()) == 1, "a patient has several live IDs"
    assert max(Counter(v for _, v in pairs).values()) == 1, "an ID has several patients"
    assert sha512_hex("") not in {h for h, _ in pairs}


def state(sb):
    """What matters of the repaired state, independent of which random new ID C got."""
    ids = dict(live_ids(sb))
    requests = requests_of(sb)
    return (
        sorted(retired_values(sb)),
        {p: ids.get(sha512_hex(p)) for p in (A, B, D)},
        ids.get(sha512_hex(C)) not in (None, "K03", "K01", "K02", "K04", "K05"),
        {uid: len(names) for uid, names in requests.items()},
        requests["1.2.3.1004"][-1] == ids.get(sha512_hex(C)),
    )


def test_repair_dry_then_apply_resend_then_run_serves_everyone(sandbox, tmp_path):
    sb = sandbox
    seed_legacy_damage(sb)
    settings = settings_for(sb, tmp_path)
    before = (sb.rows("autoid"), sb.rows("incoming"))

    # the kit on its own skips the damaged patients
    run = run_autoid(settings, dry_run=True)
    kinds = {a.kind for a in run.plan.anomalies}
    assert {"autoid_conflict_hash", "autoid_conflict_value"} <= kinds

    dry = repair(settings, rng=random.Random(1))
    assert (sb.rows("autoid"), sb.rows("incoming")) == before, "a dry repair wrote"
    assert dry.status == "attention" and not dry.ending.applied
    assert len(dry.plan.resend) == 2 and len(dry.plan.wrong_copies) == 3

    applied = repair(settings, apply=True, resend=True, rng=random.Random(1))
    assert applied.ending.error == "" and applied.ending.problems == ()
    assert_one_to_one(sb)
    ids = dict(live_ids(sb))
    assert ids[sha512_hex(A)] == "K01"  # A's earliest transfer went under K01
    assert ids[sha512_hex(B)] == "K03"  # B was sent under K03 before C
    assert ids[sha512_hex(C)] not in {"K01", "K02", "K03", "K04", "K05"}
    assert retired_values(sb) == {"K02", "K03", "K04"}
    requests = requests_of(sb)
    assert requests["1.2.3.1002"] == ["K02", "K01"]  # one new request under the right ID
    assert requests["1.2.3.1004"] == ["K03", ids[sha512_hex(C)]]
    assert requests["1.2.3.1005"] == ["K04"]  # no patient ID: no right ID, nothing resent
    assert all(len(names) == 1 for uid, names in requests.items() if uid[-1] in "136")

    # a second --apply writes nothing
    rows_after = (sb.rows("autoid"), sb.rows("incoming"))
    sb.reset_counts()
    again = repair(settings, apply=True, resend=True)
    assert again.plan.is_empty(resend=True)
    assert (sb.rows("autoid"), sb.rows("incoming")) == rows_after
    assert not [k for k in sb.request_counts() if k[2] == "import"]

    # the run now serves the returning patients' new studies under their one ID
    sb.add_rows("incoming", [study_row(f"1.2.3.20{i}", p) for i, p in enumerate((A, B, C, D))])
    served = run_autoid(settings)
    assert served.error is None and served.problems == []
    names = {t.study_uid: t.pseudonym for t in served.plan.transfers}
    assert names == {f"1.2.3.20{i}": ids[sha512_hex(p)] for i, p in enumerate((A, B, C, D))}
    assert not {a.kind for a in served.plan.anomalies} & {
        "autoid_conflict_hash",
        "autoid_conflict_value",
        "transfer_name_conflict",
        "transfer_mismatch",
    }

    # retired values are never handed out: fill the pattern's space with new patients
    sb.add_rows("incoming", [study_row(f"1.2.3.30{i}", f"NEW{i:03d}") for i in range(12)])
    filled = run_autoid(settings)
    handed = {t.pseudonym for t in filled.plan.transfers}
    assert handed and not handed & {"K02", "K03", "K04"} - {ids[sha512_hex(B)]}
    assert not handed & {"K02", "K04"}
    assert "id_space_exhausted" in {a.kind for a in filled.plan.anomalies}
    assert_one_to_one(sb)


def test_the_repair_record_is_private_and_carries_no_patient_data(sandbox, tmp_path):
    seed_legacy_damage(sandbox)
    settings = settings_for(sandbox, tmp_path)
    outcome = repair(settings, apply=True, resend=True, rng=random.Random(2))
    folder = outcome.folder
    assert folder.name.endswith("-repair") and stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["repair.html", "sequence", "summary.json", "worksheet.csv"]
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        text = path.read_text(encoding="utf-8")
        tokens = [secret.reveal() for secret in settings.secrets()]
        for forbidden in (A, B, C, D, sha512_hex(A), sha512_hex(C), *tokens):
            assert forbidden not in text
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["applied"] and summary["transfers_created"] == 2
    assert summary["rows_retired"] == 3 and summary["ids_created"] == 1
    worksheet = list(csv.DictReader((folder / "worksheet.csv").open()))
    assert sorted((w["study_uid"], w["sent_under"], w["new_request"]) for w in worksheet) == [
        ("1.2.3.1002", "K02", "new request created"),
        ("1.2.3.1004", "K03", "new request created"),
        ("1.2.3.1005", "K04", "none: the study has no patient ID"),
    ]
    index = (folder.parent / "index.html").read_text()
    assert f"{folder.name}/repair.html" in index
    page = (folder / "repair.html").read_text()
    assert "What the research PACS team must do" in page and "The rule" in page
    new_id = dict(live_ids(sandbox))[sha512_hex(C)]
    assert "retired 3 AutoID row(s), created 1 new ID(s), requested 2 study(ies) again" in page
    assert f"<td>{new_id}</td>" in page and "(example)" not in page
    assert ("1.2.3.1004", new_id) in {(w["study_uid"], w["belongs_under"]) for w in worksheet}


def test_a_dry_repair_marks_its_new_ids_as_examples(sandbox, tmp_path):
    """A dry run draws C's new ID at random; --apply draws again, so the dry report and the
    worksheet the PACS team may get before the apply must not present it as C's ID."""
    seed_legacy_damage(sandbox)
    dry = repair(settings_for(sandbox, tmp_path), rng=random.Random(3))
    (drawn,) = [n.value for n in dry.plan.new_rows]
    page = (dry.folder / "repair.html").read_text()
    assert page.count(f"{drawn} (example)") == 2  # AutoID changes and the PACS table
    assert "--apply</code> draws them again" in page
    worksheet = {w["study_uid"]: w for w in csv.DictReader((dry.folder / "worksheet.csv").open())}
    assert worksheet["1.2.3.1004"]["belongs_under"] == "new ID drawn by --apply"
    assert worksheet["1.2.3.1002"]["belongs_under"] == "K01"  # a kept ID is no example
    assert "K01 (example)" not in page and "would write: 3 AutoID row(s) to retire" in page


def test_apply_cut_off_at_any_request_is_completed_by_the_next_apply(sandbox_factory, tmp_path):
    reference = sandbox_factory(seed="empty")
    seed_legacy_damage(reference)
    ref_settings = settings_for(reference, tmp_path / "ref")
    reference.reset_counts()
    repair(ref_settings, apply=True, resend=True, rng=random.Random(3))
    total = reference.total_requests()
    expected = state(reference)
    # three table reads of two requests each; with something to write the lease's ticket, the
    # same reads again, the writes, AutoID once more before the transfers, the verifying
    # reads and the ticket given back
    assert 9 <= total <= 26
    for nth in range(1, total):  # the last request gives the lease back: see test_lease.py
        sb = sandbox_factory(seed="empty")
        seed_legacy_damage(sb)
        settings = settings_for(sb, tmp_path / f"n{nth}", timeout_s=2, read_retries=0)
        sb.inject_fault("http500", nth=nth)
        failed = repair(settings, apply=True, resend=True, rng=random.Random(nth))
        sb.clear_faults()
        assert failed.status == "failed", nth
        final = repair(settings, apply=True, resend=True, rng=random.Random(nth))
        assert final.status != "failed", (nth, final.ending)
        assert state(sb) == expected, nth
        assert_one_to_one(sb)
        assert repair(settings, apply=True, resend=True).plan.is_empty(resend=True)


def test_a_failed_read_writes_nothing_and_a_held_lock_stops_before_any_request(sandbox, tmp_path):
    seed_legacy_damage(sandbox)
    settings = settings_for(sandbox, tmp_path, read_retries=0)
    before = (sandbox.rows("autoid"), sandbox.rows("incoming"))
    sandbox.inject_fault("oom", database="autoid", action="export")
    failed = repair(settings, apply=True, resend=True)
    assert failed.status == "failed" and failed.ending.error.startswith("read")
    assert (sandbox.rows("autoid"), sandbox.rows("incoming")) == before
    sandbox.reset_counts()
    with run_lock(settings.run.lock_file), pytest.raises(LockHeld):
        repair(settings, apply=True)
    assert sandbox.total_requests() == 0


def test_the_command_is_dry_by_default_and_refuses_resend_without_apply(sandbox, tmp_path, capsys):
    seed_legacy_damage(sandbox)
    config = sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    before = sandbox.rows("autoid")
    assert main(["repair", "--config", str(config), "--resend"]) == 2
    assert main(["repair", "--config", str(config), "--quiet"]) == 0
    assert sandbox.rows("autoid") == before
    out = capsys.readouterr()
    assert out.out.strip().endswith("repair.html")
    assert A not in out.out + out.err


def test_the_audit_before_and_after_a_repair(sandbox, tmp_path):
    """Before: the legacy damage as problems. After: only the copies the repair listed, as a
    notice, and no conflict, unknown or wrong pseudonym, or study with several requests."""
    from autoid_lib.audit.job import audit_in_kernel

    seed_legacy_damage(sandbox)
    config = sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    before = audit_in_kernel(str(config)).counts()
    assert before["hash_several_values"] == 1 and before["value_several_hashes"] == 1
    repair(settings_for(sandbox, tmp_path), apply=True, resend=True, rng=random.Random(4))
    after = audit_in_kernel(str(config)).counts()
    assert after == {"retired_transfer": 3}


def test_a_repair_racing_a_stalled_run_of_another_installation_backs_off(sandbox, tmp_path):
    """Issue 23, case 2: installation B's run holds the lease, its read of the transfer requests
    again (under the lease, before it writes: docs/run.md, "Quiet runs") stalls;
    installation A's ``repair --apply`` meanwhile would give the last free ID (K3) to B or C,
    the run to a new patient. The repair takes the lease too, finds B's run first and backs
    off before any write: K3 ends with one patient."""
    import threading

    from autoid_lib.errors import LeaseHeld

    sandbox.add_rows("projects", [{"record_id": "1", "project_name": PROJECT,
        "project_use_autoid": "1", "project_autoid_aetitle": "KNEE_AE",
        "project_patient_naming": r"K[0-3]"}])  # fmt: skip
    sandbox.add_rows("autoid", [autoid_row(1, A, "K0"), autoid_row(2, B, "K1"),
        autoid_row(3, C, "K1"), autoid_row(4, D, "K2")])  # fmt: skip
    sandbox.add_rows("incoming", [study_row("1.2.3.1", B), study_row("1.2.3.2", C)])
    sandbox.add_rows("incoming", [transfer_row("1.2.3.1", 1, "K1", "2026-01-01 10:00"),
        transfer_row("1.2.3.2", 1, "K1", "2026-01-02 10:00")])  # fmt: skip
    sandbox.add_rows("incoming", [study_row("1.2.3.3", "0101901E005", date="20261206")])
    run_side = settings_for(sandbox, tmp_path / "b")
    repair_side = settings_for(sandbox, tmp_path / "a")

    stall, stalled, handle = threading.Event(), threading.Event(), sandbox.app.handle

    def stall_the_runs_study_read(body: bytes):
        # the planned studies' transfer requests read again: transfer fields, no study fields
        again = b"transfer_project_name" in body and b"study_patient_id" not in body
        if stall.is_set() and again:
            stall.clear()
            stalled.set()
            time.sleep(3)  # within timeout_s: the request is slow, not failed
        return handle(body)

    sandbox.app.handle = stall_the_runs_study_read
    stall.set()
    run = threading.Thread(target=lambda: results.append(run_autoid(run_side)))
    results: list = []
    run.start()
    assert stalled.wait(10)
    with pytest.raises(LeaseHeld, match="installation"):
        repair(repair_side, apply=True, resend=True, rng=random.Random(1))
    run.join(30)
    assert results and results[0].error is None
    holders = Counter(r["autoid_value"] for r in sandbox.rows("autoid") if r["autoid_hash"])
    assert holders["K3"] == 1  # given once: to the run's new patient


def test_the_index_lists_a_repair_in_the_order_it_happened(sandbox, tmp_path):
    """Issue 24, item 10: "newest first" put a repair below an earlier dry run (a repair folder
    had no sequence number, and unnumbered folders sort as the oldest)."""
    import re

    seed_legacy_damage(sandbox)
    settings = settings_for(sandbox, tmp_path)
    dry = ["run", "--config", str(settings.path), "--dry-run", "--quiet"]
    assert main(dry) == 0
    done = repair(settings)
    assert main(dry) == 0
    index = (settings.run.reports_dir / "index.html").read_text()
    order = re.findall(r'href="(\d{8}T\d{6}(?:\.\d+)?Z-(?:dry|repair))/', index)
    modes = [name.rsplit("-", 1)[1] for name in dict.fromkeys(order)]
    assert modes == ["dry", "repair", "dry"]
    assert (done.folder / "sequence").read_text().strip().isdigit()


def test_a_dry_repair_report_names_itself_links_back_and_says_how_to_apply(sandbox, tmp_path):
    """Issue 24, item 12: the repair report's title has its status and date, it links to the
    index like every report, and a dry one says the command that writes it."""
    import re

    seed_legacy_damage(sandbox)
    settings = settings_for(sandbox, tmp_path)
    page = (repair(settings).folder / "repair.html").read_text()
    title = re.search(r"<title>(.*?)</title>", page)[1]
    assert title.startswith("Auto-ID repair: Needs attention (dry run) — 20")
    assert '<a href="../index.html">all runs</a>' in page
    assert f"autoid repair --config {settings.path} --apply" in page
    applied = repair(settings, apply=True, resend=True, rng=random.Random(1))
    assert "To write this repair" not in (applied.folder / "repair.html").read_text()
