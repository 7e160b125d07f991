"""Run-report mail: settings, send policy, composition and delivery through a real SMTP server.

A local aiosmtpd server (started per test on a free port) receives what ``smtplib`` sends;
the tests parse the received bytes with the ``email`` package. Nothing is mocked.
"""

from __future__ import annotations

import copy
import email
import email.policy
import json
import logging
import shutil
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_notebooks import write_notebook

from autoid_lib.errors import ConfigError
from autoid_lib.mail.send import (
    EmailSettings,
    compose_message,
    email_settings_from_config,
    find_previous_summary,
    notify,
    should_send,
    tls_context,
)

PASSWORD = "pw-7f3a9c-never-in-output"
CANARY_PATIENT = "PATID-CANARY-0042"
CANARY_UID = "1.2.826.0.1.3680043.99.424242"
CANARY_NAME = "Canary^Patient"
RUN = "20261128T063000Z-live"

SUMMARY = {
    "schema": 1,
    "status": "ok",
    "mode": "live",
    "started": "2026-11-28T06:30:00+00:00",
    "finished": "2026-11-28T06:30:12+00:00",
    "duration_s": 12.3,
    "window": {"begin": "2026-11-14 07:30:00", "end": "2026-11-28 07:30:00", "lookback_days": 14},
    "api_requests": 6,
    "transfers_created": 12,
    "ids_created": 5,
    "ids_reused": 7,
    "skipped": {},
    "anomalies": [],
    "projects": [
        {
            "project": "KNEE",
            "ae_title": "KNEEAE",
            "pattern": "K\\d{3}",
            "incoming": 10,
            "already_transferred": 3,
            "transfers_created": 7,
            "ids_reused": 2,
            "ids_created": 5,
            "skipped": 0,
            "capacity_size": 1000,
            "capacity_used": 120,
            "capacity_fraction": 0.12,
            "capacity_level": "ok",
            "shares_ae_title_with": [],
            "forecast": {
                "state": "forecast",
                "full_on": "2030-07-01",
                "text": "runs out around 2030-07-01 (2029-11-02 – 2031-06-15), at 4.1 new "
                "IDs/week over the last 8 weeks, from transfer requests",
            },
        }
    ],
    "error": None,
    "report": "report.html",
    "email": None,
    "detail": "summary",
}
ANOMALY = {
    "kind": "ambiguous_ae_title",
    "project": "KNEE",
    "message": "AE title KNEEAE is used by 2 auto-ID projects",
    "action": "Give each auto-ID project its own AE title in the Projects database",
}
ERROR = {
    "step": "read incoming",
    "type": "RedcapError",
    "message": "REDCap incoming: export records failed: HTTP 500",
}


def summary(**changes) -> dict:
    result = copy.deepcopy(SUMMARY)
    result.update(changes)
    return result


ATTENTION = summary(
    status="attention",
    transfers_created=3,
    anomalies=[ANOMALY] * 5,
    skipped={"empty patient ID": 2, "ambiguous AE title": 3},
)
FAILED = summary(status="failed", transfers_created=0, ids_created=0, error=ERROR)

AUDIT_RUN = "20261128T070000Z-audit"
MISSING = {
    "kind": "missing_transfer",
    "project": "KNEE, HIP",
    "severity": "problem",
    "count": 17,
    "message": "Studies that fell out of the run window without a transfer",
    "action": "Run `autoid run --lookback-days N` reaching back to the oldest study date",
}
MISMATCH = {
    "kind": "pattern_mismatch",
    "project": "HIP",
    "severity": "notice",
    "count": 2,
    "message": "Stored IDs that do not match their project's current pattern",
    "action": "Usually the pattern was changed on purpose: nothing to do",
}
SEVERAL = dict(
    MISSING,
    kind="several_transfers",
    project="KNEE",
    count=1,
    message="Studies with more than one transfer request",
    action="Delete the surplus transfers instances in Incoming",
)
AUDIT = {  # as AuditReport.summary() plus what audit_in_kernel and execute_notebook add
    "schema": 1,
    "kind": "audit",
    "mode": "audit",
    "status": "attention",
    "headline": "Needs attention — audit of all history: 17 studies that fell out …",
    "window": {"begin": "2026-11-14 07:00:00", "lookback_days": 14},
    "studies": 4321,
    "autoid_rows": 987,
    "findings": {"pattern_mismatch": 2, "missing_transfer": 17, "several_transfers": 1},
    "anomalies": [MISMATCH, MISSING, SEVERAL],
    "projects": [
        {
            "project": "KNEE",
            "ae_title": "KNEEAE",
            "pattern": "K\\d{3}",
            "studies": 3210,
            "transferred": 3193,
            "ids": 812,
        },
        {
            "project": "HIP",
            "ae_title": "HIPAE",
            "pattern": "H\\d{4}",
            "studies": 1100,
            "transferred": 1100,
            "ids": 175,
        },
    ],
    "pending_in_window": 3,
    "started": "2026-11-28T07:00:00+00:00",
    "api_requests": 4,
    "duration_s": 8.2,
    "error": None,
    "timings_s": {"notebook": 9.0},
    "report": "report.html",
    "notebook": "run.ipynb",
    "finished": "2026-11-28T07:00:10+00:00",
    "email": None,
}


def audit_summary(**changes) -> dict:
    result = copy.deepcopy(AUDIT)
    result.update(changes)
    return result


AUDIT_OK = audit_summary(status="ok", findings={}, anomalies=[])


# The real SMTP server is the ``smtp_server`` fixture of conftest.py.


def mail_settings(port: int, **changes) -> EmailSettings:
    base = EmailSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        security="none",
        sender="autoid@example.org",
        recipients=("pacs-ops@example.org", "pi@example.org"),
        send="always",
        timeout_s=5,
    )
    return replace(base, **changes)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "reports" / RUN
    folder.mkdir(parents=True)
    (folder / "report.html").write_text("<html><body>FULL REPORT MARKER</body></html>")
    return folder


