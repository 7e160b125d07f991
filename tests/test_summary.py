"""summary.json as a type: one builder, integer counts, one reader, and docs that keep up."""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from test_result import PROJECTS, STUDIES, result_for

from autoid_lib.records import folders
from autoid_lib.records.summary import (
    COUNT_KEYS,
    PROJECT_COUNT_KEYS,
    SUMMARY_KEYS,
    SUMMARY_SCHEMA,
    finish_summary,
    run_summary,
    unknown_summary,
    with_integer_counts,
)
from autoid_lib.snapshot import ProjectRecord
from autoid_lib.vocab import AnomalyKind, Detail, RunMode, Status, as_utc, parse_utc

DOCS = Path(__file__).resolve().parent.parent / "docs"
STARTED = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)


def documented_fields() -> set[str]:
    """The first column of docs/summary.md's field table."""
    text = (DOCS / "summary.md").read_text(encoding="utf-8")
    table = text.split("| field | type | meaning |", 1)[1].split("\n\n", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))


def test_the_docs_table_lists_exactly_the_keys_of_the_type():
    assert documented_fields() == SUMMARY_KEYS


def test_a_run_summary_has_integer_counts_and_only_typed_keys():
    """A project with an invalid pattern has no capacity: pandas then makes the whole capacity
    column float, which once wrote ``"capacity_size": 1000.0`` for every other project."""
    broken = ProjectRecord("4", "BROKEN", True, "BROKEN_AE", "[unclosed")
    summary = run_summary(result_for([*PROJECTS, broken], STUDIES))
    text = json.dumps(summary)
    assert set(summary) <= SUMMARY_KEYS and summary["schema"] == SUMMARY_SCHEMA
    assert '"capacity_size": 1000,' in text  # not 1000.0
    for key in COUNT_KEYS & set(summary):
        assert summary[key] is None or type(summary[key]) is int, key
    for project in summary["projects"]:
        for key in PROJECT_COUNT_KEYS & set(project):
            assert project[key] is None or type(project[key]) is int, (key, project[key])
    assert summary["status"] == Status.ATTENTION and json.loads(text)["status"] == "attention"


def test_finishing_a_summary_keeps_the_kernels_keys_and_adds_the_parents():
    kernel = run_summary(result_for(PROJECTS, STUDIES))
    done = finish_summary(
        kernel,
        mode=RunMode.LIVE,
        failure=None,
        timings={"notebook": 1.23456},
        finished=STARTED,
        report=folders.REPORT_FILE,
        notebook=folders.NOTEBOOK_FILE,
        detail=Detail.SUMMARY,
    )
    assert set(kernel) < set(done) <= SUMMARY_KEYS
    assert done["report"] == "report.html" and done["notebook"] == "run.ipynb"
    assert done["timings_s"]["notebook"] == 1.235 and done["email"] is None


def test_a_failure_after_the_run_marks_the_summary_failed():
    done = finish_summary(
        unknown_summary(STARTED, "dry", 2.0),
        mode="dry",
        failure={"step": "export", "type": "OSError", "message": "the report not exported"},
        timings={},
        finished=STARTED,
        report="report.html",
        notebook="run.ipynb",
        detail=None,
    )
    assert done["status"] == "failed" and done["error"]["step"] == "export"
    assert done["headline"] == "FAILED at export: the report not exported"
    assert done["transfers_created"] is None  # unknown, not zero


@given(st.integers(min_value=0, max_value=10**12))
def test_whole_number_floats_read_back_as_integers(n):
    old = {"transfers_created": float(n), "projects": [{"capacity_size": float(n), "x": 0.5}]}
    fixed = with_integer_counts(old)
    assert type(fixed["transfers_created"]) is int and fixed["transfers_created"] == n
    assert type(fixed["projects"][0]["capacity_size"]) is int
    assert fixed["projects"][0]["x"] == 0.5  # not a count: left alone


def test_a_run_folder_is_read_one_way(tmp_path):
    folder = folders.new_run_folder(tmp_path, RunMode.LIVE, STARTED)
    assert folder.name == "20261128T063000Z-live"
    assert folders.read_summary(folder) is None  # no summary.json yet
    folders.write_json(folder / folders.SUMMARY_FILE, {"status": "ok", "ids_created": 3.0})
    assert folders.read_summary(folder) == {"status": "ok", "ids_created": 3}
    (folder / folders.SUMMARY_FILE).write_text("[1, 2]")
    assert folders.read_summary(folder) is None  # not an object
    parsed = folders.parse_run_folder(folder.name)
    assert parsed is not None and parsed.mode is RunMode.LIVE


def test_naive_means_utc_in_one_place():
    assert as_utc(datetime(2026, 1, 1, 12)) == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_utc("2026-01-01T13:00:00+01:00") == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert parse_utc("") is None


def test_status_labels_come_from_one_table():
    labels = ["OK", "Needs attention", "FAILED", "Yielded to another run"]
    assert [s.label for s in Status] == labels
    assert Status.parse("weird") is None and Status.parse("ok") is Status.OK
    assert Detail.parse("full") is Detail.FULL


def test_every_anomaly_kind_a_run_reports_is_in_the_enum():
    import autoid_lib.forecast
    import autoid_lib.plan
    import autoid_lib.window

    plan_files = sorted(Path(autoid_lib.plan.__file__).parent.glob("*.py"))  # the package
    files = [*plan_files, *(Path(m.__file__) for m in (autoid_lib.window, autoid_lib.forecast))]
    source = "".join(path.read_text(encoding="utf-8") for path in files)
    kinds = set(re.findall(r'(?:Anomaly|_anomaly)\(\s*"([a-z_]+)"', source))
    assert len(kinds) >= 10  # the scan finds them
    assert kinds <= {k.value for k in AnomalyKind}
