"""The run notebook executed as a scheduler would: plain papermill (API and command line) and
JupyterLab's scheduler (the real jupyter-scheduler package), each compared with ``autoid run``
on a sandbox in the same state: the same run folder files, summary, index row, mail, metrics and
REDCap writes; a failed run fails the scheduler's job."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoid_lib.cli import run as run_cli
from autoid_lib.records.notebook_run import NOTEBOOK
from autoid_lib.status import ExitStatus

pytestmark = pytest.mark.slow
NOW = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
SAME = ("status", "mode", "transfers_created", "ids_created", "ids_reused", "studies_in_window")
SAME += ("skipped", "window", "api_requests", "detail", "seq", "notebook", "report")


def site(sandbox, folder: Path, smtp_port: int) -> Path:
    """The sandbox's kit config with mail to ``smtp_port`` and a metrics textfile."""
    config = sandbox.write_kit_files(folder, reports_dir=folder / "reports")
    (folder / "metrics").mkdir()
    config.write_text(
        config.read_text()
        + '\n[email]\nsmtp_host = "127.0.0.1"\n'
        + f'smtp_port = {smtp_port}\nsecurity = "none"\nsender = "autoid@example.org"\n'
        + 'recipients = ["ops@example.org"]\ntimeout_s = 5\n'
        + f'\n[monitoring]\ntextfile = "{folder / "metrics" / "autoid.prom"}"\n'
    )
    return config


def two_sites(sandbox_factory, smtp_server, tmp_path: Path, **options):
    """Two sandboxes seeded alike (the kit's and the scheduler's), each with its config."""
    sites = []
    for name in ("kit", "scheduler"):
        inbox, port = smtp_server()
        sandbox = sandbox_factory(seed="demo", now=NOW.replace(tzinfo=None), **options)
        sites.append((sandbox, site(sandbox, tmp_path / name, port), inbox))
    return sites


def autoid_run(config: Path) -> int:
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    argv = ["--config", str(config), "--email", "--quiet", "--now", NOW.isoformat()]
    return run_cli.run(parser.parse_args(argv))


def recorded(config: Path, sandbox, inbox) -> dict:
    """What one run left: its folder's files, summary facts, index row, mail, metrics, REDCap."""
    reports = config.parent / "reports"
    (folder,) = [p for p in reports.iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    prom = (config.parent / "metrics" / "autoid.prom").read_text()
    samples = [s for f in text_string_to_metric_families(prom) for s in f.samples]
    (mail,) = inbox.messages()
    return {
        "files": sorted(p.name for p in folder.iterdir()),
        "summary": {key: summary.get(key) for key in SAME},
        "anomalies": [a["kind"] for a in summary["anomalies"]],
        "email": {k: v for k, v in (summary["email"] or {}).items() if k != "at"},
        "index row": folder.name in (reports / "index.html").read_text(),
        "mail subject": mail["Subject"].replace(folder.name, "FOLDER"),
        "metrics": sorted(
            (s.name, tuple(sorted(s.labels.items())))
            for s in samples
            if "timestamp" not in s.name and "duration" not in s.name
        ),
        "transfers in REDCap": sum(
            1 for row in sandbox.rows("incoming") if row.get("transfer_project_name")
        ),
    }


def parameters(config: Path) -> dict:
    return {"config_path": str(config), "dry_run": False, "email": True, "now": NOW.isoformat()}


def test_plain_papermill_records_the_run_as_autoid_run_does(sandbox_factory, smtp_server, tmp_path):
    import papermill

    (kit, kit_config, kit_inbox), (other, config, inbox) = two_sites(
        sandbox_factory, smtp_server, tmp_path
    )
    assert autoid_run(kit_config) == ExitStatus.OK

    executed = papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "out.ipynb"), parameters=parameters(config)
    )

    expected = recorded(kit_config, kit, kit_inbox)
    assert expected["summary"]["transfers_created"] > 0 and expected["index row"]
    assert recorded(config, other, inbox) == expected
    (run_cell,) = [c for c in executed.cells if "run_cell(" in c.source]
    shown = json.dumps(run_cell.outputs)  # the run cell shows the recorded report
    assert "Recorded run" in shown and "report.html" in shown


