"""``autoid run``: the real notebook executed by papermill against the sandbox, and its files.

Kernel starts are slow, so only three tests here execute the notebook (live, dry, failing
REDCap); the rest check the exit statuses that stop before a kernel, the index, the HTML export
and the display helpers on a run made without a notebook.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest
from scenarios import patient_rows
from stamped import unstamped
from tiny_notebooks import write_notebook

from autoid_lib import report
from autoid_lib.cli import run as run_cli
from autoid_lib.config import load_settings
from autoid_lib.lock import run_lock
from autoid_lib.records import index as report_index
from autoid_lib.records import notebook_run
from autoid_lib.records.html_export import export_html, fallback_report
from autoid_lib.records.notebook_run import NOTEBOOK, execute_run
from autoid_lib.run import run_autoid
from autoid_lib.status import ExitStatus

DOCS = Path(__file__).resolve().parent.parent / "docs"


def kit_config(sb, tmp_path: Path, **redcap) -> Path:
    """The sandbox's kit config, with extra ``[redcap]`` keys (e.g. read_retries=0)."""
    config = sb.write_kit_files(tmp_path / "kit", reports_dir=tmp_path / "reports")
    extra = "".join(f"\n{key} = {value}" for key, value in redcap.items())
    config.write_text(config.read_text().replace("timeout_s = 10", "timeout_s = 10" + extra))
    return config


def autoid_run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="autoid run")
    run_cli.add_arguments(parser)
    return run_cli.run(parser.parse_args(list(argv)))


def transfer_requests(sb) -> dict[tuple[str, str], str]:
    """Project name per ``transfers`` instance (study UID, instance), as REDCap holds them."""
    return {
        (row["study_instance_uid"], str(row["redcap_repeat_instance"])): row[
            "transfer_project_name"
        ]
        for row in sb.rows("incoming")
        if row.get("redcap_repeat_instrument") == "transfers"
    }


def new_requests(before: dict, after: dict) -> int:
    """Instances that name a project now and did not before (new, or a blank one filled in)."""
    return sum(1 for key, project in after.items() if project and not before.get(key))


def run_folders(reports: Path) -> list[Path]:
    return sorted(p for p in reports.iterdir() if p.is_dir()) if reports.exists() else []


def assert_lean_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert "@import" not in page and "<link" not in page.lower()
    assert "jp-" not in page  # none of JupyterLab's CSS
    for code in ("run_cell", "config_path", "import report", "report.status_banner"):
        assert code not in page, f"code cell text {code!r} leaked into the report"


# -- the notebook itself -----------------------------------------------------------------------


def test_shipped_notebook_has_no_outputs_and_runs_without_a_kernel_option():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    assert nb.metadata.language_info.name == "python"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    (params,) = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    names = {line.split(":")[0] for line in params.source.splitlines()}
    assert names == {
        "config_path", "lookback_days", "dry_run", "full_read", "projects", "now", "detail",
        "email", "reports_dir", "output_dir", "command_started",
    }  # fmt: skip
    assert not re.search(r"token|key|secret|password", _code_only(params.source), re.I)
    for cell in code:  # one library call per cell, no logic
        assert not re.search(r"\b(for|if|while|def|class)\b", _code_only(cell.source))


def _code_only(source: str) -> str:
    return "\n".join(line.split("#")[0] for line in source.splitlines())


# -- executed against the sandbox --------------------------------------------------------------


