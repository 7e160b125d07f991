"""The explore notebook: its answers as library functions, through the widget objects, and the
saved notebook — no outputs in the repository copy, no patient ID left after a lookup."""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from scenarios import OLD, PATIENTS, PID, autoid, clean_history, study, transfer

from autoid_lib.config import load_settings
from autoid_lib.explore import answers as explore
from autoid_lib.explore.widgets import ExploreApp, ExploreSession, table_html, text_of
from autoid_lib.forecast import FORECAST, NO_NEW_IDS, RecordedCapacity
from autoid_lib.hashing import PatientHasher, sha512_hex
from autoid_lib.plan import PlanSettings
from autoid_lib.snapshot import AutoIdRow, ExistingTransfer, IncomingStudy, ProjectRecord, Snapshot

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "explore.ipynb"
NOW = datetime(2026, 11, 28, 8, 0)
SETTINGS = PlanSettings(
    hasher=PatientHasher(), requested_at="2026-11-28 08:00", rng=random.Random(3)
)
ALPHA = ProjectRecord("1", "Alpha", True, "ALPHA", r"A\d{3}")
ROWS = (AutoIdRow("1", "Alpha", sha512_hex("PAT1"), "A001"),)


def snap(studies, rows=ROWS, projects=(ALPHA,)):
    return Snapshot(tuple(projects), tuple(studies), tuple(rows), datetime(2026, 11, 14), NOW)


def incoming(uid, patient, date="20261127", transfers=(), accession=""):
    return IncomingStudy(uid, "ALPHA", patient, date, tuple(transfers), accession)


# -- library functions ---------------------------------------------------------------------------


def test_overview_gives_each_study_its_state_and_reason():
    studies = [
        incoming("9.1", "PAT1", transfers=[ExistingTransfer(1, "Alpha", "A001", "x", "y")]),
        incoming("9.2", "PAT1"),
        incoming("9.3", "NEW"),
        incoming("9.4", "  "),
    ]
    result = explore.project_overview(snap(studies), "Alpha", SETTINGS)
    states = {r["study_ref"]: (r["state"], r["pseudonym"]) for r in result.table.to_dict("records")}
    assert states == {
        "…9.1": ("transferred", "A001"),
        "…9.2": ("pending", "A001"),
        "…9.3": ("pending", "(new ID)"),
        "…9.4": ("skipped", ""),
    }
    assert result.counts() == {"transferred": 1, "pending": 2, "skipped": 1}
    assert result.capacity.size == 1000
    assert list(result.table.columns) == explore.STATE_COLUMNS


def test_study_lookup_by_uid_ending_or_accession_says_what_the_run_would_do():
    studies = [incoming("1.2.3.456789012", "PAT1", accession="ACC1"), incoming("1.2.3.4", "NEW")]
    reached = frozenset({"1.2.3.456789012", "1.2.3.4"})
    (answer,) = explore.lookup_study(snap(studies), "ACC1", SETTINGS, reached)
    assert answer.study_ref == "…56789012"
    assert "under the patient's known ID A001" in answer.next_run
    assert explore.find_studies(studies, "…56789012")[0].uid == "1.2.3.456789012"
    assert explore.find_studies(studies, "1.2.3.4")[0].uid == "1.2.3.4"
    assert explore.find_studies(studies, "9012") == []  # too short to be an ending
    # not modified within the window: the run never reads it, whatever its study date
    (old,) = explore.lookup_study(snap([incoming("5.5", "X")]), "5.5", SETTINGS, reached)
    assert not old.in_window and old.next_run.startswith("nothing: the run only reads")
    (recent,) = explore.lookup_study(snap([incoming("5.6", "X", OLD)]), "5.6", SETTINGS,
                                     frozenset({"5.6"}))  # fmt: skip
    assert recent.in_window and "new ID" in recent.next_run