def parts(message: email.message.EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return text, html


class TagCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attributes = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend((tag, name, value or "") for name, value in attrs)


def assert_mail_safe(html: str) -> None:
    collector = TagCollector()
    collector.feed(html)
    assert "script" not in collector.tags
    assert "style" not in collector.tags
    assert "link" not in collector.tags
    for tag, name, value in collector.attributes:
        assert not value.strip().lower().startswith(("data:", "javascript:")), (tag, name)
        assert not name.startswith("on"), (tag, name)
    assert len(html.encode("utf-8")) < 100_000


# --- delivery through the real server -----------------------------------------------------


def test_sent_mail_has_subject_both_alternatives_and_inline_styles(smtp_server, run_dir):
    inbox, port = smtp_server()
    result = notify(SUMMARY, run_dir, mail_settings(port))

    assert result["sent"] is True and result["error"] is None
    [received] = inbox.messages()
    assert received["Subject"] == "[autoid] OK: 12 transfers created, 0 anomalies"
    assert received.get_content_type() == "multipart/alternative"
    assert set(inbox.envelopes[0].rcpt_tos) == {"pacs-ops@example.org", "pi@example.org"}
    assert received["Auto-Submitted"] == "auto-generated"
    text, html = parts(received)
    assert "Transfers created: 12" in text
    assert 'style="' in html and "KNEEAE" in html and "K\\d{3}" in html
    assert "120 / 1,000" in html
    assert str(run_dir / "report.html") in html and str(run_dir / "report.html") in text
    assert_mail_safe(html)
    assert not [p for p in received.iter_attachments()]


def test_report_is_attached_only_when_configured(smtp_server, run_dir):
    inbox, port = smtp_server()
    notify(SUMMARY, run_dir, mail_settings(port))
    notify(SUMMARY, run_dir, mail_settings(port, attach_report=True))

    plain, attached = inbox.messages()
    assert list(plain.iter_attachments()) == []
    assert attached.get_content_type() == "multipart/mixed"
    [attachment] = attached.iter_attachments()
    assert attachment.get_filename() == "report.html"
    assert "FULL REPORT MARKER" in attachment.get_content()
    assert "FULL REPORT MARKER" not in parts(attached)[1]


def _footer(text: str) -> str:
    return " ".join(text.split()[-20:])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (summary(detail="full"), "detail = full"),
        (summary(detail=None), "does not say the report's detail level"),
        (AUDIT, "lists the studies of each finding"),
    ],
    ids=["full", "unknown", "audit"],
)
def test_a_report_with_study_uids_is_linked_never_attached(smtp_server, run_dir, data, why):
    """A full-detail run report or an audit report holds study UIDs: never in a mail."""
    (run_dir / "report.html").write_text(f"<html><body>{CANARY_UID}</body></html>")
    inbox, port = smtp_server()
    result = notify(data, run_dir, mail_settings(port, attach_report=True))

    assert result["sent"] is True
    [received] = inbox.messages()
    assert list(received.iter_attachments()) == []
    assert CANARY_UID not in received.as_string()
    text, html = parts(received)
    assert why in text and why in html
    assert str(run_dir / "report.html") in text  # linked instead
    assert "It never contains study-level rows, study UIDs" in _footer(text)


def test_the_footer_promise_leaves_out_an_attached_report(smtp_server, run_dir):
    inbox, port = smtp_server()
    notify(SUMMARY, run_dir, mail_settings(port, attach_report=True))
    notify(SUMMARY, run_dir, mail_settings(port))
    attached, plain = inbox.messages()
    assert len(list(attached.iter_attachments())) == 1
    for part in parts(attached):
        assert "Apart from the attached report, it never contains" in " ".join(part.split())
    for part in parts(plain):
        assert "Apart from" not in part
        assert "It never contains study-level rows, study UIDs" in " ".join(part.split())


def test_a_report_larger_than_the_limit_is_linked_not_attached(smtp_server, run_dir):
    inbox, port = smtp_server()
    notify(SUMMARY, run_dir, mail_settings(port, attach_report=True, attach_max_bytes=10))
    [received] = inbox.messages()
    assert list(received.iter_attachments()) == []
    assert "not attached" in parts(received)[0]


def test_report_url_base_links_the_report_instead_of_the_server_path(smtp_server, run_dir):
    inbox, port = smtp_server()
    base = "https://pacs-ops.example.org/autoid-reports"
    notify(SUMMARY, run_dir, mail_settings(port, report_url_base=base))
    text, html = parts(inbox.messages()[0])
    url = f"{base}/{RUN}/report.html"
    assert f'href="{url}"' in html and url in text
    assert str(run_dir) not in html


def test_refusing_server_is_reported_not_raised(smtp_server, run_dir):
    _, port = smtp_server(reply="550 5.7.1 Message rejected by policy")
    settings = mail_settings(port, username="autoid", password=_secret())
    result = notify(FAILED, run_dir, replace(settings, username=None, password=None))
    assert result["sent"] is False
    assert "550" in result["error"] and "rejected by policy" in result["error"]