@pytest.mark.slow
def test_live_run_reports_what_it_wrote(demo_sandbox, tmp_path):
    config = kit_config(demo_sandbox, tmp_path)
    before = transfer_requests(demo_sandbox)
    autoid_before = len(patient_rows(demo_sandbox))

    record = execute_run(load_settings(config), progress=False)

    assert record.exit_status == ExitStatus.OK, record.message
    summary = json.loads((record.path / "summary.json").read_text())
    assert summary == record.summary
    assert summary["status"] == "attention"  # the demo seed has anomalies on purpose
    assert summary["mode"] == "live" and record.path.name.endswith("Z-live")
    created = new_requests(before, transfer_requests(demo_sandbox))
    assert summary["transfers_created"] == created > 0
    assert summary["ids_created"] == len(patient_rows(demo_sandbox)) - autoid_before > 0
    assert sum(p["transfers_created"] for p in summary["projects"]) == created
    assert {"empty patient ID", "ambiguous AE title"} <= set(summary["skipped"])
    assert summary["report"] == "report.html" and summary["email"] is None
    assert summary["error"] is None and summary["finished"] >= summary["started"][:19]
    assert {"kernel", "notebook", "export", "read", "plan"} <= set(summary["timings_s"])

    page = record.report.read_text()
    assert_lean_self_contained(page)
    assert len(page.encode()) < 400_000
    assert "Needs attention" in page and "KneeHipCohort" in page
    assert "ambiguous AE title" in page and "data:image/png;base64," in page
    assert "<th>study UID</th>" not in page  # detail = summary leaves study rows out
    executed = nbformat.read(record.notebook, as_version=4)
    assert executed.metadata.papermill.parameters["config_path"] == str(config)
    index = (tmp_path / "reports" / "index.html").read_text()
    assert f'href="{record.path.name}/report.html"' in index
    assert (record.path / "run.log").is_file()

    documented = (DOCS / "summary.md").read_text()
    for key in summary:
        assert f"`{key}`" in documented, f"summary.json field {key} is not in docs/summary.md"


@pytest.mark.slow
def test_dry_run_writes_nothing_and_says_what_it_would_do(demo_sandbox, tmp_path):
    config = kit_config(demo_sandbox, tmp_path)
    incoming, autoid = demo_sandbox.rows("incoming"), demo_sandbox.rows("autoid")

    status = autoid_run("--config", str(config), "--dry-run", "--quiet", "--detail", "full")

    assert status == ExitStatus.OK
    assert demo_sandbox.rows("incoming") == incoming and demo_sandbox.rows("autoid") == autoid
    (folder,) = run_folders(tmp_path / "reports")
    assert folder.name.endswith("Z-dry")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["mode"] == "dry" and summary["transfers_created"] > 0
    page = (folder / "report.html").read_text()
    assert "would create" in page.lower() and "<th>study UID</th>" in page
    assert_lean_self_contained(page)


@pytest.mark.slow
def test_failing_redcap_exits_1_with_a_report_that_shows_the_error(demo_sandbox, tmp_path, capsys):
    config = kit_config(demo_sandbox, tmp_path, read_retries=0)
    demo_sandbox.inject_fault("http500", database="autoid", action="export", times=None)
    before = demo_sandbox.rows("incoming")

    status = autoid_run("--config", str(config), "--quiet")

    assert status == ExitStatus.FAILED
    err = capsys.readouterr().err
    # the first AutoID read is the first look's (no lease before the plan writes)
    assert "failed at read AutoID table" in err and len(err.strip().splitlines()) == 1
    (folder,) = run_folders(tmp_path / "reports")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "read AutoID table"
    assert summary["error"]["type"] == "RedcapError"
    assert demo_sandbox.rows("incoming") == before
    page = (folder / "report.html").read_text()
    assert "Failed" in page and "read AutoID table" in page
    assert (folder / "run.ipynb").is_file()
    assert "FAILED" in (tmp_path / "reports" / "index.html").read_text()


# -- exit statuses before any kernel -----------------------------------------------------------


def test_held_lock_exits_3_without_a_report_folder(demo_sandbox, tmp_path, capsys):
    config = kit_config(demo_sandbox, tmp_path)
    with run_lock(load_settings(config).run.lock_file):
        status = autoid_run("--config", str(config))
    assert status == ExitStatus.LOCKED
    assert "another run holds the lock" in capsys.readouterr().err
    assert not run_folders(tmp_path / "reports")
    assert demo_sandbox.total_requests() == 0


def test_bad_config_exits_2(tmp_path, capsys):
    config = tmp_path / "autoid.toml"
    config.write_text("[redcap]\nurl = 'https://example.org/'\n")
    assert autoid_run("--config", str(config)) == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert unstamped(err).startswith("autoid run: ") and len(err.strip().splitlines()) == 1
    assert autoid_run("--config", str(tmp_path / "missing.toml")) == ExitStatus.CONFIG
    assert not (tmp_path / "reports").exists()