def test_study_lookup_says_what_the_run_says_when_the_window_fills_the_id_space():
    """Issue 24, item 4: two IDs left (A002, A003), three new patients in the run's window: the
    run skips one of them (ID space exhausted). The Study tab reads each study's fate from the
    plan of the whole window, as the Project tab and the run do, not from a plan of it alone."""
    small = ProjectRecord("1", "Alpha", True, "ALPHA", r"A00[1-3]")
    studies = [incoming(f"6.{n}", f"NEW{n}", date=f"2026112{n}") for n in range(1, 4)]
    window = snap(studies, projects=(small,))
    reached = frozenset(s.uid for s in studies)
    overview = explore.project_overview(window, "Alpha", SETTINGS)
    states = dict(zip(overview.table["study_ref"], overview.table["detail"], strict=True))
    for one in studies:
        (answer,) = explore.lookup_study(window, one.uid, SETTINGS, reached)
        detail = states[f"…{one.uid}"]
        if "exhausted" in detail:
            assert answer.next_run == f"skip it ({detail}); nothing is written for it."
        else:
            assert "under a new ID" in answer.next_run
    assert sum("exhausted" in d for d in states.values()) == 1


def test_patient_lookup_answers_known_unknown_and_empty_without_the_id():
    rows = (*ROWS, AutoIdRow("2", "Beta", sha512_hex("PAT1 "), "B07"))
    answer = explore.lookup_patient("PAT1 ", rows, PatientHasher())
    assert answer.lines() == ["known in Alpha as A001", "known in Beta as B07"]
    assert explore.lookup_patient("PAT2", rows, PatientHasher()).lines() == ["unknown"]
    assert "empty" in explore.lookup_patient(" \x00", rows, PatientHasher()).lines()[0]
    split = (*ROWS, AutoIdRow("3", "Alpha", sha512_hex("PAT1"), "A002"))
    assert "conflict" in explore.lookup_patient("PAT1", split, PatientHasher()).lines()[0]
    assert "PAT1" not in repr(answer)
    upper = (AutoIdRow("4", "Gamma", sha512_hex("PAT3").upper(), "G01"),)  # as the run finds it
    assert explore.lookup_patient("PAT3", upper, PatientHasher()).lines() == [
        "known in Gamma as G01"
    ]


def test_pattern_workbench_reports_errors_with_position_size_samples_and_capacity():
    broken = explore.pattern_workbench("P_(ab")
    assert broken.position == 2 and broken.lines()[-1] == "    ^"
    answer = explore.pattern_workbench(r"S\d", {"S1", "S2", "X9"}, project="SmallPilot", rng=1)
    assert answer.size == 10
    assert len(answer.samples) == 5
    assert all(re.fullmatch(r"S\d", s) and s not in {"S1", "S2"} for s in answer.samples)
    assert (answer.capacity.used, answer.not_matching) == (2, ("X9",))
    full = explore.pattern_workbench("Q[12]", {"Q1", "Q2"}, project="Tiny")
    assert full.samples == () and "no ID left" in full.lines()[2]


def test_preview_plans_only_the_chosen_project():
    beta = ProjectRecord("2", "Beta", True, "BETA", r"B\d{2}")
    studies = [incoming("7.1", "NEW"), IncomingStudy("7.2", "BETA", "OTHER", "20261127")]
    result = explore.preview_project(snap(studies, projects=(ALPHA, beta)), "Alpha", SETTINGS)
    assert [s.study_uid for s in result.plan.studies] == ["7.1"]
    assert len(result.plan.new_ids) == 1
    assert "study_uid" not in result.studies(detail="summary")
    assert len(result.plan.transfers) == 1
    assert result.plan.describe() in explore.preview_sentence(result)


def test_preview_lists_skipped_studies_first_and_marks_drawn_ids_as_examples():
    """Issue 24, item 4: skipped studies first (docs/explore-and-audit.md), and a new ID a dry
    run drew at random is marked, unlike a known ID the run will use."""
    done = [ExistingTransfer(1, "Alpha", "A001", "x", "y")]
    studies = [
        incoming("8.1", "PAT1", date="20261120", transfers=done),
        incoming("8.2", "  ", date="20261126"),
        incoming("8.3", "NEW", date="20261127"),
        incoming("8.4", "PAT1", date="20261119", transfers=done),
    ]
    result = explore.preview_project(snap(studies), "Alpha", SETTINGS)
    table = explore.preview_studies(result)
    assert list(table["study_ref"]) == ["…8.2", "…8.3", "…8.4", "…8.1"]
    assert list(table.columns) == list(result.studies(detail="summary").columns)
    drawn = next(s.pseudonym for s in result.plan.studies if s.study_uid == "8.3")
    assert table.loc[1, "pseudonym"] == f"{drawn} (example)"