def test_unreachable_server_is_reported_without_the_password(run_dir, caplog, closed_port):
    settings = mail_settings(closed_port, username="autoid", password=_secret())
    with caplog.at_level(logging.INFO, logger="autoid.mail"):
        result = notify(FAILED, run_dir, settings)
    assert result["sent"] is False
    assert "cannot reach 127.0.0.1" in result["error"]
    assert PASSWORD not in json.dumps(result) and PASSWORD not in caplog.text
    assert "mail not sent" in caplog.text


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_login_with_a_password_from_the_environment(smtp_server, run_dir, monkeypatch):
    inbox, port = smtp_server(
        authenticator=_authenticator, auth_required=True, auth_require_tls=False
    )
    monkeypatch.setenv("AUTOID_SMTP_PASSWORD", PASSWORD)
    settings = email_settings_from_config(
        {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "security": "none",
            "username": "autoid",
            "password": "env:AUTOID_SMTP_PASSWORD",
            "sender": "autoid@example.org",
            "recipients": ["pacs-ops@example.org"],
            "send": "always",
        }
    )
    assert PASSWORD not in repr(settings)
    result = notify(SUMMARY, run_dir, settings)
    assert result == {
        "sent": True,
        "reason": "send = always",
        "error": None,
        "subject": "[autoid] OK: 12 transfers created, 0 anomalies",
        "recipients": 1,
    }
    assert len(inbox.envelopes) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_wrong_password_is_reported_without_the_password(smtp_server, run_dir, caplog):
    inbox, port = smtp_server(
        authenticator=_authenticator, auth_required=True, auth_require_tls=False
    )
    wrong = "wrong-" + PASSWORD
    settings = mail_settings(port, username="autoid", password=_secret(wrong))
    with caplog.at_level(logging.DEBUG):
        result = notify(SUMMARY, run_dir, settings)
    assert result["sent"] is False and "refused the login of autoid" in result["error"]
    assert wrong not in result["error"] and wrong not in caplog.text
    assert inbox.envelopes == []


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_server_that_echoes_the_password_gets_it_masked(smtp_server, run_dir, caplog):
    """The password reaches the server here, and the server quotes it in its refusal: the
    error in summary.json and the kit's log lines show it masked."""

    def echo(server, session, envelope, mechanism, auth_data):
        return AuthResult(
            success=False,
            handled=False,
            message=f"535 5.7.8 {auth_data.password.decode()} is not the password of "
            f"{auth_data.login.decode()}",
        )

    inbox, port = smtp_server(authenticator=echo, auth_required=True, auth_require_tls=False)
    settings = mail_settings(port, username="autoid", password=_secret())
    with caplog.at_level(logging.DEBUG, logger="autoid"):
        result = notify(FAILED, run_dir, settings, previous=SUMMARY)

    assert result["sent"] is False and inbox.envelopes == []
    assert result["error"] == (
        f"127.0.0.1:{port} refused the login of autoid: 535 5.7.8 *** is not the password of autoid"
    )
    kit_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("autoid"))
    assert "mail not sent" in kit_log and "*** is not the password of autoid" in kit_log
    assert PASSWORD not in json.dumps(result) and PASSWORD not in kit_log


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return _make_certificate(tmp_path_factory, "localhost")


@pytest.fixture(scope="module")
def other_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A second self-signed certificate: another CA than ``certificate``'s."""
    return _make_certificate(tmp_path_factory, "other.localhost")


def _make_certificate(tmp_path_factory, common_name: str) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _server_tls(certificate) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def test_starttls_verifies_the_certificate_and_logs_in(smtp_server, run_dir, certificate):
    inbox, port = smtp_server(
        tls_context=_server_tls(certificate),
        require_starttls=True,
        authenticator=_authenticator,
        auth_required=True,
    )
    settings = mail_settings(
        port, security="starttls", username="autoid", password=_secret(), tls_ca_file=None
    )
    untrusted = notify(SUMMARY, run_dir, settings)
    assert untrusted["sent"] is False and "certificate" in untrusted["error"].lower()

    trusted = notify(SUMMARY, run_dir, replace(settings, tls_ca_file=str(certificate[0])))
    assert trusted["sent"] is True, trusted
    assert len(inbox.envelopes) == 1


