"""Sandbox scenario builders shared by the audit and explore tests: row factories for the
Projects, Incoming and AutoID databases, a clean history and a set of planted problems."""

from __future__ import annotations

from datetime import datetime, timedelta

from autoid_lib.hashing import sha512_hex
from autoid_lib.snapshot import KIT_PROJECT_PREFIX as KIT_PREFIX

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
    sb.advance(timedelta(days=-60))  # recorded 60 days ago, untouched since: out of every window
    sb.add_rows("incoming", [study("2.1", "ALPHA", PID[4], OLD)])  # no transfer
    sb.advance(timedelta(days=60))
    sb.add_rows(
        "incoming",
        [
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


def patient_rows(sb) -> list[dict]:
    """AutoID rows of patients: not the kit's own records (the hash scheme's fingerprint)."""
    return [r for r in sb.rows("autoid") if not r["autoid_project_name"].startswith(KIT_PREFIX)]


def stored_rows(sb) -> list[dict]:
    """AutoID's rows without the local copy's mark (``redcap.copy_mark``), which a live run
    rewrites whenever its copy took in changes: the rows a count of writes is about."""
    from autoid_lib.snapshot import MARK_PROJECT

    return [r for r in sb.rows("autoid") if r.get("autoid_project_name") != MARK_PROJECT]
