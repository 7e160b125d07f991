"""The audit report at the run report's level (issue 11): the coloured status box, headers in
words, the reason filled, no literal backticks, plurals that agree, run details, and the run
report's privacy rule (a pseudonym beside a study reference only at detail = full). Real
notebook runs against the sandbox."""

from __future__ import annotations

import re

import pytest
from scenarios import clean_history, plant_problems

from autoid_lib import __version__
from autoid_lib.audit import view
from autoid_lib.audit.checks import NOT_SERVED, WAITING
from autoid_lib.audit.job import audit_in_kernel, execute_audit
from autoid_lib.config import load_settings
from autoid_lib.mail.compose import compose_message
from autoid_lib.mail.settings import email_settings_from_config
from autoid_lib.vocab import plural

PSEUDONYMS = ("A005", "A999", "B11")  # sent under these for …2.2, …2.3, …2.4 (plant_problems)
SNAKE_HEADERS = ("ae_title", "study_ref", "study_date", "autoid_records", "transfer_date")


@pytest.fixture
def config(sandbox, tmp_path):
    clean_history(sandbox)
    plant_problems(sandbox)
    return sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")


def headers(page: str) -> list[str]:
    return re.findall(r"<th[^>]*>([^<]*)</th>", page)


def test_summary_detail_shows_no_pseudonym_beside_a_study_reference(config):
    report = audit_in_kernel(str(config))
    summary, full = view.findings_html(report, "summary"), view.findings_html(report, "full")
    assert "…2.3" in summary and "…2.2" in summary  # the studies are still named
    assert [p for p in PSEUDONYMS if p in summary] == []
    assert "pseudonyms are left out" in summary
    assert [p for p in PSEUDONYMS if p not in full] == []  # full keeps them, with study UIDs
    # AutoID rows are not studies: their IDs stay at summary (no study beside them)
    assert "A010, A011" in summary


def test_headers_are_words_reasons_are_filled_and_commands_are_code(config):
    report = audit_in_kernel(str(config))
    page = view.findings_html(report) + view.projects_table(report).data
    page += view.pending_table(report).data
    shown = headers(page)
    assert "AE title" in shown and "study" in shown and "study date" in shown
    assert [h for h in shown if h in SNAKE_HEADERS] == []
    assert "`" not in page
    assert "<code>autoid run --lookback-days N</code>" in page
    (reason,) = report.finding("missing_transfer").table["reason"]
    assert reason == NOT_SERVED
    assert list(report.pending["reason"]) == [WAITING]
    assert "total (each study once)" in page
    assert all("`" not in f["action"] for f in report.summary()["anomalies"])


def test_counts_agree_with_their_nouns():
    assert [plural(n, "study", "studies") for n in (0, 1, 2, 1200)] == [
        "0 studies", "1 study", "2 studies", "1,200 studies",
    ]  # fmt: skip


def test_one_study_is_one_study_in_the_headline(sandbox, tmp_path):
    from scenarios import PID, project, study

    sandbox.add_rows("projects", [project("1", "Alpha", "ALPHA", r"A\d{3}")])
    sandbox.add_rows("incoming", [study("9.1", "ALPHA", PID[0])])
    config = sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    report = audit_in_kernel(str(config))
    assert "(1 study, 0 AutoID rows)" in report.headline
    assert "studies" not in report.headline


@pytest.mark.slow
def test_the_recorded_audit_report_reads_like_a_run_report(config, tmp_path):
    settings = load_settings(config)
    record = execute_audit(settings, progress=False)
    page = record.report.read_text()
    assert 'class="status attention"' in page  # the run report's coloured box
    assert "Needs attention" in page and "6 findings: 5 problems, 1 notice" in page
    assert [h for h in headers(page) if h in SNAKE_HEADERS] == []
    assert "`" not in re.sub(r"<style>.*?</style>", "", page, flags=re.S)
    assert [p for p in PSEUDONYMS if p in page] == []
    assert "1 studies" not in page
    for fact in (f"kit {__version__}", "REDCap 127.0.0.1", f"config {config}", "Whole command"):
        assert fact in page, fact
    assert record.summary["environment"]["redcap_host"] == "127.0.0.1"
    assert record.summary["timings_s"]["command"] >= record.summary["timings_s"]["notebook"]

    mail = compose_message(
        record.summary,
        email_settings_from_config(
            {"smtp_host": "localhost", "sender": "a@b.c", "recipients": ["x@y.z"]}
        ),
        record.report,
    )
    text = mail.get_body(("plain",)).get_content()
    assert "up to 50 studies or AutoID rows of each finding" in text
    assert "The full report lists the studies" not in text
    assert "5 problems, 1 notice" in text and "the whole command" in text

    full = execute_audit(settings, detail="full", progress=False).report.read_text()
    assert [p for p in PSEUDONYMS if p not in full] == []