def test_tls_ca_file_adds_to_the_system_trust_store(
    smtp_server, run_dir, certificate, other_certificate, monkeypatch
):
    """The server's certificate is trusted by the system (here: SSL_CERT_FILE); the site CA in
    tls_ca_file is another one. Adding it must not drop the system's CAs."""
    monkeypatch.setenv("SSL_CERT_FILE", str(other_certificate[0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    inbox, port = smtp_server(ssl_context=_server_tls(other_certificate))
    settings = mail_settings(port, security="tls", tls_ca_file=str(certificate[0]))

    subjects = {
        dict(field[0] for field in ca["subject"])["commonName"]
        for ca in tls_context(settings).get_ca_certs()
    }
    assert {"localhost", "other.localhost"} <= subjects
    result = notify(SUMMARY, run_dir, settings)
    assert result["sent"] is True, result
    assert len(inbox.envelopes) == 1


def test_implicit_tls(smtp_server, run_dir, certificate):
    inbox, port = smtp_server(ssl_context=_server_tls(certificate))
    settings = mail_settings(port, security="tls", tls_ca_file=str(certificate[0]))
    assert notify(SUMMARY, run_dir, settings)["sent"] is True
    assert len(inbox.envelopes) == 1


def _secret(value: str = PASSWORD):
    from autoid_lib.secret import Secret

    return Secret("env:TEST", value)


def _authenticator(server, session, envelope, mechanism, auth_data):
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"autoid"
        and auth_data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)


@pytest.mark.slow
def test_a_recorded_run_says_its_detail_and_its_full_report_is_not_attached(smtp_server, tmp_path):
    """execute_notebook puts the run's ``detail`` parameter into summary.json, which is how the
    mail knows a ``--detail full`` report (with study UIDs) must not be attached."""

    from autoid_lib.records.notebook_run import execute_notebook

    kernel_summary = tmp_path / "kernel-summary.json"
    kernel_summary.write_text(json.dumps({k: v for k, v in SUMMARY.items() if k != "detail"}))
    write_notebook(
        tmp_path / "full.ipynb",
        'detail = "summary"\noutput_dir = ""',
        f"import shutil\nshutil.copy({str(kernel_summary)!r}, output_dir + '/summary.json')\n"
        f"print({CANARY_UID!r})  # a full report's study UID",
    )
    inbox, port = smtp_server()
    settings = mail_settings(port, attach_report=True)

    record = execute_notebook(
        tmp_path / "full.ipynb",
        {"detail": "full"},
        mode="live",
        reports_dir=tmp_path / "reports",
        progress=False,
        notify=lambda data, folder: notify(data, folder, settings),
    )

    assert CANARY_UID in record.report.read_text()
    written = json.loads((record.path / "summary.json").read_text())
    assert written["detail"] == record.summary["detail"] == "full"
    assert written["email"]["sent"] is True
    [received] = inbox.messages()
    assert list(received.iter_attachments()) == []
    assert CANARY_UID not in received.as_string()
    assert "detail = full" in parts(received)[0]


# --- noise control --------------------------------------------------------------------------


def test_a_new_failure_sends_under_on_attention(smtp_server, run_dir):
    inbox, port = smtp_server()
    now = datetime(2026, 11, 28, 6, 30, 5, tzinfo=UTC)
    settings = mail_settings(port, send="on-attention")
    result = notify(FAILED, run_dir, settings, previous=SUMMARY, now=now)
    assert result["sent"] is True and result["reason"] == "the run failed"
    assert result["failure_mailed"] == "2026-11-28T06:30:05+00:00"
    [received] = inbox.messages()
    assert received["Subject"] == "[autoid] FAILED at read incoming: REDCap answered an error"
    text, html = parts(received)
    assert "REDCap incoming: export records failed: HTTP 500" in text
    assert "RedcapError" in html


def _record_run(reports: Path, name: str, data: Mapping, email_entry: Mapping | None) -> Path:
    folder = reports / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.html").write_text("<html></html>")
    (folder / "summary.json").write_text(json.dumps(dict(data, email=email_entry)))
    return folder


def _moment(name: str) -> datetime:
    return datetime.strptime(name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@pytest.mark.parametrize("policy", ["on-change", "on-attention"])
def test_an_outage_mails_once_then_a_reminder_every_repeat_failure_hours(
    smtp_server, tmp_path, policy
):
    """REDCap down for 8 hours, a run every 5 minutes: 2 mails (the failure and one reminder),
    then the mail that it works again (on-change), not one mail per run."""
    inbox, port = smtp_server()
    settings = mail_settings(port, send=policy, repeat_failure_hours=6)
    reports = tmp_path / "reports"
    start = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    _record_run(reports, "20261128T055500Z-live", SUMMARY, {"sent": True, "error": None})
    sent_at = []
    for run in range(8 * 12):
        moment = start + timedelta(minutes=5 * run)
        folder = _record_run(reports, f"{moment:%Y%m%dT%H%M%S}Z-live", FAILED, None)
        entry = notify(FAILED, folder, settings, now=moment)
        _record_run(reports, folder.name, FAILED, entry)
        if entry["sent"]:
            sent_at.append(moment)
        else:
            assert entry["error"] is None and "failed again at read incoming" in entry["reason"]
            assert entry["failure_mailed"] == sent_at[-1].isoformat()
    assert sent_at == [start, start + timedelta(hours=6)]
    assert len(inbox.envelopes) == 2
    assert (
        "reminder"
        in json.loads((reports / f"{sent_at[1]:%Y%m%dT%H%M%S}Z-live" / "summary.json").read_text())[
            "email"
        ]["reason"]
    )

    moment = start + timedelta(hours=8)
    folder = _record_run(reports, f"{moment:%Y%m%dT%H%M%S}Z-live", SUMMARY, None)
    entry = notify(SUMMARY, folder, settings, now=moment)
    assert entry["sent"] is (policy == "on-change")  # it works again: status changed
    assert "failure_mailed" not in entry


def test_a_failure_at_another_step_or_of_another_type_is_new():
    now = datetime(2026, 11, 28, 7, 0, tzinfo=UTC)
    mailed = {"sent": True, "error": None, "failure_mailed": "2026-11-28T06:55:00+00:00"}
    before = dict(FAILED, email=mailed)
    other_step = summary(status="failed", error=dict(ERROR, step="write"))
    other_type = summary(status="failed", error=dict(ERROR, type="Timeout"))
    other_text = summary(status="failed", error=dict(ERROR, message="HTTP 502"))
    for policy in ("on-change", "on-attention"):
        assert should_send(FAILED, before, policy, now=now)[0] is False
        assert should_send(other_text, before, policy, now=now)[0] is False  # same step/type
        assert should_send(other_step, before, policy, now=now) == (True, "the run failed")
        assert should_send(other_type, before, policy, now=now) == (True, "the run failed")
        assert should_send(FAILED, SUMMARY, policy, now=now) == (True, "the run failed")
        assert should_send(FAILED, None, policy, now=now) == (True, "the run failed")
        # the same failure, but no record of a mail about it (e.g. a run without --email)
        assert should_send(FAILED, FAILED, policy, now=now)[0] is True
        late = now + timedelta(hours=5, minutes=55)
        assert should_send(FAILED, before, policy, now=late)[0] is True
        assert should_send(FAILED, before, policy, now=late, repeat_failure_hours=7)[0] is False
    assert should_send(FAILED, before, "always", now=now) == (True, "the run failed")


def test_a_change_whose_mail_failed_is_mailed_by_the_next_run(smtp_server, tmp_path):
    """The SMTP server was down when the anomalies appeared: the next, identical run must not
    say "nothing changed" (it compares with the last run whose mail did not fail)."""
    inbox, port = smtp_server()
    reports = tmp_path / "reports"
    quiet = summary(transfers_created=0, ids_created=0, ids_reused=4)
    noisy = dict(ATTENTION, transfers_created=0, ids_created=0)
    _record_run(reports, "20261128T062000Z-live", quiet, {"sent": True, "error": None})
    _record_run(
        reports,
        "20261128T062500Z-live",
        noisy,
        {"sent": False, "reason": "status changed", "error": "cannot reach smtp: refused"},
    )
    current = _record_run(reports, "20261128T063000Z-live", noisy, None)

    result = notify(noisy, current, mail_settings(port, send="on-change"))
    assert result["sent"] is True
    assert result["reason"] == "status changed from ok to attention"
    assert len(inbox.envelopes) == 1

    # once mailed, the next identical run is quiet again
    entry = dict(result)
    _record_run(reports, current.name, noisy, entry)
    later = _record_run(reports, "20261128T063500Z-live", noisy, None)
    assert notify(noisy, later, mail_settings(port, send="on-change"))["sent"] is False


def test_previous_summary_passes_over_runs_whose_mail_failed(tmp_path):
    reports = tmp_path / "reports"
    entries = {
        "20261128T061000Z-live": {"sent": True, "error": None},
        "20261128T061500Z-live": {"sent": True, "error": "some recipients refused: x (550)"},
        "20261128T062000Z-live": {"sent": False, "reason": "nothing changed", "error": None},
        "20261128T062500Z-live": None,  # no --email
        "20261128T063000Z-live": {"sent": False, "reason": None, "error": "notify hook: Boom"},
        "20261128T063500Z-live": {"sent": False, "reason": "x", "error": "cannot reach smtp"},
    }
    for name, entry in entries.items():
        _record_run(reports, name, {"n": name}, entry)
    names = list(entries)
    expected = {  # current run -> the previous run it is compared with
        names[1]: names[0],  # sent, even if a recipient refused
        names[2]: names[1],
        names[3]: names[2],  # deliberately not sent
        names[4]: names[3],  # no e-mail step
        names[5]: names[3],  # the hook failed: passed over
        "20261128T064000Z-live": names[3],  # two failed mails in a row: both passed over
    }
    for current, previous in expected.items():
        assert find_previous_summary(reports, current)["n"] == previous, current


def test_unchanged_run_sends_nothing_under_on_change(smtp_server, tmp_path):
    inbox, port = smtp_server()
    reports = tmp_path / "reports"
    quiet = summary(transfers_created=0, ids_created=0, ids_reused=4)
    for name in ("20261128T062500Z-live", "20261128T063000Z-live"):
        (reports / name).mkdir(parents=True)
        (reports / name / "summary.json").write_text(json.dumps(quiet))
    (reports / "20261128T062900Z-dry").mkdir()  # another mode: not the previous run

    result = notify(quiet, reports / "20261128T063000Z-live", mail_settings(port, send="on-change"))
    assert result == {
        "sent": False,
        "reason": "nothing changed since the previous run",
        "error": None,
    }
    assert inbox.envelopes == []


def test_previous_summary_is_the_latest_earlier_run_of_the_same_mode(tmp_path):
    reports = tmp_path / "reports"
    runs = {
        "20261128T061000Z-live": {"n": 1},
        "20261128T062000Z-live": {"n": 2},
        "20261128T062500Z-live": None,  # no summary: passed over
        "20261128T062700Z-dry": {"n": 3},
        "20261128T063000Z-live": {"n": 4},  # the current run
        "20261128T064000Z-live": {"n": 5},  # later: ignored
        "notes": {"n": 6},
    }
    for name, content in runs.items():
        (reports / name).mkdir(parents=True)
        if content is not None:
            (reports / name / "summary.json").write_text(json.dumps(content))
    assert find_previous_summary(reports, reports / "20261128T063000Z-live") == {"n": 2}
    assert find_previous_summary(reports, "20261128T063000Z-dry") == {"n": 3}
    assert find_previous_summary(reports, "20261128T061000Z-live") is None


anomalies = st.lists(
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["ambiguous_ae_title", "invalid_pattern", "capacity"]),
            "project": st.sampled_from(["KNEE", "HIP", ""]),
            "message": st.text(max_size=12),
        }
    ),
    max_size=4,
)
summaries = st.fixed_dictionaries(
    {
        "status": st.sampled_from(["ok", "attention", "failed"]),
        "mode": st.sampled_from(["live", "dry"]),
        "transfers_created": st.integers(0, 30),
        "ids_created": st.integers(0, 30),
        "anomalies": anomalies,
    }
)
policies = st.sampled_from(["always", "on-change", "on-attention"])


