"""Issue 24, items 2 and 6: a run that backs off because another run holds the REDCap lease
(exit 3) is a yield, not a failure, on every screen; a run that stopped before planning says
once, in one line, that there is nothing to list.

Real runs (``autoid run`` in-process, the real notebook) against the sandbox, a planted live
ticket of another installation (as tests/test_lease.py plants them), a real SMTP server
(aiosmtpd), a real ping server, and the metrics read by prometheus_client's own parser.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from test_lease import plant_ticket
from test_mail_history import FAILED, QUIET, T0, run, settings_for
from test_monitoring import metrics
from test_monitoring import ping_server as ping_server  # a fixture: used by name
from test_run_email import autoid_run, email_table, kit_config

from autoid_lib.mail.send import notify
from autoid_lib.records.folders import run_folders
from autoid_lib.records.last_success import FILE_NAME as LAST_SUCCESS
from autoid_lib.status import ExitStatus
from autoid_lib.vocab import YIELD_EXIT, YIELD_TODO, Status, nothing_to_list

NEW_STUDY = {
    "study_instance_uid": "1.2.826.24.2",
    "study_aetitle_addressed": "ABCTRIAL",
    "study_patient_id": "YIELD^NEW",
    "study_date": "20261201",
}
SECTIONS = ("Projects", "Needs a human", "Studies", "Incoming studies per day", "ID capacity")


def _sections_shown(report: str) -> list[str]:
    """The plan's section headings the report shows (nbconvert: ``<h2 id=...>Projects``)."""
    return [name for name in SECTIONS if re.search(rf"<h2[^>]*>{re.escape(name)}\b", report)]


def _folders(reports: Path) -> list[Path]:
    return [path for path, _ in run_folders(reports)]


def _monitored_config(sb, tmp_path: Path, port: int, textfile: Path, ping_url: str) -> Path:
    """A site that mails on failure or attention (not on news), with metrics and pings."""
    monitoring = f'[monitoring]\ntextfile = "{textfile}"\nping_url = "{ping_url}"\n'
    return kit_config(sb, tmp_path, email_table(port, send='"on-attention"') + monitoring)


def test_a_run_that_yields_to_another_is_shown_as_a_yield_on_every_screen(
    demo_sandbox, smtp_server, ping_server, tmp_path, capsys
):
    inbox, port = smtp_server()
    pings = ping_server()
    textfile = tmp_path / "autoid.prom"
    config = _monitored_config(demo_sandbox, tmp_path, port, textfile, pings.url)
    reports = tmp_path / "reports"

    assert autoid_run("--config", str(config), "--email", "--quiet") == ExitStatus.OK
    [worked] = _folders(reports)
    done = json.loads((worked / "summary.json").read_text())
    assert done["status"] == Status.ATTENTION and done["email"]["sent"] is True  # demo seed
    last_success = (reports / LAST_SUCCESS).read_text()
    before = metrics(textfile)

    # a study to serve (a run with nothing to write takes no lease, so cannot yield), and
    # another installation writing
    demo_sandbox.add_rows("incoming", [NEW_STUDY])
    plant_ticket(demo_sandbox, host="old-server", expiry_s=120)
    autoid_rows = demo_sandbox.rows("autoid")
    assert autoid_run("--config", str(config), "--email", "--quiet") == ExitStatus.LOCKED
    err = capsys.readouterr().err
    assert "nothing was done: another run holds the REDCap lease" in err

    [_, folder] = _folders(reports)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "yielded" and summary["error"]["type"] == "LeaseHeld"
    assert summary["headline"].startswith("Yielded to another run — live run")
    assert "old-server" in summary["headline"] and "failed" not in summary["headline"]
    # nothing written, and the window still reaches back to the last run that did its work
    assert demo_sandbox.rows("autoid") == autoid_rows
    assert (reports / LAST_SUCCESS).read_text() == last_success

    # the report: a blue-grey banner naming who was writing, nothing red, one line for the plan
    report = (folder / "report.html").read_text()
    assert 'class="status yielded"' in report and "Yielded to another run" in report
    assert "old-server" in report and "The next scheduled run does the work." in report
    assert YIELD_EXIT in report and YIELD_TODO.replace("'", "&#x27;") in report
    assert "FAILED" not in report and "Failed at" not in report and "status failed" not in report
    assert nothing_to_list("lease", yielded=True) in report and "Nothing to show" not in report
    assert "before planning" not in report  # it planned, before the lease; that plan is void
    assert _sections_shown(report) == [] and "<h2" in report  # Run details stays
    assert "Re-read after writing:</b> not done (nothing written)" in report

    # the index: its row, the state at the top and the chart's mark say yielded, never FAILED
    index = (reports / "index.html").read_text()
    row = index.split(f'<tr id="{folder.name}"')[1].split("</tr>")[0]
    assert '<span class="s s-yielded">Yielded to another run</span>' in row
    assert "FAILED" not in row and "s-failed" not in row
    assert 'class="state state-yielded"' in index and "Failing:" not in index
    assert "Last successful live run: <a href=" in index and worked.name in index
    column = index.split(f'<a href="{folder.name}/report.html"><rect class="run"')[1]
    column = column.split("</a>")[0]
    assert 'fill="#3d5a80"' in column and "#fdeceb" not in column  # no pale red band
    assert "Yielded to another run" in column and "1 failed" not in index

    # the mail: a site that mails on failure gets none for a yield
    assert len(inbox.messages()) == 1
    assert summary["email"]["sent"] is False and "yielded" in summary["email"]["reason"]

    # pings: the job is alive (success, not /fail); metrics: neither a failure nor a success
    assert pings.paths() == ["/start", "", "/start", ""]
    found = metrics(textfile)
    live = (("mode", "live"),)
    success = ("autoid_last_success_timestamp_seconds", live)
    assert found[success] == before[success]
    assert ("autoid_last_yield_timestamp_seconds", live) in found
    statuses = {
        dict(labels)["status"]
        for name, labels in found
        if name == "autoid_last_run_timestamp_seconds" and dict(labels)["mode"] == "live"
    }
    assert statuses == {"attention"}  # the newest run that did its work, not the yield
    open_anomalies = {k: v for k, v in found.items() if k[0] == "autoid_open_anomalies"}
    assert open_anomalies and open_anomalies == {
        k: v for k, v in before.items() if k[0] == "autoid_open_anomalies"
    }

    # under send = always the yield is mailed, as a yield: subject, HTML and text
    entry = notify(summary, folder, settings_for(port, send="always"))  # another policy
    assert entry["sent"] is True and entry["reason"] == "send = always"
    message = inbox.messages()[-1]
    subject = message["Subject"]
    assert subject.startswith("[autoid] YIELDED TO ANOTHER RUN: nothing written")
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    for part in (subject, html, text):
        assert "FAILED" not in part and "failed" not in part.lower().replace("not failed", "")
    for part in (html, text):
        assert "old-server" in part and "ANOTHER RUN WAS WRITING" in part.upper()
        assert nothing_to_list("lease", yielded=True) in part
    assert "#fee2e2" not in html and "#e5ecf4" in html  # no red box: blue-grey


