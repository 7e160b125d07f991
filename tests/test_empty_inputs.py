"""Nothing to do is a normal night: every path renders and exits 0 on empty inputs (issue 15).

No projects, no studies, no AutoID rows, only other traffic: the real run notebook, its report,
summary and mail (real local SMTP), the index, and the real audit notebook with its mail.
"""

from __future__ import annotations

import argparse
import json

import pytest

from autoid_lib.cli import audit as audit_cli
from autoid_lib.cli import run as run_cli
from autoid_lib.status import ExitStatus

RECIPIENT = "pacs-ops@example.org"


def config_with_mail(sb, tmp_path, port):
    config = sb.write_kit_files(tmp_path / "kit", reports_dir=tmp_path / "reports")
    table = [
        "[email]", 'smtp_host = "127.0.0.1"', f"smtp_port = {port}", 'security = "none"',
        'sender = "autoid@example.org"', f'recipients = ["{RECIPIENT}"]', "timeout_s = 5",
        'send = "always"',
    ]  # fmt: skip
    config.write_text(config.read_text() + "\n".join(table) + "\n")
    return config


def command(module, prog, *argv) -> int:
    parser = argparse.ArgumentParser(prog=prog)
    module.add_arguments(parser)
    return module.run(parser.parse_args(list(argv)))


def seed(sb, setup: str) -> None:
    if setup == "no projects":
        return
    sb.add_rows("projects", [{
        "record_id": "1", "project_name": "PROJ_P", "project_use_autoid": "1",
        "project_autoid_aetitle": "AE_P", "project_patient_naming": r"P_\d{3}",
    }])  # fmt: skip
    if setup == "other traffic only":
        other = {"study_instance_uid": "1.1", "study_aetitle_addressed": "CLINIC",
                 "study_patient_id": "PAT1", "study_date": "20261127"}  # fmt: skip
        sb.add_rows("incoming", [other])


@pytest.mark.slow
@pytest.mark.parametrize("setup", ["no projects", "no studies", "other traffic only"])
def test_run_audit_report_mail_and_index_on_empty_inputs(
    sandbox, smtp_server, tmp_path, capsys, setup
):
    seed(sandbox, setup)
    inbox, port = smtp_server()
    config = str(config_with_mail(sandbox, tmp_path, port))

    assert command(run_cli, "autoid run", "--config", config, "--email", "--quiet") == 0
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.name.endswith("-live")]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["error"] is None, summary
    assert "nothing to do" in summary["headline"]
    assert summary["transfers_created"] == summary["ids_created"] == 0
    report = (run_dir / "report.html").read_text()
    assert "nothing to do" in report and "Traceback" not in report
    assert (tmp_path / "reports" / "index.html").exists()

    assert command(audit_cli, "autoid audit", "--config", config, "--email") == ExitStatus.OK
    (audit_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.name.endswith("-audit")]
    audit = json.loads((audit_dir / "summary.json").read_text())
    assert audit["status"] == "ok" and "Traceback" not in (audit_dir / "report.html").read_text()

    subjects = [m["Subject"] for m in inbox.messages()]
    assert len(subjects) == 2 and subjects[0].startswith("[autoid] OK"), subjects
    index = (tmp_path / "reports" / "index.html").read_text()
    assert run_dir.name in index and audit_dir.name in index
    capsys.readouterr()
