"""The full-history audit: each planted problem is found, a clean history finds nothing, and the
recorded report (``autoid audit``) carries no patient identifier."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

import pytest
from scenarios import OLD, PATIENTS, PID, autoid, clean_history, plant_problems, study, transfer

from autoid_lib.audit.job import audit_in_kernel
from autoid_lib.audit.view import findings_html
from autoid_lib.cli import audit as audit_cli
from autoid_lib.hashing import sha512_hex


@pytest.fixture
def config(sandbox, tmp_path):
    return sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")


def test_a_clean_history_has_no_findings(sandbox, config):
    clean_history(sandbox)
    report = audit_in_kernel(str(config))
    assert report.findings == ()
    assert report.status == "ok"
    assert report.studies == 5
    assert "Nothing found" in findings_html(report)
    alpha = report.projects.set_index("project").loc["Alpha"]
    assert (alpha["studies"], alpha["transferred"], alpha["ids"]) == (2, 2, 1)


def test_each_planted_problem_is_found_with_its_count_and_study(sandbox, config):
    clean_history(sandbox)
    plant_problems(sandbox)
    report = audit_in_kernel(str(config))
    assert report.counts() == {
        "missing_transfer": 1,
        "several_transfers": 1,
        "unknown_pseudonym": 1,
        "hash_several_values": 1,
        "pattern_mismatch": 1,
        "downstream_error": 1,
    }
    refs = {f.kind: list(f.table.get("study_ref", [])) for f in report.findings}
    assert refs["missing_transfer"] == ["…2.1"]
    assert refs["several_transfers"] == ["…2.2"]
    assert refs["unknown_pseudonym"] == ["…2.3"]
    assert refs["downstream_error"] == ["…2.4"]
    assert report.finding("hash_several_values").table.to_dict("records") == [
        {"project": "Alpha", "autoid_records": "4, 5", "values": "A010, A011"}
    ]
    assert list(report.finding("pattern_mismatch").table["value"]) == ["BETA-7"]
    assert report.finding("pattern_mismatch").severity == "notice"
    assert report.finding("downstream_error").severity == "problem"  # code 2, not only 3
    groups = report.finding("downstream_error").groups
    assert groups[["code", "reason", "transfers"]].to_dict("records") == [
        {"code": "2", "reason": "send error to rDMA", "transfers": 1}
    ]
    assert list(report.pending["study_ref"]) == ["…2.5"]
    assert all(f.action for f in report.findings)


def test_a_transfer_under_another_patients_id_and_a_shared_id_are_found(sandbox, config):
    clean_history(sandbox)
    sandbox.add_rows("incoming", [study("3.1", "BETA", PID[4]), transfer("3.1", 1, "Beta", "B07")])
    sandbox.add_rows("autoid", [autoid(9, "Beta", PID[4], "B07")])
    report = audit_in_kernel(str(config))
    assert report.counts() == {"value_several_hashes": 1}
    (entry,) = report.finding("value_several_hashes").table.to_dict("records")
    assert entry == {"project": "Beta", "autoid_records": "2, 9", "values": "B07"}

    sandbox.add_rows("incoming", [study("3.2", "BETA", PID[5]), transfer("3.2", 1, "Beta", "B07")])
    assert audit_in_kernel(str(config)).counts()["wrong_patient"] == 1


def test_findings_show_no_patient_identifier_even_in_full_detail(sandbox, config):
    clean_history(sandbox)
    plant_problems(sandbox)
    report = audit_in_kernel(str(config))
    shown = findings_html(report, "full") + json.dumps(report.summary(), default=str)
    shown += report.pending.to_string() + report.projects.to_string()
    leaked = [v for pid, acc in PATIENTS.items() for v in (pid, acc, sha512_hex(pid)) if v in shown]
    assert leaked == []
    assert "DOE^" not in shown
    assert "…2.1" in shown  # the check looked at real output


@pytest.mark.slow
def test_autoid_audit_writes_a_report_folder_like_a_run(sandbox, config, tmp_path):
    clean_history(sandbox)
    plant_problems(sandbox)
    parser = argparse.ArgumentParser()
    audit_cli.add_arguments(parser)
    out = tmp_path / "audits"
    args = parser.parse_args(["--config", str(config), "--output-dir", str(out), "--quiet"])
    assert audit_cli.run(args) == 0

    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert folder.name.endswith("Z-audit")
    assert datetime.strptime(folder.name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["mode"] == "audit" and summary["status"] == "attention"
    assert summary["findings"]["several_transfers"] == 1
    # projects, all of Incoming, AutoID (names and one chunk each), UIDs in the window
    assert summary["api_requests"] == 7
    # what it cost: the kernel's peak memory (a Python kernel holds tens of MiB) and no pacing
    assert 10 < summary["peak_rss_mb"] < 2000 and summary["paced_s"] == 0
    html = (folder / "report.html").read_text()
    assert "<title>Auto-ID audit · Needs attention · " in html  # mode, status, time
    assert "Studies with more than one transfer request" in html
    assert "send error to rDMA" in html
    assert "…2.2" in html
    files = [folder / name for name in ("run.ipynb", "report.html", "summary.json")]
    text = "".join(f.read_text() for f in files)
    secrets = [*PATIENTS, *PATIENTS.values(), *sandbox.tokens.values()]
    assert [v for v in secrets if v in text] == []
    assert "DOE^" not in text
    assert (out / "index.html").is_file()


def test_an_old_study_modified_in_the_window_is_pending_not_lost(sandbox, config):
    """Reach is decided by REDCap's modification time, as the run's export decides it."""
    clean_history(sandbox)
    sandbox.add_rows("incoming", [study("3.1", "ALPHA", PID[4], OLD)])  # old date, recorded now
    report = audit_in_kernel(str(config))
    assert report.finding("missing_transfer") is None
    assert list(report.pending["study_ref"]) == ["…3.1"]


def test_what_the_run_refuses_is_found_by_the_audit(sandbox, config):  # issue 15
    clean_history(sandbox)
    padded = {**autoid(20, "Alpha", PID[6] + " ", "A20")}  # a legacy row under the padded ID
    sandbox.add_rows("autoid", [autoid(19, "Alpha", PID[6], "A19"), padded])
    sandbox.add_rows("autoid", [autoid(21, "alpha", PID[7], "A21")])  # a renamed project
    sandbox.add_rows(
        "incoming", [study("4.1", "ALPHA", PID[6] + " "), study("4.2", "ALPHA", PID[6])]
    )
    sandbox.add_rows(
        "incoming", [study("4.3", "ALPHA", PID[8]), transfer("4.3", 1, "Alpha", "A77")]
    )
    report = audit_in_kernel(str(config))
    counts = report.counts()
    assert counts["spelling_several_ids"] == 1 and counts["project_name_variant"] == 1
    assert counts["unknown_pseudonym"] == 1  # sent by hand, no AutoID row
    (entry,) = report.finding("spelling_several_ids").table.to_dict("records")
    assert entry == {"project": "Alpha", "autoid_records": "19, 20", "values": "A19, A20"}
    (variant,) = report.finding("project_name_variant").table.to_dict("records")
    assert variant == {"project": "Alpha", "stored_as": "alpha", "rows": 1}
    shown = findings_html(report)
    assert not any(pid in shown for pid in PATIENTS)


def test_one_hash_in_two_letter_cases_is_one_patient_not_a_conflict(sandbox, config):
    clean_history(sandbox)
    upper = {**autoid(30, "Alpha", PID[9], "A30")}
    upper["autoid_hash"] = upper["autoid_hash"].upper()  # hex: the same hash
    sandbox.add_rows("autoid", [autoid(29, "Alpha", PID[9], "A30"), upper])
    assert "value_several_hashes" not in audit_in_kernel(str(config)).counts()


def test_waiting_studies_say_what_the_next_run_does_as_the_run_says_it(sandbox, config):
    """Issue 24, item 5: a study of a project whose ID space is full is not "served by the next
    run": the audit takes each waiting study's fate from the planner, and says so the way the
    run's own plan does; the heading counts them and says how many are not shown."""
    from scenarios import project

    from autoid_lib.audit.view import pending_table
    from autoid_lib.config import load_settings
    from autoid_lib.run import run_autoid

    sandbox.add_rows("projects", [project("1", "FULL", "FULL_AE", r"F[0-1]")])
    sandbox.add_rows("projects", [project("2", "ROOMY", "ROOMY_AE", r"R\d{3}")])
    sandbox.add_rows("autoid", [autoid(1, "FULL", PID[0], "F0"), autoid(2, "FULL", PID[1], "F1")])
    sandbox.add_rows("incoming", [study("9.1", "FULL_AE", PID[2])])
    sandbox.add_rows("incoming", [study(f"8.{n}", "ROOMY_AE", f"NEW{n:03d}") for n in range(55)])
    report = audit_in_kernel(str(config))
    reasons = dict(zip(report.pending["study_uid"], report.pending["reason"], strict=True))
    run = run_autoid(load_settings(config), dry_run=True)
    (skipped,) = [o for o in run.plan.studies if o.study_uid == "9.1"]
    assert reasons["9.1"] == f"the next run skips it: {skipped.reason}"
    assert "exhausted" in skipped.reason
    assert {reasons[f"8.{n}"] for n in range(55)} == {"the next run serves it"}
    shown = pending_table(report).data
    assert "<b>56 studies</b>" in shown and "serves 55 and skips 1" in shown
    assert "… and 6 more" in shown  # 50 rows at detail = summary