errors = st.none() | st.fixed_dictionaries(
    {
        "step": st.sampled_from(["read incoming", "write", "notebook"]),
        "type": st.sampled_from(["RedcapError", "TimeoutError"]),
        "message": st.text(max_size=8),
    }
)


@given(summaries, st.none() | summaries, errors, errors, policies)
def test_a_failure_sends_under_always_and_when_it_is_new(
    current, previous, error, previous_error, policy
):
    current.update(status="failed", error=error)
    if previous is not None:
        previous.update(
            error=previous_error,
            email={"sent": True, "error": None, "failure_mailed": "2026-11-28T06:00:00+00:00"},
        )
    now = datetime(2026, 11, 28, 6, 5, tzinfo=UTC)
    new = (
        previous is None
        or previous["status"] != "failed"
        or (error or {}).get("step") != (previous_error or {}).get("step")
        or (error or {}).get("type") != (previous_error or {}).get("type")
    )
    assert should_send(current, previous, policy, now=now)[0] is (policy == "always" or new)


@given(summaries, policies)
def test_always_sends_and_on_attention_sends_when_a_human_must_act(current, policy):
    send, reason = should_send(current, current, policy)
    assert reason
    if policy == "always":
        assert send
    if policy == "on-attention":
        assert send == (current["status"] != "ok")


@given(summaries, st.randoms())
def test_identical_runs_with_nothing_created_never_send_under_on_change(current, random):
    current["status"] = random.choice(["ok", "attention"])
    if current["mode"] == "live":
        current["transfers_created"] = current["ids_created"] = 0
    previous = copy.deepcopy(current)
    random.shuffle(previous["anomalies"])  # order does not matter, only the set
    assert should_send(current, previous, "on-change") == (
        False,
        "nothing changed since the previous run",
    )


@given(summaries, summaries)
def test_on_change_sends_when_anomalies_differ_or_status_changes(current, previous):
    if current["status"] == "failed":
        return
    key = lambda s: {(a["kind"], a["project"], a["message"]) for a in s["anomalies"]}  # noqa: E731
    send, _ = should_send(current, previous, "on-change")
    if key(current) != key(previous) or current["status"] != previous["status"]:
        assert send


def test_on_change_without_a_previous_run_sends():
    assert should_send(summary(transfers_created=0, ids_created=0), None, "on-change") == (
        True,
        "no previous run to compare with",
    )


def test_previous_audit_is_found_among_runs_by_its_mode(tmp_path):
    reports = tmp_path / "reports"
    runs = {
        "20261121T070000Z-audit": {"n": 1},
        "20261128T065500Z-live": {"n": 2},  # a run after the last audit: not comparable
        AUDIT_RUN: {"n": 3},
    }
    for name, content in runs.items():
        (reports / name).mkdir(parents=True)
        (reports / name / "summary.json").write_text(json.dumps(content))
    assert find_previous_summary(reports, reports / AUDIT_RUN) == {"n": 1}


def test_on_change_compares_an_audit_with_the_previous_audit():
    assert should_send(AUDIT, AUDIT, "on-change") == (
        False,
        "nothing changed since the previous run",
    )
    assert should_send(AUDIT_OK, AUDIT_OK, "on-change")[0] is False
    assert should_send(AUDIT, None, "on-change") == (True, "no previous run to compare with")
    assert should_send(AUDIT, AUDIT_OK, "on-change")[0] is True  # status and findings
    more = audit_summary(findings=dict(AUDIT["findings"], missing_transfer=18))
    more["anomalies"][1]["count"] = 18
    assert should_send(more, AUDIT, "on-change") == (
        True,
        "the findings' counts differ from the previous audit",
    )
    fixed = audit_summary(findings={"missing_transfer": 17}, anomalies=[MISSING])
    assert should_send(fixed, AUDIT, "on-change")[0] is True  # two findings disappeared