def test_bad_command_line_exits_2(tmp_path):
    with pytest.raises(SystemExit) as stop:
        autoid_run("--config", "x.toml", "--detail", "everything")
    assert stop.value.code == ExitStatus.CONFIG


# -- index, export, display helpers ------------------------------------------------------------


def test_index_lists_every_run_newest_first_and_survives_broken_summaries(tmp_path):
    for name, summary in [
        ("20261128T063000Z-live", {"status": "ok", "mode": "live", "transfers_created": 3}),
        ("20261128T064500Z-dry", {"status": "attention", "mode": "dry", "skipped": {"x": 2}}),
        ("20261128T070000Z-live", None),
    ]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.html").write_text("<html></html>")
        if summary:
            (tmp_path / name / "summary.json").write_text(json.dumps(summary))
        else:
            (tmp_path / name / "summary.json").write_text("{not json")
    (tmp_path / "not-a-run").mkdir()
    page = report_index.rebuild_index(tmp_path).read_text()
    table = page[page.index("<table") :]  # the state box above links the newest runs too
    links = [link for link in re.findall(r'href="([^"]+)"', table) if link.endswith(".html")]
    assert links == [
        "20261128T070000Z-live/report.html",
        "20261128T064500Z-dry/report.html",
        "20261128T063000Z-live/report.html",
    ]
    assert "unknown" in page and "Needs attention" in page and "not-a-run" not in page
    assert_lean_self_contained(page)


