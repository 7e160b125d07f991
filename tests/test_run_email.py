"""``autoid run --email``: the real notebook run against the sandbox, mailed through a real
local SMTP server (aiosmtpd, ``smtp_server`` in conftest.py).

Two tests execute the notebook (mail delivered; SMTP port closed); the others stop at the
``[email]`` check, before any REDCap request or run folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from stamped import unstamped

from autoid_lib.cli import run as run_cli
from autoid_lib.config import load_settings
from autoid_lib.errors import ConfigError
from autoid_lib.records.recorded_run import email_hook
from autoid_lib.sandbox import seed_patient_identifiers
from autoid_lib.status import ExitStatus

MIN_LENGTH = 6  # as in test_report_privacy: shorter strings match base64 and times by chance
RECIPIENT = "pacs-ops@example.org"


def email_table(port: int, **extra: str) -> str:
    lines = [
        "[email]",
        'smtp_host = "127.0.0.1"',
        f"smtp_port = {port}",
        'security = "none"',
        'sender = "autoid@example.org"',
        f'recipients = ["{RECIPIENT}"]',
        "timeout_s = 5",
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def kit_config(sb, tmp_path: Path, email: str = "") -> Path:
    """The sandbox's kit config with ``email`` (TOML text) appended."""
    config = sb.write_kit_files(tmp_path / "kit", reports_dir=tmp_path / "reports")
    config.write_text(config.read_text() + email)
    return config


def autoid_run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="autoid run")
    run_cli.add_arguments(parser)
    return run_cli.run(parser.parse_args(list(argv)))


def only_run_folder(reports: Path) -> Path:
    (folder,) = [p for p in reports.iterdir() if p.is_dir()]
    return folder


def transfer_requests(sb) -> int:
    return sum(
        1
        for row in sb.rows("incoming")
        if row.get("redcap_repeat_instrument") == "transfers" and row["transfer_project_name"]
    )


# -- executed against the sandbox --------------------------------------------------------------


@pytest.mark.slow
def test_email_sends_the_run_summary_without_patient_data(
    demo_sandbox, smtp_server, tmp_path, capsys
):
    inbox, port = smtp_server()
    config = kit_config(demo_sandbox, tmp_path, email_table(port))
    uids = {row["study_instance_uid"] for row in demo_sandbox.rows("incoming")}

    status = autoid_run("--config", str(config), "--email", "--quiet")

    assert status == ExitStatus.OK
    folder = only_run_folder(tmp_path / "reports")
    assert capsys.readouterr().out == f"{folder / 'report.html'}\n"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "attention" and summary["transfers_created"] > 0
    [message] = inbox.messages()
    assert inbox.envelopes[0].rcpt_tos == [RECIPIENT]
    assert message["Subject"] == (
        f"[autoid] NEEDS ATTENTION: {summary['transfers_created']} transfers created, "
        f"{len(summary['anomalies'])} anomalies"
    )
    assert summary["email"] == {
        "sent": True,
        "reason": "no previous run to compare with",  # send = on-change, the default
        "error": None,
        "subject": message["Subject"],
        "recipients": 1,
    }
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert str(folder / "report.html") in text and "KneeHipCohort" in html
    assert list(message.iter_attachments()) == []

    identifiers = {i.strip() for i in seed_patient_identifiers()}
    identifiers = {i for i in identifiers if len(i) >= MIN_LENGTH}
    assert len(identifiers) > 100
    secrets = set(demo_sandbox.tokens.values())
    raw = inbox.envelopes[0].original_content.decode("utf-8", "replace")
    for where, body in {"raw": raw, "text": text, "html": html}.items():
        assert not {i for i in identifiers if i in body}, f"patient identifier in the {where} mail"
        assert not {t for t in secrets if t in body}, f"API token in the {where} mail"
        assert not {u for u in uids if u in body}, f"study UID in the {where} mail"


@pytest.mark.slow
def test_closed_smtp_port_keeps_the_run_and_reports_the_mail_error(
    demo_sandbox, closed_port, tmp_path, capsys
):
    config = kit_config(demo_sandbox, tmp_path, email_table(closed_port))
    before = transfer_requests(demo_sandbox)

    status = autoid_run("--config", str(config), "--email", "--quiet")

    assert status == ExitStatus.OK  # the mail failed, the run did not
    folder = only_run_folder(tmp_path / "reports")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "attention" and summary["error"] is None
    assert summary["email"]["sent"] is False
    assert f"cannot reach 127.0.0.1:{closed_port}" in summary["email"]["error"]
    created = transfer_requests(demo_sandbox) - before
    assert summary["transfers_created"] == created > 0
    assert demo_sandbox.total_requests() == summary["api_requests"]  # the work ran once
    err = capsys.readouterr().err
    assert "mail not sent" in err and f"127.0.0.1:{closed_port}" in err
    assert (tmp_path / "reports" / "index.html").is_file()


# -- the [email] check, before anything runs ---------------------------------------------------


def test_email_without_an_email_table_exits_2_and_does_nothing(sandbox, tmp_path, capsys):
    config = kit_config(sandbox, tmp_path)
    assert autoid_run("--config", str(config), "--email") == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert unstamped(err).startswith("autoid run: --email needs an [email] table")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "reports").exists()
    assert sandbox.total_requests() == 0


def test_bad_email_settings_exit_2_and_do_nothing(sandbox, closed_port, tmp_path, capsys):
    table = email_table(closed_port, username='"autoid"', password='"env:AUTOID_SMTP_PASSWORD"')
    config = kit_config(sandbox, tmp_path, table)
    assert autoid_run("--config", str(config), "--email") == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert unstamped(err).startswith("autoid run: ") and "AUTOID_SMTP_PASSWORD" in err
    assert not (tmp_path / "reports").exists()
    assert sandbox.total_requests() == 0


def test_the_email_table_is_checked_by_the_hook_not_by_the_config_loader(sandbox, tmp_path):
    """Without --email a broken [email] table does not stop a run; with it, it is exit 2."""
    config = kit_config(sandbox, tmp_path, "[email]\nsmtp_port = 'not a port'\n")
    settings = load_settings(config)
    assert settings.email == {"smtp_port": "not a port"}
    with pytest.raises(ConfigError, match="smtp_port must be a port number"):
        email_hook(settings)