def test_on_attention_treats_an_audit_as_a_run():
    assert should_send(AUDIT_OK, None, "on-attention") == (
        False,
        "status ok and send = on-attention",
    )
    assert should_send(AUDIT, AUDIT, "on-attention") == (True, "status attention")


def test_unknown_policy_is_a_config_error():
    with pytest.raises(ConfigError, match="on-change"):
        should_send(SUMMARY, None, "sometimes")


# --- composition ----------------------------------------------------------------------------


def _compose(data: Mapping, run: str = RUN, **changes) -> email.message.EmailMessage:
    settings = replace(mail_settings(25), **changes)
    return compose_message(
        data,
        settings,
        Path("/srv/reports") / run / "report.html",
        now=datetime(2026, 11, 28, tzinfo=UTC),
    )


@pytest.mark.parametrize(
    ("data", "subject"),
    [
        (SUMMARY, "[autoid] OK: 12 transfers created, 0 anomalies"),
        (ATTENTION, "[autoid] NEEDS ATTENTION: 3 transfers created, 5 anomalies"),
        (FAILED, "[autoid] FAILED at read incoming: REDCap answered an error"),
        (
            summary(mode="dry", transfers_created=1),
            "[autoid] DRY RUN OK: 1 transfer planned, 0 anomalies",
        ),
        (summary(status="failed", mode="dry", error=None), "[autoid] DRY RUN FAILED"),
    ],
)
def test_subject_shows_status_and_counts(data, subject):
    assert _compose(data)["Subject"] == subject


def test_attention_mail_lists_anomalies_with_what_to_do_and_skip_reasons():
    text, html = parts(_compose(ATTENTION))
    for body in (text, html):
        assert "AE title KNEEAE is used by 2 auto-ID projects" in body
        assert "Give each auto-ID project its own AE title" in body
        assert "empty patient ID" in body and "ambiguous AE title" in body
    assert "#fef3c7" in html  # the amber banner


def test_large_summary_stays_under_100_kb_and_says_what_was_left_out():
    projects = [
        dict(
            SUMMARY["projects"][0], project=f"PROJECT_{i:03d}_" + "X" * 40, capacity_level="warning"
        )
        for i in range(200)
    ]
    many = [
        dict(ANOMALY, message=f"anomaly {i} " + "m" * 200, action="a" * 200) for i in range(500)
    ]
    big = summary(status="attention", projects=projects, anomalies=many)
    message = _compose(big)
    text, html = parts(message)
    assert_mail_safe(html)
    assert "more in the full report" in html and "more projects in the full report" in html
    assert "more in the full report" in text
    assert message["Subject"].endswith("500 anomalies")
    assert len(message.as_bytes()) < 200_000


def test_composer_reads_only_contract_keys_and_ignores_planted_patient_data():
    planted = summary(status="attention", anomalies=[dict(ANOMALY, patient_id=CANARY_PATIENT)])
    planted["studies"] = [
        {"patient_id": CANARY_PATIENT, "study_instance_uid": CANARY_UID, "name": CANARY_NAME}
    ]
    planted["projects"][0]["patient_ids"] = [CANARY_PATIENT]
    planted["window"]["patient"] = CANARY_NAME
    planted["error"] = dict(ERROR, traceback=f"KeyError: {CANARY_UID}")
    recorded = _Recording(planted)

    message = _compose(recorded, attach_report=False)

    raw = message.as_string()
    text, html = parts(message)
    for canary in (CANARY_PATIENT, CANARY_UID, CANARY_NAME):
        assert canary not in raw and canary not in text and canary not in html
    assert recorded.read <= CONTRACT_KEYS, recorded.read - CONTRACT_KEYS


CONTRACT_KEYS = {
    *SUMMARY,
    *(f"window.{k}" for k in SUMMARY["window"]),
    *(f"projects.{k}" for k in SUMMARY["projects"][0]),
    *(f"anomalies.{k}" for k in ANOMALY),
    *(f"error.{k}" for k in ERROR),
    "anomalies.seen",  # anomaly_memory: "new" / "open since …"
    "anomaly_changes",
    "error.kind",  # failures: the cause and what to do
    "error.cause",
    "error.action",
    "environment",  # which kit, REDCap host and config produced the run
    "timings_s",  # the whole command's wall time (timings_s.command)
    "verified",  # the re-read after writing
}


def test_the_mail_says_what_is_new_since_the_last_run_and_what_was_resolved():
    changes = {
        "since": "2026-11-27T06:30:00+00:00",
        "new": 0,
        "still_open": 1,
        "resolved": [
            {"key": "invalid_pattern|ABC", "kind": "invalid_pattern", "project": "ABC",
             "message": "naming pattern cannot generate IDs", "first_seen": "2026-11-01T06:30:00"}
        ],
        "changed": True,
        "text": "since the last run (2026-11-27 06:30 UTC): 0 new, 1 still open, 1 resolved",
    }  # fmt: skip
    seen = dict(ANOMALY, seen="open since 2026-11-07 (3 weeks)")
    message = _compose(summary(status="attention", anomalies=[seen], anomaly_changes=changes))
    text, html = parts(message)
    for body in (text, html):
        assert "Since the last run (2026-11-27 06:30 UTC): 0 new, 1 still open, 1 resolved" in body
        assert "open since 2026-11-07 (3 weeks)" in body
        assert "naming pattern cannot generate IDs" in body
    assert "RESOLVED SINCE THE LAST RUN (1)" in text


class _Recording(Mapping):
    """A summary that remembers which keys were read (``projects.ae_title`` for nested ones)."""

    def __init__(self, data: Mapping, prefix: str = "", read: set | None = None):
        self._data, self._prefix = data, prefix
        self.read = set() if read is None else read

    def __getitem__(self, key):
        self.read.add(self._prefix + key)
        value = self._data[key]
        if key in ("window", "error") and isinstance(value, Mapping):
            return _Recording(value, f"{key}.", self.read)
        if key in ("projects", "anomalies") and isinstance(value, list):
            return [_Recording(v, f"{key}.", self.read) for v in value]
        return value

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)