def test_project_forecast_counts_new_ids_over_the_window_or_the_recorded_runs():
    known = (*ROWS, *(AutoIdRow(str(i), "Alpha", f"h{i}", f"A{i:03}") for i in range(2, 12)))
    requested = [
        incoming(f"6.{i}", f"P{i}", transfers=[ExistingTransfer(1, "Alpha", f"A{i:03}", d, "")])
        for i, d in enumerate(["2026-11-20 10:00", "2026-11-21 10:00", "2026-11-25 10:00"], 2)
    ]
    args = {"now": NOW, "window_days": 56.0, "reach_days": 60.0}
    found = explore.project_forecast(snap(requested, known), "Alpha", SETTINGS, (), **args)
    assert found.state == FORECAST and found.usage.new_ids == 3 and found.free == 1000 - 11
    assert "from transfer requests" in found.describe()
    earlier = [RecordedCapacity(datetime(2026, 10, 10), "Alpha", r"A\d{3}", 1)]
    exact = explore.project_forecast(snap([], known), "Alpha", SETTINGS, earlier, **args)
    assert exact.usage.new_ids == 10 and "from recorded runs" in exact.describe()
    bare = explore.project_forecast(snap([], ROWS), "Alpha", SETTINGS, (), **args)
    assert bare.state == NO_NEW_IDS  # the window was read: nothing new in it


def test_tables_align_text_left_and_numbers_right_and_escape_cells():
    frame = pd.DataFrame([{"project": "<b>A</b>", "studies": 3, "note": None}])
    shown = table_html(frame)
    assert '<td style="text-align: left">&lt;b&gt;A&lt;/b&gt;</td>' in shown
    assert '<td style="text-align: right">3</td>' in shown
    assert '<th style="text-align: right">studies</th>' in shown
    assert '<td style="text-align: left"></td>' in shown  # None is an empty cell


# -- through the widget objects ------------------------------------------------------------------


@pytest.fixture
def app(sandbox, tmp_path):
    clean_history(sandbox)
    sandbox.add_rows(
        "incoming",
        [
            study("4.1", "ALPHA", PID[0]),  # known patient, no transfer yet: pending
            study("4.2", "ALPHA", PID[7], OLD),
            transfer("4.2", 1, "Alpha", "A007", transfer_error___1="1"),
        ],
    )
    sandbox.add_rows("autoid", [autoid(5, "Alpha", PID[7], "A007")])
    settings = load_settings(sandbox.write_kit_files(tmp_path))
    return ExploreApp(ExploreSession(settings, rng=random.Random(5)))


def test_patient_widget_clears_the_field_and_shows_only_the_pseudonym(app):
    panel = app.patient
    panel.password.value = PID[0]
    panel.button.click()
    assert panel.password.value == ""
    assert text_of(panel.output) == "known in Alpha as A001"
    panel.password.value = "999999"
    panel.button.click()
    assert (panel.password.value, text_of(panel.output)) == ("", "unknown")
    assert PID[0] not in json.dumps(panel.output.get_state(), default=str)


def test_study_widget_finds_by_accession_without_echoing_it(app):
    accession = PATIENTS[PID[7]]
    app.study.query.value = accession
    app.study.button.click()
    shown = text_of(app.study.output)
    assert app.study.query.value == ""
    assert accession not in shown and PID[7] not in shown
    assert "…4.2" in shown and "anonymization error" in shown and "A007" in shown
    assert shown.startswith("1 study found.\n") and "1 transfer request.\n" in shown
    app.study.query.value = "4.1"  # no transfer request yet: no empty table under it
    app.study.button.click()
    assert "0 transfer requests.\nNext run: request it for Alpha" in text_of(app.study.output)
    app.study.query.value = "no-such-study"
    app.study.button.click()
    assert text_of(app.study.output) == "No study found."