def test_a_yield_neither_changes_the_mailed_status_nor_breaks_a_failures_reminders(
    smtp_server, tmp_path
):
    """A yield is left out of the mail history: ok, yield, ok is no change; a failure, a yield
    and the same failure is one failure whose reminder is not due yet."""
    inbox, port = smtp_server()
    reports = tmp_path / "reports"
    mail = settings_for(port, send="on-change", repeat_failure_hours=6)
    yielded = dict(
        QUIET,
        status="yielded",
        error={"step": "lease", "type": "LeaseHeld", "message": "another run holds it"},
    )
    minute = timedelta(minutes=1)
    assert run(reports, QUIET, T0, mail)["sent"] is True  # the first run: nothing to compare
    assert run(reports, yielded, T0 + 5 * minute, mail)["sent"] is False
    assert run(reports, QUIET, T0 + 10 * minute, mail)["sent"] is False  # no "status changed"
    assert run(reports, FAILED, T0 + 15 * minute, mail)["sent"] is True  # a new failure
    assert run(reports, yielded, T0 + 20 * minute, mail)["sent"] is False
    again = run(reports, FAILED, T0 + 25 * minute, mail)
    assert again["sent"] is False and "as mailed" in again["reason"]  # the same failure
    assert len(inbox.messages()) == 2


def test_a_run_stopped_before_planning_says_so_in_one_line_in_report_and_mail(
    demo_sandbox, smtp_server, tmp_path
):
    """Item 6: REDCap refuses the connection; the report and the mail (HTML and text) say
    once that there is nothing to list, instead of five empty sections."""
    inbox, port = smtp_server()
    config = kit_config(demo_sandbox, tmp_path, email_table(port, send='"on-attention"'))
    config.write_text(config.read_text().replace("timeout_s = 10\n", "read_retries = 0\n"))
    demo_sandbox.stop()  # the connection is refused
    assert autoid_run("--config", str(config), "--email", "--quiet") == ExitStatus.FAILED

    [folder] = _folders(tmp_path / "reports")
    summary = json.loads((folder / "summary.json").read_text())
    step = summary["error"]["step"]
    assert summary["status"] == "failed" and summary["error"]["kind"] == "unreachable"
    line = nothing_to_list(step)
    report = (folder / "report.html").read_text()
    assert report.count(line) == 1 and "Nothing to show" not in report
    assert _sections_shown(report) == [] and "Run details" in report

    [message] = inbox.messages()
    assert "FAILED" in message["Subject"]
    for part in (message.get_body(("html",)), message.get_body(("plain",))):
        assert part.get_content().count(line) == 1
