"""``autoid audit --email``: the real audit notebook against the sandbox, mailed through a real
local SMTP server (aiosmtpd, ``smtp_server`` in conftest.py).

One test executes the notebook; the other stops at the ``[email]`` check, before any REDCap
request or report folder. The audit mail's subject and body are unit-tested in test_mail.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from scenarios import PATIENTS, clean_history, plant_problems
from stamped import unstamped

from autoid_lib.cli import audit as audit_cli
from autoid_lib.hashing import sha512_hex
from autoid_lib.status import ExitStatus

RECIPIENT = "pacs-ops@example.org"


def kit_config(sb, tmp_path: Path, email_port: int | None = None) -> Path:
    """The sandbox's kit config, with an ``[email]`` table for ``email_port`` if given."""
    config = sb.write_kit_files(tmp_path / "kit", reports_dir=tmp_path / "reports")
    if email_port is not None:
        table = "\n".join(
            [
                "[email]",
                'smtp_host = "127.0.0.1"',
                f"smtp_port = {email_port}",
                'security = "none"',
                'sender = "autoid@example.org"',
                f'recipients = ["{RECIPIENT}"]',
                "timeout_s = 5",
            ]
        )
        config.write_text(config.read_text() + table + "\n")
    return config


def autoid_audit(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="autoid audit")
    audit_cli.add_arguments(parser)
    return audit_cli.run(parser.parse_args(list(argv)))


@pytest.mark.slow
def test_audit_email_sends_the_audit_summary_without_patient_data(
    sandbox, smtp_server, tmp_path, capsys
):
    clean_history(sandbox)
    plant_problems(sandbox)
    inbox, port = smtp_server()
    config = kit_config(sandbox, tmp_path, port)

    status = autoid_audit("--config", str(config), "--email", "--quiet")

    assert status == ExitStatus.OK
    (folder,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    assert folder.name.endswith("Z-audit")
    assert capsys.readouterr().out == f"{folder / 'report.html'}\n"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["mode"] == "audit" and summary["status"] == "attention"
    severities = sorted(a["severity"] for a in summary["anomalies"])
    assert severities == ["notice"] + ["problem"] * 5  # as planted (test_audit.py)

    [message] = inbox.messages()
    assert inbox.envelopes[0].rcpt_tos == [RECIPIENT]
    assert message["Subject"] == "[autoid] AUDIT NEEDS ATTENTION: 5 problems, 1 notice"
    assert summary["email"] == {
        "sent": True,
        "reason": "no previous run to compare with",  # send = on-change, the default
        "error": None,
        "subject": message["Subject"],
        "recipients": 1,
    }
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    for body in (text, html):
        assert "Studies with more than one transfer request" in body
        assert "Alpha" in body and str(folder / "report.html") in body
    identifiers = [*PATIENTS, *PATIENTS.values(), *map(sha512_hex, PATIENTS)]
    secrets = list(sandbox.tokens.values())
    raw = inbox.envelopes[0].original_content.decode("utf-8", "replace")
    for where, body in {"raw": raw, "text": text, "html": html}.items():
        assert [i for i in identifiers if i in body] == [], f"patient data in the {where} mail"
        assert [t for t in secrets if t in body] == [], f"API token in the {where} mail"
        assert "DOE^" not in body and "…2." not in body, f"a study in the {where} mail"


def test_audit_email_without_an_email_table_exits_2_and_does_nothing(sandbox, tmp_path, capsys):
    config = kit_config(sandbox, tmp_path)
    assert autoid_audit("--config", str(config), "--email") == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert unstamped(err).startswith("autoid audit: --email needs an [email] table")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "reports").exists()
    assert sandbox.total_requests() == 0