def test_overview_pattern_and_preview_widgets_show_their_answers(app):
    assert app.overview.project.options == ("Alpha", "Beta")
    app.overview.project.value = "Alpha"
    app.overview.button.click()
    shown = text_of(app.overview.output)
    assert "Alpha (AE title ALPHA)" in shown and "1 pending" in shown
    assert "(the run's window, " in shown  # the run's exact window: the report's counts
    assert "Forecast: no forecast" in shown  # one pending study, no new ID requested yet
    assert "…4.1" in shown and PID[0] not in shown
    app.overview.begin.value = app.overview.begin.value - timedelta(days=1)
    app.overview.button.click()
    assert "whole days; the run's own window is shown" in text_of(app.overview.output)

    app.pattern.project.value = "Alpha"  # fills in the project's pattern
    assert app.pattern.pattern.value == r"A\d{3}"
    app.pattern.button.click()
    assert "1,000 possible IDs." in text_of(app.pattern.output)
    assert "Applied to Alpha: 2 of 1,000 IDs used" in text_of(app.pattern.output)
    app.pattern.pattern.value = "A[0-9"
    app.pattern.button.click()
    assert "Pattern error" in text_of(app.pattern.output)
    caret = app.pattern.output.outputs[-1]["data"]["text/html"]  # fixed width: under its place
    assert caret == "<pre>A[0-9\n ^</pre>"
    app.pattern.pattern.value = " "
    app.pattern.button.click()
    assert text_of(app.pattern.output).startswith("Type a pattern")

    app.preview.project.value = "Alpha"
    app.preview.button.click()
    shown = text_of(app.preview.output)
    assert shown.startswith("Dry run, window") and "…4.1" in shown
    assert "A001" in shown
    # seen in JupyterLab (issue 24): a bare "(no rows)" for no anomalies, and capacity as a
    # table of raw fractions (0.0017751479289940828); now in words, as the Project tab says it
    assert "(no rows)" not in shown and "Nothing needs a human." in shown
    assert shown.splitlines()[-1] == "Capacity of Alpha: 2 of 1,000 IDs used (<1%)."
    for panel in (app.overview, app.study, app.patient, app.pattern, app.preview):
        inputs = panel.widget.children[0]  # the row wraps on a phone instead of hiding its button
        assert inputs.layout.flex_flow == "row wrap" and panel.button in inputs.children
    assert (
        app.study.query.layout.max_width
        == app.pattern.pattern.layout.max_width
        == "calc(100% - 4px)"
    )


def test_a_redcap_failure_is_shown_as_the_kits_message(app, sandbox):
    sandbox.inject_fault("http500", database="incoming", times=None)
    app.overview.project.value = "Alpha"
    app.overview.button.click()
    assert text_of(app.overview.output).startswith("Error: REDCap incoming")


# -- the notebook file ---------------------------------------------------------------------------


def test_the_saved_explore_notebook_has_no_outputs_and_no_widget_state():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)
    assert "widgets" not in nb.metadata
    assert "explore_app(config_path)" in code[-1].source


DRIVE_CELL = """
import os, pathlib
secrets = json.loads(pathlib.Path(os.environ["EXPLORE_TEST_INPUT"]).read_text())
app.patient.password.value = secrets["patient"]
app.patient.button.click()
app.study.query.value = secrets["accession"]
app.study.button.click()
del secrets
app.overview.project.value = "Alpha"
app.overview.button.click()
app.pattern.project.value = "Alpha"
app.pattern.button.click()
app.preview.project.value = "Alpha"
app.preview.button.click()
print(app.patient.password.value == "", app.study.query.value == "")
"""


@pytest.mark.slow
def test_a_patient_lookup_in_the_notebook_leaves_no_trace_in_the_saved_file(
    app, sandbox, tmp_path, monkeypatch
):
    """Run the notebook in a real kernel, drive its widgets with a patient ID and an accession
    number the notebook never sees in code (they come from a file), save, search the file."""
    import papermill

    config = tmp_path / "autoid.toml"  # written by the app fixture
    patient, accession = PID[7], PATIENTS[PID[7]]
    secret_file = tmp_path / "input.json"
    secret_file.write_text(json.dumps({"patient": patient, "accession": accession}))
    monkeypatch.setenv("EXPLORE_TEST_INPUT", str(secret_file))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import json\n" + DRIVE_CELL))
    source = tmp_path / "explore-driven.ipynb"
    nbformat.write(nb, source)
    saved = tmp_path / "explore-saved.ipynb"
    papermill.execute_notebook(
        str(source), str(saved), parameters={"config_path": str(config)}, progress_bar=False
    )

    text = saved.read_text()
    state = json.loads(text)["metadata"]["widgets"]["application/vnd.jupyter.widget-state+json"]
    models = state["state"].values()
    passwords = [m["state"] for m in models if m["model_name"] == "PasswordModel"]
    assert [p["value"] for p in passwords] == [""]
    outputs = json.dumps(
        [m["state"].get("outputs") for m in models if m["model_name"] == "OutputModel"]
    )
    assert "known in Alpha as A007" in outputs  # the lookup ran and its answer was saved
    assert "anonymization error" in outputs  # so did the study lookup
    assert "True True" in text  # both fields were cleared in the kernel
    identifiers = [patient, accession, sha512_hex(patient), *sandbox.tokens.values()]
    assert [v for v in identifiers if v in text] == []
    assert not any(pid in text for pid in PATIENTS)


