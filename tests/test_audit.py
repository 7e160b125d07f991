"""The full-history audit: each planted problem is found, a clean history finds nothing, and the
recorded report (``autoid audit``) carries no patient identifier."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

import pytest

from autoid_lib import audit_cli
from autoid_lib.audit import findings_html
from autoid_lib.audit_cli import audit_in_kernel
from autoid_lib.hashing import sha512_hex

TODAY = datetime.now()
RECENT = (TODAY - timedelta(days=1)).strftime("%Y%m%d")
OLD = (TODAY - timedelta(days=60)).strftime("%Y%m%d")

# patient ID -> accession number; every one of them must stay out of every output
PATIENTS = {f"0101901{n:04d}": f"ACC{n:06d}" for n in range(1, 12)}
PID = list(PATIENTS)


def project(record_id, name, ae_title, pattern):
    return {
        "record_id": record_id,
        "project_name": name,
        "project_use_autoid": "1",
        "project_autoid_aetitle": ae_title,
        "project_patient_naming": pattern,
    }


def study(uid, ae_title, patient, date=RECENT):
    return {
        "study_instance_uid": uid,
        "study_aetitle_addressed": ae_title,
        "study_patient_id": patient,
        "study_patient_name": f"DOE^{patient[-4:]}",
        "study_accession_number": PATIENTS.get(patient, ""),
        "study_date": date,
    }


def transfer(uid, instance, project_name, name, **extra):
    return {
        "study_instance_uid": uid,
        "redcap_repeat_instrument": "transfers",
        "redcap_repeat_instance": str(instance),
        "transfer_requested_date": "2026-01-01 10:00",
        "transfer_project_name": project_name,
        "transfer_name": name,
        **extra,
    }


def autoid(record_id, project_name, patient, value):
    return {
        "record_id": str(record_id),
        "autoid_project_name": project_name,
        "autoid_hash": sha512_hex(patient),
        "autoid_value": value,
        "autoid_method": "1",
    }


def clean_history(sb):
    """Two auto-ID projects, every study served once under its patient's ID; one manual project."""
    sb.add_rows(
        "projects",
        [
            project("1", "Alpha", "ALPHA", r"A\d{3}"),
            project("2", "Beta", "BETA", r"B[0-9]{2}"),
            {**project("3", "Manual", "MANUAL", r"M\d{3}"), "project_use_autoid": "0"},
        ],
    )
    sb.add_rows(
        "incoming",
        [
            study("1.1", "ALPHA", PID[0], OLD),
            study("1.2", "ALPHA", PID[0]),
            study("1.3", "BETA", PID[1]),
            study("1.4", "MANUAL", PID[2], OLD),  # manual project: no transfer needed
            study("1.5", "OTHER", PID[3], OLD),  # unknown AE title
            transfer("1.1", 1, "Alpha", "A001", transfer_date="2026-01-01 10:10"),
            transfer("1.2", 1, "Alpha", "A001"),
            transfer("1.3", 1, "Beta", "B07"),
        ],
    )
    sb.add_rows("autoid", [autoid(1, "Alpha", PID[0], "A001"), autoid(2, "Beta", PID[1], "B07")])


def plant_problems(sb):
    """One of each problem the audit must find, on top of the clean history."""
    sb.add_rows(
        "incoming",
        [
            study("2.1", "ALPHA", PID[4], OLD),  # fell out of the window, no transfer
            study("2.2", "ALPHA", PID[5]),  # two transfers
            transfer("2.2", 1, "Alpha", "A005"),
            transfer("2.2", 2, "Alpha", "A005"),
            study("2.3", "ALPHA", PID[6]),  # pseudonym not in AutoID
            transfer("2.3", 1, "Alpha", "A999"),
            study("2.4", "BETA", PID[7]),  # downstream send error
            transfer("2.4", 1, "Beta", "B11", transfer_error___2="1"),
            study("2.5", "ALPHA", PID[8]),  # in the window: pending, not a finding
        ],
    )
    sb.add_rows(
        "autoid",
        [
            autoid(3, "Alpha", PID[5], "A005"),
            autoid(4, "Alpha", PID[9], "A010"),  # one hash, two values
            autoid(5, "Alpha", PID[9], "A011"),
            autoid(6, "Beta", PID[7], "B11"),
            autoid(7, "Beta", PID[10], "BETA-7"),  # no longer matches the changed pattern
        ],
    )


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
    assert summary["api_requests"] == 3  # projects, all of Incoming, AutoID
    html = (folder / "report.html").read_text()
    assert "Studies with more than one transfer request" in html
    assert "send error to rDMA" in html
    assert "…2.2" in html
    files = [folder / name for name in ("run.ipynb", "report.html", "summary.json")]
    text = "".join(f.read_text() for f in files)
    secrets = [*PATIENTS, *PATIENTS.values(), *sandbox.tokens.values()]
    assert [v for v in secrets if v in text] == []
    assert "DOE^" not in text
    assert (out / "index.html").is_file()
