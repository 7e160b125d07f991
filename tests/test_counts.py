"""Counts that add up (issue 11): an ambiguous AE title counts the studies it skipped, a shared
AE title's studies appear once with a totals row, and dry-run wording says "to create"."""

from __future__ import annotations

import html
import re

import pytest
from scenarios import PID, project, study

from autoid_lib import report
from autoid_lib.config import load_settings
from autoid_lib.records.notebook_run import execute_run
from autoid_lib.records.summary import run_summary
from autoid_lib.run import run_autoid


@pytest.fixture
def shared(sandbox, tmp_path):
    """Alpha and Beta share AE title SHARED (4 studies), Gamma has its own (1 study)."""
    sandbox.add_rows(
        "projects",
        [
            project("1", "Alpha", "SHARED", r"A\d{3}"),
            project("2", "Beta", "SHARED", r"B\d{3}"),
            project("3", "Gamma", "GAMMA", r"G\d{3}"),
        ],
    )
    sandbox.add_rows(
        "incoming",
        [*(study(f"5.{i}", "SHARED", PID[i]) for i in range(4)), study("6.1", "GAMMA", PID[5])],
    )
    return sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")


def cells(page: str, first: str) -> list[str]:
    row = re.search(rf"<tr><td[^>]*>{re.escape(first)}</td>(.*?)</tr>", page)[1]
    return re.findall(r"<td[^>]*>(.*?)</td>", row)


def test_an_ambiguous_ae_title_counts_the_studies_it_skipped(shared):
    result = run_autoid(load_settings(shared), dry_run=True)
    (anomaly,) = [a for a in result.plan.anomalies if a.kind == "ambiguous_ae_title"]
    assert anomaly.count == 4
    page = report.projects_table(result).data
    assert cells(page, "Alpha")[2] == "0"  # incoming: none of its own
    assert cells(page, "Alpha / Beta (shared AE title)")[2:4] == ["4", "0"]
    total = cells(page, "total (each study once)")
    assert total[2] == "5"  # 4 shared + 1 Gamma, each once (not 4 + 4 + 1)
    assert "transfers to create" in page and "IDs to create" in page
    assert "would create" not in page
    # summary.json names the sharing, so that its per-project counts can be summed once each
    entries = {p["project"]: p for p in run_summary(result)["projects"]}
    assert entries["Alpha"]["shares_ae_title_with"] == ["Beta"]
    assert entries["Beta"]["shares_ae_title_with"] == ["Alpha"]
    assert entries["Gamma"]["shares_ae_title_with"] == []
    once = sum(p["incoming"] for p in entries.values() if not p["shares_ae_title_with"])
    assert once + entries["Alpha"]["incoming"] == 5
    # "Needs a human" names what its count counts (issue 24, item 8: 68 studies beside 58
    # patients and 1 project, all as bare numbers)
    needs = report.anomalies_table(result).data
    assert cells(needs, "Alpha, Beta")[1] == "4 studies"


@pytest.mark.slow
def test_the_dry_run_mail_and_report_never_say_created(shared):
    from autoid_lib.mail.compose import compose_message
    from autoid_lib.mail.settings import email_settings_from_config

    record = execute_run(load_settings(shared), dry_run=True, progress=False)
    settings = email_settings_from_config(
        {"smtp_host": "localhost", "sender": "a@b.c", "recipients": ["x@y.z"]}
    )
    mail = compose_message(record.summary, settings, record.report)
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "created" not in text.lower() and "created" not in html.lower()
    assert "IDs to create" in text and "the whole command" in text
    assert "\nProduced by:     kit " in text  # its own line, not glued to "Started:"
    assert "(AE SHARED, shared with Beta: the same studies," in text
    assert "shared with Alpha</small>" in html
    page = record.report.read_text()
    assert "total (each study once)" in page and "Whole command" in page


def test_the_reread_counts_patients_rows_and_the_kits_record_apart_on_every_screen(shared):
    """Issue 24, item 8: "7 new IDs" beside "wrote 8 AutoID rows" and "8 AutoID rows match"
    (the eighth the kit's hash-scheme record, unexplained). One phrase, from one place: the
    report, the mail and the index of a first live run say the same."""
    from autoid_lib.mail.compose import compose_message
    from autoid_lib.mail.settings import email_settings_from_config
    from autoid_lib.vocab import verified_counts

    record = execute_run(load_settings(shared), progress=False)
    phrase = "1 patient's AutoID row, 1 kit record (the hash scheme's) and 1 transfer request"
    assert record.summary["verified"] | {"matched": True} == record.summary["verified"]
    assert verified_counts(record.summary["verified"]) == phrase
    assert f"{phrase} match" in html.unescape(record.report.read_text())
    index = record.report.parent.parent / "index.html"
    assert f"{phrase} match" in html.unescape(index.read_text())
    settings = email_settings_from_config(
        {"smtp_host": "localhost", "sender": "a@b.c", "recipients": ["x@y.z"]}
    )
    mail = compose_message(record.summary, settings, record.report)
    assert f"{phrase} match" in mail.get_body(("plain",)).get_content()

    raw = {"autoid_rows": 7, "kit_records": 1, "transfers": 14, "matched": True}
    assert verified_counts(raw) == (
        "7 patients' AutoID rows, 1 kit record (the hash scheme's) and 14 transfer requests"
    )
    assert verified_counts({"autoid_rows": 1, "transfers": 1}) == (
        "1 patient's AutoID row and 1 transfer request"
    )