_FRAGMENTS = ["<script>alert(1)</script>", "data:image/png;base64,AAAA", "<style>", "javascript:"]
hostile_text = st.lists(
    st.sampled_from(_FRAGMENTS) | st.text(alphabet="abc <>\"'&;:/=\n", max_size=8), max_size=5
).map("".join)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.fixed_dictionaries(
        {
            "status": st.sampled_from(["ok", "attention", "failed", "weird"]),
            "mode": st.sampled_from(["live", "dry", "audit", None]),
            "transfers_created": st.integers(-5, 10**9) | st.none() | hostile_text,
            "duration_s": st.floats(allow_nan=True, allow_infinity=True) | st.none(),
            "anomalies": st.lists(
                st.fixed_dictionaries({"project": hostile_text, "message": hostile_text}),
                max_size=5,
            ),
            "projects": st.lists(
                st.fixed_dictionaries(
                    {
                        "project": hostile_text,
                        "pattern": hostile_text,
                        "capacity_fraction": st.floats() | st.none(),
                        "skipped": st.integers(0, 5)
                        | st.dictionaries(hostile_text, st.integers(0, 5)),
                    }
                ),
                max_size=5,
            ),
            "error": st.none()
            | st.fixed_dictionaries({"step": hostile_text, "message": hostile_text}),
            "skipped": st.dictionaries(hostile_text, st.integers(0, 100), max_size=3),
        }
    )
)
def test_any_summary_composes_into_mail_safe_html(data):
    message = _compose(data)
    assert_mail_safe(parts(message)[1])
    assert "\n" not in message["Subject"]


# --- the audit's mail -----------------------------------------------------------------------


def _compose_audit(data: Mapping, **changes) -> email.message.EmailMessage:
    return _compose(data, AUDIT_RUN, **changes)


@pytest.mark.parametrize(
    ("data", "subject"),
    [
        (AUDIT_OK, "[autoid] AUDIT OK: no findings"),
        (AUDIT, "[autoid] AUDIT NEEDS ATTENTION: 2 problems, 1 notice"),
        (
            audit_summary(anomalies=[MISMATCH], findings={"pattern_mismatch": 2}),
            "[autoid] AUDIT NEEDS ATTENTION: 0 problems, 1 notice",
        ),
        (
            audit_summary(status="failed", error=dict(ERROR, step="audit")),
            "[autoid] AUDIT FAILED at audit",
        ),
        (audit_summary(status="failed", error=None), "[autoid] AUDIT FAILED"),
    ],
)
def test_audit_subject_shows_status_and_findings(data, subject):
    assert _compose_audit(data)["Subject"] == subject


def test_audit_mail_lists_findings_with_counts_and_what_to_do_and_projects():
    message = _compose_audit(AUDIT)
    text, html = parts(message)
    assert_mail_safe(html)
    assert 'style="' in html and "#fef3c7" in html  # inlined, the amber banner
    for body in (text, html):
        assert "AUDIT" in body and "NEEDS ATTENTION" in body
        for finding in (MISSING, MISMATCH, SEVERAL):
            assert finding["message"] in body
        assert "Delete the surplus transfers instances in Incoming" in body
        assert "4,321" in body and "987" in body  # studies audited, AutoID rows
        assert "3,193" in body and "812" in body and "HIPAE" in body  # per-project counts
        assert str(Path("/srv/reports") / AUDIT_RUN / "report.html") in body
        assert "transfers created" not in body.lower()  # no run fields
    assert "Run `autoid run --lookback-days N`" in text
    assert "K\\d{3}" in text and "K\\d{3}" in html
    assert (
        "PROBLEM [KNEE, HIP] Studies that fell out of the run window without a transfer: 17" in text
    )
    assert "NOTICE [HIP] Stored IDs that do not match their project's current pattern: 2" in text
    # problems before notices, in summary order otherwise
    order = [text.index(f["message"]) for f in (MISSING, SEVERAL, MISMATCH)]
    assert order == sorted(order)
    assert "built from the audit's summary only" in text
    assert "built from the audit's summary only" in html


def test_audit_finding_shows_its_whole_what_to_do():
    action = "Fix the reason, then run autoid run --lookback-days N. " * 8 + "END OF ACTION"
    assert len(action) > 400
    text, html = parts(_compose_audit(audit_summary(anomalies=[dict(MISSING, action=action)])))
    assert action in text and action in html


def test_clean_audit_mail_says_nothing_was_found():
    text, html = parts(_compose_audit(AUDIT_OK))
    assert_mail_safe(html)
    assert "#dcfce7" in html  # the green banner
    for body in (text, html):
        assert "Nothing found" in body and "KNEEAE" in body
        assert "What to do" not in body


def test_failed_audit_mail_names_the_step_and_error():
    failed = audit_summary(status="failed", anomalies=[], projects=[], error=ERROR)
    text, html = parts(_compose_audit(failed))
    assert_mail_safe(html)
    for body in (text, html):
        assert "The audit only reads: nothing was written" in body
        assert "REDCap incoming: export records failed: HTTP 500" in body
        assert "Nothing found" not in body
    assert "#fee2e2" in html


def test_large_audit_stays_under_100_kb_and_says_what_was_left_out():
    projects = [
        dict(AUDIT["projects"][0], project=f"PROJECT_{i:03d}_" + "X" * 40) for i in range(400)
    ]
    findings = [
        dict(MISSING, kind=f"kind_{i}", message="m" * 290, action="a" * 290) for i in range(80)
    ]
    text, html = parts(_compose_audit(audit_summary(projects=projects, anomalies=findings)))
    assert_mail_safe(html)
    # the audit's report (any detail) lists every finding and project: "the report", not "full"
    assert "more projects in the report" in html and "more in the report" in text