def test_export_drops_code_and_hidden_cells_but_keeps_errors(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("autoid", {}).get("step") == "run":
            cell.outputs = [
                nbformat.v4.new_output(
                    "error", ename="RedcapError", evalue="boom", traceback=["RedcapError: boom"]
                )
            ]
        if cell.cell_type == "code" and "projects_table" in cell.source:
            cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": "<p>t</p>"})]
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    size = export_html(path, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert size == len(page.encode()) < 30_000
    assert "RedcapError: boom" in page and "Projects" in page
    assert "Incoming studies per day" not in page  # a heading over nothing is left out
    assert "<title>Auto-ID run report</title>" in page
    assert_lean_self_contained(page)

    export_html(path, tmp_path / "audit.html", title="Auto-ID audit <report>")
    assert "<title>Auto-ID audit &lt;report&gt;</title>" in (tmp_path / "audit.html").read_text()


def test_fallback_report_names_the_failure_under_its_title(tmp_path):
    failure = {"step": "export", "type": "OSError", "message": "the report not exported"}
    fallback_report(tmp_path / "run.html", failure)
    fallback_report(tmp_path / "audit.html", failure, title="Auto-ID audit report")
    run_page = (tmp_path / "run.html").read_text()
    audit_page = (tmp_path / "audit.html").read_text()
    assert "<title>Auto-ID run report</title>" in run_page
    assert "<h1>Auto-ID run: failed</h1>" in run_page and "<b>export</b>" in run_page
    assert "<title>Auto-ID audit report</title><" in audit_page
    assert "<h1>Auto-ID audit: failed</h1>" in audit_page
    assert_lean_self_contained(run_page)


def test_tracebacks_keep_code_locations_and_drop_quoted_data():
    output = {
        "output_type": "error",
        "ename": "ValueError",
        "evalue": "bad patient 01019912345",
        "traceback": [
            "\x1b[31m" + "-" * 75 + "\x1b[39m",
            "\x1b[31mKeyError\x1b[39m" + " " * 34 + "Traceback (most recent call last)",
            "File \x1b[32m/x/plan.py:12\x1b[39m, in \x1b[36mplan\x1b[39m"
            "\x1b[34m(snapshot)\x1b[39m\n"
            "     11 try:\n---> 12     lookup[pid]\n     13 except KeyError:\n",
            "\x1b[31mKeyError\x1b[39m: '01019912345'",
            "\nDuring handling of the above exception, another exception occurred:\n",
            "\x1b[31mValueError\x1b[39m: bad patient 01019912345",
        ],
    }
    notebook_run._scrub_error(output, notebook_run._kit_error_names())
    text = json.dumps(output)
    assert "01019912345" not in text
    assert "plan.py:12" in text and "lookup[pid]" in text
    kit = {"output_type": "error", "ename": "RedcapError", "evalue": "REDCap autoid: export",
           "traceback": ["RedcapError: REDCap autoid: export"]}  # fmt: skip
    notebook_run._scrub_error(kit, notebook_run._kit_error_names())
    assert kit["traceback"][-1] == "RedcapError: REDCap autoid: export"


def test_display_helpers_render_every_section(demo_sandbox, tmp_path):
    result = run_autoid(load_settings(kit_config(demo_sandbox, tmp_path)), dry_run=True)
    parts = [
        report.status_banner(result).data,
        report.projects_table(result).data,
        report.anomalies_table(result).data,
        report.studies_table(result, "summary").data,
        report.studies_table(result, "full").data,
        report.run_details(result).data,
    ]
    assert report.error_box(result) is None
    assert "Needs attention" in parts[0] and "Would create" in parts[0]
    shared = {s.project_name for s in result.plan.studies if len(s.projects) > 1}
    # header, one row per project, one per shared AE title, the totals row (issue 11)
    assert parts[1].count("<tr>") == 1 + len(result.projects()) + len(shared) + 1
    assert parts[4].count("<tr>") == len(result.studies()) + 1
    for chart in (report.incoming_chart(result), report.capacity_chart(result)):
        assert chart.data[:8] == b"\x89PNG\r\n\x1a\n" and len(chart.data) < 80_000


def test_a_run_stopped_before_planning_says_so_once_and_shows_no_section(sandbox, tmp_path):
    """Issue 24, item 6: one line where the plan's sections would be, not five empty ones."""
    from autoid_lib.vocab import nothing_to_list

    sandbox.inject_fault("http500", database="projects", times=None)
    settings = load_settings(kit_config(sandbox, tmp_path))
    result = run_autoid(replace(settings, redcap=replace(settings.redcap, read_retries=0)))
    assert result.plan is None and result.status == "failed"
    assert "read projects" in report.status_banner(result).data
    sections = [
        report.projects_table(result),
        report.anomalies_table(result),
        report.studies_table(result, "full"),
        report.incoming_chart(result),
        report.capacity_chart(result),
    ]
    assert sections == [None] * len(sections)
    assert nothing_to_list("read projects") in report.error_box(result).data


@pytest.mark.slow
def test_a_hung_cell_fails_the_run_and_frees_the_lock(sandbox, tmp_path):
    """A run that never ends would hold the lock for ever: every later run would exit 3."""
    notebook = write_notebook(
        tmp_path / "hangs.ipynb", 'config_path = ""\noutput_dir = ""', "import time\ntime.sleep(60)"
    )
    settings = load_settings(kit_config(sandbox, tmp_path))
    settings = replace(settings, run=replace(settings.run, cell_timeout_s=2))
    record = execute_run(settings, notebook=notebook, progress=False)
    assert record.exit_status == ExitStatus.FAILED
    assert record.summary["error"]["message"] == "a cell ran longer than 2 s"
    assert record.report.exists()
    with run_lock(settings.run.lock_file):  # released
        pass


def test_an_unwritable_reports_dir_exits_1_with_one_line(sandbox, tmp_path, capsys):
    config = kit_config(sandbox, tmp_path)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    assert autoid_run("--config", str(config), "--output-dir", str(blocked)) == ExitStatus.FAILED
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        unstamped(err[-1]).startswith("autoid run: cannot record the run:")
        and str(blocked) in err[-1]
    )
    assert sandbox.total_requests() == 0


def test_the_kernels_log_is_kept_only_when_it_says_something_about_the_run(tmp_path):
    """ipykernel sometimes logs being interrupted at shutdown, depending on timing: that line
    alone must not leave a kernel.log (two runs of one job differed by it); anything else is
    kept for whoever looks into a run."""
    from autoid_lib.records.notebook_run import _drop_quiet_kernel_log

    log = tmp_path / "kernel.log"
    log.write_text("[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.\n\n")
    _drop_quiet_kernel_log(log)
    assert not log.exists()
    log.write_text("[IPKernelApp] ERROR | Exception in message handler:\nTraceback …\n")
    _drop_quiet_kernel_log(log)
    assert log.exists()
    _drop_quiet_kernel_log(tmp_path / "absent.log")  # nothing to drop, no error