def test_the_papermill_command_records_the_run_and_exits_non_zero_when_it_fails(
    sandbox_factory, smtp_server, tmp_path
):
    (kit, kit_config, kit_inbox), (other, config, inbox) = two_sites(
        sandbox_factory, smtp_server, tmp_path
    )
    assert autoid_run(kit_config) == ExitStatus.OK
    command = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / "out.ipynb")]
    command += ["-p", "config_path", str(config), "-p", "dry_run", "False", "-p", "email", "True"]
    command += ["-p", "now", NOW.isoformat()]

    done = subprocess.run(command, capture_output=True, text=True, timeout=240)

    assert done.returncode == 0, done.stderr[-2000:]
    assert recorded(config, other, inbox) == recorded(kit_config, kit, kit_inbox)

    other.stop()  # REDCap unreachable: the run fails, is recorded, and papermill says so
    failed = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert failed.returncode != 0
    assert "RunFailed" in failed.stderr and "run failed at" in failed.stderr
    folders = sorted(p for p in (config.parent / "reports").iterdir() if p.is_dir())
    assert len(folders) == 2
    summary = json.loads((folders[-1] / "summary.json").read_text())
    assert summary["status"] == "failed" and (folders[-1] / "report.html").is_file()
    assert len(inbox.messages()) == 2  # the failure was mailed, as autoid run mails it


def test_jupyter_schedulers_job_records_the_run_and_fails_when_the_run_fails(
    sandbox_factory, smtp_server, tmp_path
):
    scheduler_module = pytest.importorskip("jupyter_scheduler.scheduler")
    from jupyter_scheduler.environments import CondaEnvironmentManager
    from jupyter_scheduler.models import CreateJob, Status
    from jupyter_scheduler.orm import create_tables

    (kit, kit_config, kit_inbox), (other, config, inbox) = two_sites(
        sandbox_factory, smtp_server, tmp_path
    )
    assert autoid_run(kit_config) == ExitStatus.OK
    root = tmp_path / "lab"
    root.mkdir()
    (root / "populate_autoid.ipynb").write_text(NOTEBOOK.read_text())
    db_url = f"sqlite:///{tmp_path / 'scheduler.sqlite'}"
    create_tables(db_url)
    scheduler = scheduler_module.Scheduler(
        root_dir=str(root), environments_manager=CondaEnvironmentManager(), db_url=db_url
    )

    def job(**values: str) -> Status:
        """Create a job as JupyterLab's "Create Job" does and wait until it ends."""
        job_id = scheduler.create_job(
            CreateJob(
                input_uri="populate_autoid.ipynb",
                runtime_environment_name="",
                name="autoid",
                output_formats=["ipynb"],
                parameters=values,  # the scheduler pastes each value as Python source
            )
        )
        for _ in range(600):
            status = scheduler.get_job(job_id, job_files=False).status
            if status in (Status.COMPLETED, Status.FAILED):
                return status
            time.sleep(0.5)
        raise AssertionError("the scheduler's job did not end in 300 s")

    values = {key: repr(value) for key, value in parameters(config).items()}
    assert job(**values) == Status.COMPLETED
    assert recorded(config, other, inbox) == recorded(kit_config, kit, kit_inbox)

    other.stop()
    assert job(**values) == Status.FAILED
    folders = sorted(p for p in (config.parent / "reports").iterdir() if p.is_dir())
    assert json.loads((folders[-1] / "summary.json").read_text())["status"] == "failed"


def test_at_detail_full_the_schedulers_copy_shows_only_where_the_report_is(demo_sandbox, tmp_path):
    """The full report links studies to pseudonyms: it stays in the private run folder, not in
    the output notebook a scheduler writes with its own permissions."""
    import papermill

    config = demo_sandbox.write_kit_files(tmp_path / "site", reports_dir=tmp_path / "reports")
    executed = papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "out.ipynb"),
        parameters={"config_path": str(config), "detail": "full"},  # a dry run
    )

    (run_cell,) = [c for c in executed.cells if "run_cell(" in c.source]
    (shown,) = run_cell.outputs
    assert "Recorded run" in json.dumps(shown)
    (folder,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    assert folder.name.endswith("-dry") and summary["detail"] == "full"
    assert "Studies" in (folder / "report.html").read_text()