def test_audit_composer_reads_only_contract_keys_and_ignores_planted_patient_data():
    planted = audit_summary(anomalies=[dict(MISSING, patient_id=CANARY_PATIENT)])
    planted["studies_table"] = [
        {"patient_id": CANARY_PATIENT, "study_instance_uid": CANARY_UID, "name": CANARY_NAME}
    ]
    planted["pending"] = [{"study_uid": CANARY_UID}]
    planted["projects"][0]["patient_ids"] = [CANARY_PATIENT]
    planted["projects"][1]["study_uid"] = CANARY_UID
    planted["window"]["patient"] = CANARY_NAME
    planted["findings"][CANARY_UID] = 1  # a count keyed by a UID: counts are not shown
    planted["headline"] = f"audit of {CANARY_NAME}"
    planted["error"] = dict(ERROR, traceback=f"KeyError: {CANARY_UID}")
    recorded = _Recording(planted)

    message = _compose_audit(recorded, attach_report=False)

    raw = message.as_string()
    text, html = parts(message)
    for canary in (CANARY_PATIENT, CANARY_UID, CANARY_NAME):
        assert canary not in raw and canary not in text and canary not in html
    assert recorded.read <= AUDIT_CONTRACT_KEYS, recorded.read - AUDIT_CONTRACT_KEYS
    assert "Studies that fell out of the run window without a transfer" in text  # real output


AUDIT_CONTRACT_KEYS = {
    "mode",
    "status",
    "started",
    "duration_s",
    "window",
    "window.begin",
    "window.lookback_days",
    "api_requests",
    "studies",
    "autoid_rows",
    "pending_in_window",
    "anomalies",
    "projects",
    "error",
    *(f"anomalies.{k}" for k in MISSING),
    *(f"projects.{k}" for k in AUDIT["projects"][0]),
    *(f"error.{k}" for k in ERROR),
    "error.kind",  # failures: the cause and what to do
    "error.cause",
    "error.action",
    "environment",  # which kit, REDCap host and config produced the audit
    "timings_s",  # the whole command's wall time (timings_s.command)
    "detail",  # what the report it links shows
}


# --- settings -------------------------------------------------------------------------------

GOOD = {
    "smtp_host": "smtp.example.org",
    "sender": "autoid@example.org",
    "recipients": ["pacs-ops@example.org"],
}


def test_settings_defaults():
    settings = email_settings_from_config(GOOD)
    assert (settings.smtp_port, settings.security, settings.send) == (587, "starttls", "on-change")
    assert settings.attach_report is False and settings.timeout_s == 30
    assert settings.repeat_failure_hours == 6
    assert email_settings_from_config(dict(GOOD, repeat_failure_hours=0.5)).repeat_failure_hours
    assert email_settings_from_config(dict(GOOD, timeout_s=1)).timeout_s == 1
    assert settings.password is None and settings.report_url_base is None
    assert email_settings_from_config(dict(GOOD, security="tls")).smtp_port == 465


def test_password_file_reference(tmp_path):
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    settings = email_settings_from_config(dict(GOOD, username="autoid", password=f"file:{secret}"))
    assert settings.password.reveal() == PASSWORD
    assert PASSWORD not in repr(settings)


@pytest.mark.parametrize(
    ("changes", "fix"),
    [
        ({"smtp_host": ""}, 'smtp_host = "smtp.example.org"'),
        ({"smtp_port": "587"}, "port number"),
        ({"smtp_port": 70000}, "port number"),
        ({"security": "ssl"}, "none, starttls, tls"),
        ({"send": "sometimes"}, "always, on-change, on-attention"),
        ({"recipients": "ops@example.org"}, "non-empty list"),
        ({"recipients": []}, "non-empty list"),
        ({"recipients": ["ops@example.org, evil@example.org"]}, "plain address"),
        ({"sender": "autoid"}, "plain address"),
        ({"attach_report": "yes"}, "true or false"),
        ({"timeout_s": 0}, "seconds"),
        ({"timeout_s": 0.5}, "between 1 and 600"),
        ({"timeout_s": 601}, "between 1 and 600"),
        ({"repeat_failure_hours": 0}, "repeat_failure_hours"),
        ({"repeat_failure_hours": -6}, "repeat_failure_hours"),
        ({"repeat_failure_hours": "6"}, "repeat_failure_hours"),
        ({"repeat_failure_hours": True}, "repeat_failure_hours"),
        ({"repeat_failure_hours": float("inf")}, "repeat_failure_hours"),
        ({"repeat_failure_hours": float("nan")}, "repeat_failure_hours"),
        ({"report_url_base": "pacs-ops.example.org/r"}, "https://"),
        ({"username": "autoid", "password": "hunter2"}, "env:VARIABLE"),
        ({"username": "autoid", "password": "env:AUTOID_TEST_UNSET_VARIABLE"}, "not set"),
        ({"username": "autoid"}, "username and password go together"),
        ({"smtp_hots": "typo"}, "unknown key(s) smtp_hots"),
        ({"tls_ca_file": "/nonexistent/ca.pem"}, "does not exist"),
    ],
)
def test_invalid_settings_name_the_fix(changes, fix, monkeypatch):
    monkeypatch.delenv("AUTOID_TEST_UNSET_VARIABLE", raising=False)
    with pytest.raises(ConfigError) as caught:
        email_settings_from_config(dict(GOOD, **changes))
    assert fix in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_mail_shows_each_projects_forecast_with_its_basis():
    text, html = parts(_compose(SUMMARY))
    sentence = SUMMARY["projects"][0]["forecast"]["text"]
    assert sentence in text
    assert "at 4.1 new IDs/week over the last 8 weeks, from transfer requests" in html
    no_forecast = copy.deepcopy(SUMMARY)
    no_forecast["projects"][0]["forecast"] = None  # a summary written before the forecast
    text, _ = parts(_compose(no_forecast))
    assert "runs out" not in text


def test_a_run_that_failed_before_planning_shows_a_dash_and_what_to_do():
    error = {"step": "read projects", "type": "RedcapError", "message": "REDCap refused the token",
             "kind": "token_refused"}  # fmt: skip
    failed = summary(status="failed", error=error, studies_in_window=0, transfers_created=0)
    text, html = parts(_compose(failed))
    assert "Transfers created: —" in text and "IDs created:       —" in text
    # issue 24, item 6: the text part said "Need attention: 0" where the HTML said "—", and
    # "Nothing after this step was written" where the report said something else
    assert "Need attention:    —" in text
    written = "What was written: nothing: the run stops before any write when a read or the plan"
    for body in (text, html):
        assert "REDCap refused the API token" in body and "What to do:" in body
        assert written in body and "Nothing after this step" not in body