def test_project_runs_lists_what_each_recent_run_did_for_the_project():
    summaries = [
        {
            "started": "2026-11-28T07:00:00+00:00",
            "mode": "live",
            "status": "ok",
            "report": "report.html",
            "folder": "20261128T070000Z-live",
            "projects": [
                {
                    "project": "Alpha",
                    "incoming": 4,
                    "transfers_created": 2,
                    "ids_created": 1,
                    "skipped": 0,
                },
                {"project": "Beta", "incoming": 9},
            ],
        },
        {
            "started": "2026-11-28T06:55:00+00:00",
            "mode": "live",
            "status": "failed",
            "projects": None,
        },
    ]
    table = explore.project_runs(summaries, "Alpha")
    assert list(table.columns) == explore.RUN_COLUMNS
    first, failed = table.to_dict("records")
    assert (first["incoming"], first["transfers_created"], first["ids_created"]) == (4, 2, 1)
    assert first["report"] == "20261128T070000Z-live/report.html"
    assert failed["status"] == "failed" and pd.isna(failed["incoming"])


def test_overview_widget_shows_the_projects_recent_runs(app):
    run_dir = app.overview.session.settings.run.reports_dir / "20261128T070000Z-live"
    run_dir.mkdir(parents=True)
    summary = {
        "started": "2026-11-28T07:00:00+00:00",
        "mode": "live",
        "status": "attention",
        "report": "report.html",
        "projects": [{"project": "Alpha", "transfers_created": 17}],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    app.overview.project.value = "Alpha"
    app.overview.button.click()
    shown = text_of(app.overview.output)
    assert "Recent runs:" in shown and "attention" in shown and "17" in shown
    (run_dir / "summary.json").unlink()
    app.overview.button.click()
    assert text_of(app.overview.output).endswith("none recorded in the config's reports_dir yet.")


def test_typed_patient_and_study_values_are_never_echoed_on_the_kernel_channel(app):
    """ipywidgets re-sends every value a front-end sets ("echo_update") on iopub, where any
    other front-end (or a listener) sees it; the lookup fields must not."""
    for field, button, typed in (
        (app.patient.password, app.patient.button, PID[0]),
        (app.study.query, app.study.button, "ACC-4711"),
    ):
        sent = []
        field._send = lambda msg, buffers=None, sent=sent: sent.append(msg)  # the comm's wire
        assert field.continuous_update is False  # nothing travels per keystroke
        field.set_state({"value": typed})  # what the front-end's update does
        assert field.value == typed
        button.click()
        assert field.value == ""
        assert typed not in json.dumps(sent)


def test_the_explore_notebook_without_a_config_explains_instead_of_failing(tmp_path):
    """Opened as a new user would, before any config exists: one message, no traceback."""
    import papermill

    from autoid_lib.package_data import notebook_path

    output = tmp_path / "out.ipynb"
    papermill.execute_notebook(
        str(notebook_path("explore.ipynb")),
        str(output),
        parameters={"config_path": str(tmp_path / "missing.toml")},
        progress_bar=False,
        cwd=str(tmp_path),
    )
    notebook = nbformat.read(output, as_version=4)
    outputs = [o for c in notebook.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    widget_state = json.dumps(notebook.metadata.get("widgets", {}))  # what the browser renders
    assert "Explore needs the kit" in widget_state and "missing.toml" in widget_state
