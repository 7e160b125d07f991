"""RunResult: the tables and summary.json that reports are built from."""

import json
import random
from datetime import UTC, datetime

from autoid_lib.hashing import PatientHasher
from autoid_lib.plan import PlanSettings, plan
from autoid_lib.records.summary import run_summary
from autoid_lib.result import RunError, RunResult
from autoid_lib.snapshot import IncomingStudy, ProjectRecord, Snapshot

NOW = datetime(2026, 11, 28, 8, 0)
PATIENTS = ["PATIENT-0001", "PATIENT-0002", "PATIENT-0003"]


def result_for(projects, studies, error=None):
    snapshot = Snapshot(tuple(projects), tuple(studies), (), NOW, NOW)
    settings = PlanSettings(PatientHasher(), "2026-11-28 08:00", rng=random.Random(3))
    return RunResult(
        mode="live",
        started=datetime(2026, 11, 28, 7, 0, tzinfo=UTC),
        window_begin=NOW,
        window_end=NOW,
        lookback_days=14,
        plan=plan(snapshot, settings),
        error=error,
    )


PROJECTS = [
    ProjectRecord("1", "KNEE", True, "KNEE_AE", r"K\d{3}"),
    ProjectRecord("2", "CARDIO_A", True, "CARDIO", r"A\d{3}"),
    ProjectRecord("3", "CARDIO_B", True, "CARDIO", r"B\d{3}"),
]
STUDIES = [
    IncomingStudy("1.1", "KNEE_AE", PATIENTS[0], "20261120"),
    IncomingStudy("1.2", "KNEE_AE", PATIENTS[0], "20261121"),
    IncomingStudy("1.3", "CARDIO", PATIENTS[1], "20261121"),
    IncomingStudy("1.4", "KNEE_AE", "", "20261122"),
]


def test_projects_table_counts_each_project_including_shared_ae_titles():
    table = result_for(PROJECTS, STUDIES).projects().set_index("project")
    assert table.loc[
        "KNEE", ["incoming", "transfers_created", "ids_created", "skipped"]
    ].tolist() == [
        3,
        2,
        1,
        1,
    ]
    assert table.loc["CARDIO_A", "incoming"] == table.loc["CARDIO_B", "incoming"] == 1
    assert table.loc["CARDIO_A", "skipped"] == 1


def test_status_follows_errors_then_anomalies_and_skips():
    assert result_for(PROJECTS[:1], STUDIES[:2]).status == "ok"
    assert result_for(PROJECTS, STUDIES).status == "attention"
    failed = result_for(PROJECTS[:1], STUDIES[:2], RunError("read projects", "RedcapError", "x"))
    assert failed.status == "failed" and "failed at read projects" in failed.headline


def test_summary_is_json_with_the_documented_keys_and_no_patient_data():
    result = result_for(PROJECTS, STUDIES)
    summary = run_summary(result)
    text = json.dumps(summary)
    for key in ("status", "mode", "started", "duration_s", "api_requests", "transfers_created",
                "ids_created", "ids_reused", "skipped", "anomalies", "error"):  # fmt: skip
        assert key in summary
    assert summary["transfers_created"] == 2 and summary["ids_created"] == 1
    assert summary["skipped"] == {"ambiguous AE title": 1, "empty patient ID": 1}
    assert not any(patient in text for patient in PATIENTS)


def test_summary_detail_leaves_out_study_uids():
    result = result_for(PROJECTS, STUDIES)
    assert "study_uid" in result.studies("full")
    assert "study_uid" not in result.studies("summary")
    assert set(result.studies("summary")["study_ref"]) == {"…1.1", "…1.2", "…1.3", "…1.4"}


def test_a_failed_write_reports_unknown_counts_not_the_plans():
    failed = result_for(PROJECTS, STUDIES, RunError("write", "RedcapError", "HTTP 500"))
    summary = run_summary(failed)
    assert (summary["transfers_created"], summary["ids_created"], summary["ids_reused"]) == (
        None,
        None,
        None,
    )
    knee = failed.projects().set_index("project").loc["KNEE"]
    assert knee.isna()[["transfers_created", "ids_created"]].all() and knee["incoming"] == 3


def test_the_report_projects_table_agrees_with_the_summary_on_skipped_studies():
    from autoid_lib import report

    result = result_for(PROJECTS, STUDIES)
    html = report.projects_table(result).data
    rows = {r["project"]: r["skipped"] for r in run_summary(result)["projects"]}
    assert rows == {"KNEE": 1, "CARDIO_A": 1, "CARDIO_B": 1}
    # summary.json counts a shared AE title's study under each project; the report counts it
    # once, in the shared title's own row, so its totals row adds up (issue 11)
    assert html.count("1 ambiguous AE title") == 1 and html.count("1 empty patient ID") == 1
    assert "CARDIO_A / CARDIO_B (shared AE title)" in html and "total (each study once)" in html
