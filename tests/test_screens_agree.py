"""Every screen tells the same story (issue 24): one live run with every hard case, read back
from each place a person or a monitor looks — the report, the mail (HTML and text, from a real
SMTP server), the index row, summary.json, the Prometheus textfile and the explore notebook's
answers (its Project, Study and Dry-run tabs, asked before the run at the run's own clock) —
must agree on every count and on every study's fate, and name the unit of every count.

The hard cases: the demo seed (new and known patients, empty patient IDs, a shared AE title,
a project with auto-ID on and no AE title, a nearly full pattern, studies outside the window)
plus a project whose ID space is full, one with an invalid pattern and a patient with two IDs.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from scenarios import autoid, project, study

from autoid_lib.cli import run as run_cli
from autoid_lib.config import load_settings
from autoid_lib.explore import answers as explore
from autoid_lib.explore.widgets import ExploreApp, ExploreSession, text_of
from autoid_lib.plan import SKIPPED
from autoid_lib.records.folders import read_summary
from autoid_lib.sandbox import Sandbox
from autoid_lib.status import ExitStatus
from autoid_lib.vocab import Status, anomaly_count

pytestmark = pytest.mark.slow
NOW = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
RECENT = "20261127"
# the hard cases the demo seed lacks: (project, AE title, pattern), AutoID rows, studies
EXTRA_PROJECTS = [
    project("20", "FullProj", "FULLAE", "F[12]"),  # both IDs taken: a new patient is skipped
    project("21", "BrokenPattern", "BROKENAE", "B[0-9"),  # cannot generate IDs
    project("22", "TwoIds", "TWOIDS", r"T\d{3}"),  # one patient with two IDs
]
EXTRA_ROWS = [
    autoid(9001, "FullProj", "5550001", "F1"),
    autoid(9002, "FullProj", "5550002", "F2"),
    autoid(9003, "TwoIds", "5550003", "T001"),
    autoid(9004, "TwoIds", "5550003", "T002"),
]
EXTRA_STUDIES = [
    study("9.1.1", "FULLAE", "5550001", RECENT),  # known patient of a full project: served
    study("9.1.2", "FULLAE", "5550009", RECENT),  # new patient of a full project: exhausted
    study("9.2.1", "BROKENAE", "5550010", RECENT),  # invalid pattern
    study("9.3.1", "TWOIDS", "5550003", RECENT),  # AutoID conflict
    study("9.3.2", "TWOIDS", "5550011", RECENT),  # new patient beside it
]
SKIP_REASONS = {"empty patient ID", "ambiguous AE title", "invalid pattern", "ID space exhausted",
                "AutoID conflict"}  # fmt: skip


# -- reading the pages --------------------------------------------------------------------------


class _Page(HTMLParser):
    """Text and tables of an HTML page (stdlib parser): ``tables`` as lists of rows of cell
    texts, ``text`` with one line per block; styles and inline SVG left out."""

    BLOCKS = frozenset({"p", "div", "li", "tr", "h1", "h2", "h3", "br", "table", "summary"})

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._open: list[list[list[str]]] = []
        self._cell: list[str] | None = None
        self._hidden = 0
        self._text: list[str] = []
        self.feed(page)
        self.text = re.sub(r"[ \t]*\n\s*", "\n", "".join(self._text))

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "svg", "title"):
            self._hidden += 1
        if tag in self.BLOCKS:
            self._text.append("\n")
        if tag == "table":
            self._open.append([])
        elif tag == "tr" and self._open:
            self._open[-1].append([])
        elif tag in ("td", "th") and self._open and self._open[-1]:
            self._cell = []
            self._text.append(" | ")

    def handle_endtag(self, tag):
        if tag in ("style", "script", "svg", "title"):
            self._hidden -= 1
        elif tag in ("td", "th") and self._cell is not None and self._open:
            self._open[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table" and self._open:
            self.tables.append(self._open.pop())

    def handle_data(self, data):
        if self._hidden:
            return
        self._text.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, first_heading: str, *more: str) -> list[dict[str, str]]:
        """The rows of the table whose heading row starts with these cells, keyed by heading."""
        wanted = [first_heading, *more]
        for rows in self.tables:
            if rows and rows[0][: len(wanted)] == wanted:
                return [dict(zip(rows[0], row, strict=False)) for row in rows[1:] if row]
        raise AssertionError(f"no table headed {wanted}")


def number(text: str) -> int:
    """The count at the start of a cell ("1,000", "2 empty patient ID")."""
    found = re.match(r"\s*([\d,]+)", text)
    assert found, f"no count in {text!r}"
    return int(found[1].replace(",", ""))


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Screens:
    summary: dict
    report: _Page
    index: _Page
    mail_text: str
    mail_html: _Page
    subject: str
    metrics: dict[tuple[str, tuple], float]
    before: dict[str, str]  # AutoID value -> project, before the run
    overview: dict[str, explore.ProjectOverview]  # the Project tab, per auto-ID project
    shown: dict[str, str]  # what each tab showed, as text (through the widgets)
    studies: dict[str, str]  # study UID -> the Study tab's "next run" answer
    preview: dict[str, dict]  # the Dry-run tab's plan per project, as counts
    folder: Path


@pytest.fixture(scope="module")
def screens(tmp_path_factory):
    from aiosmtpd.controller import Controller
    from conftest import SmtpInbox, _free_port

    root = tmp_path_factory.mktemp("agree")
    sandbox = Sandbox(seed="demo", now=NOW.replace(tzinfo=None)).start()
    inbox, port = SmtpInbox(), _free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        sandbox.add_rows("projects", EXTRA_PROJECTS)
        sandbox.add_rows("autoid", EXTRA_ROWS)
        sandbox.add_rows("incoming", EXTRA_STUDIES)
        config = sandbox.write_kit_files(root, reports_dir=root / "reports")
        textfile = root / "metrics" / "autoid.prom"
        textfile.parent.mkdir()
        config.write_text(
            config.read_text()
            + f'\n[email]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\nsecurity = "none"\n'
            + 'sender = "autoid@example.org"\nrecipients = ["ops@example.org"]\ntimeout_s = 5\n'
            + f'\n[monitoring]\ntextfile = "{textfile}"\n'
        )
        # explore, as a data manager asks it just before the run, on the run's clock
        session = ExploreSession(load_settings(config), now=NOW, rng=random.Random(7))
        before = {r.value: r.project_name for r in session.autoid_rows()}
        asked = _ask_explore(ExploreApp(session), sandbox)

        parser = argparse.ArgumentParser()
        run_cli.add_arguments(parser)
        argv = ["--config", str(config), "--email", "--quiet", "--now", NOW.isoformat()]
        assert run_cli.run(parser.parse_args([*argv, "--detail", "full"])) == ExitStatus.OK
        (message,) = inbox.messages()
    finally:
        smtp.stop()
        sandbox.stop()
    (folder,) = [p for p in (root / "reports").iterdir() if p.is_dir()]
    prom = textfile.read_text()
    return Screens(
        summary=read_summary(folder) or {},
        report=_Page((folder / "report.html").read_text()),
        index=_Page((root / "reports" / "index.html").read_text()),
        mail_text=message.get_body(("plain",)).get_content().replace("\r\n", "\n"),
        mail_html=_Page(message.get_body(("html",)).get_content()),
        subject=str(message["Subject"]),
        metrics={
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(prom)
            for s in family.samples
        },
        before=before,
        folder=folder,
        **asked,
    )


def _ask_explore(app: ExploreApp, sandbox) -> dict:
    """The Project, Study and Dry-run tabs, as their buttons compute them."""
    session = app.session
    overview, shown, preview = {}, {}, {}
    for name in app.overview.project.options:
        app.overview.project.value = name
        snapshot, window = app.overview._window()  # the tab's own choice: the run's window
        overview[name] = explore.project_overview(snapshot, name, session.plan_settings(), window)
        app.overview.button.click()
        shown[f"project {name}"] = text_of(app.overview.output)
        app.preview.project.value = name
        app.preview.button.click()
        shown[f"dry run {name}"] = text_of(app.preview.output)
        result = explore.preview_project(
            session.run_window(app.preview.days.value), name, session.plan_settings()
        )
        plan = result.plan
        assert plan is not None
        skipped: dict[str, int] = {}
        for outcome in plan.studies:
            if outcome.action == SKIPPED:
                skipped[outcome.reason] = skipped.get(outcome.reason, 0) + 1
        preview[name] = {
            "anomalies": sorted((a.kind, a.count) for a in plan.anomalies),
            "needs": explore.preview_anomalies(result).to_dict("records"),
            "transfers": len(plan.transfers),
            "new IDs": len(plan.new_ids),
            "studies": [(s.study_uid, s.action, s.reason) for s in plan.studies],
            "skipped": skipped,
        }
    uids = [str(row["study_instance_uid"]) for row in sandbox.rows("incoming")]
    studies = {}
    for uid in dict.fromkeys(uids):
        (answer,) = explore.lookup_study(
            session.history(), uid, session.plan_settings(), session.run_window_uids()
        )
        studies[uid] = answer.next_run
    app.study.query.value = "9.1.2"  # one through the widget: it shows the same answer
    app.study.button.click()
    shown["study 9.1.2"] = text_of(app.study.output)
    return {"overview": overview, "shown": shown, "studies": studies, "preview": preview}


# -- counts -------------------------------------------------------------------------------------


def test_every_screen_shows_the_same_counts(screens):
    s = screens.summary
    transfers, new, reused = s["transfers_created"], s["ids_created"], s["ids_reused"]
    skipped, anomalies = s["skipped"], len(s["anomalies"])
    assert set(skipped) == SKIP_REASONS  # every hard case happened
    assert min(transfers, new, reused) > 0
    skipped_total = sum(skipped.values())

    # the report: its banner, its Projects totals row, Needs a human, Run details
    report = screens.report
    banner = re.search(r"Created [^\n]*", report.text)[0]
    assert f"Created {transfers} transfer request(s) and {new} new ID(s)" in banner
    assert f"reused {reused} known ID(s)" in banner
    assert f"skipped {skipped_total} study(ies): " in banner
    for reason, count in skipped.items():
        assert f"{count} {reason}" in banner
    projects = report.table("project", "AE title", "pattern", "incoming")
    (total,) = [r for r in projects if r["project"].startswith("total")]
    assert number(total["transfers created"]) == transfers
    assert (number(total["IDs created"]), number(total["IDs reused"])) == (new, reused)
    assert number(total["skipped"]) == skipped_total
    needs = report.table("project", "what", "count")
    assert len(needs) == anomalies
    assert f"{anomalies} anomaly(ies)" in report.text
    assert f"Studies in window: {s['studies_in_window']} (all AE titles)" in report.text

    # the mail, both parts
    text = screens.mail_text
    assert f"Transfers created: {transfers}\n" in text
    assert f"IDs created:       {new}\n" in text and f"IDs reused:        {reused}\n" in text
    assert f"Need attention:    {anomalies} anomalies\n" in text
    assert f"NEEDS ATTENTION ({anomalies})" in text
    assert f"SKIPPED STUDIES ({skipped_total})" in text
    listed = text.split(f"SKIPPED STUDIES ({skipped_total})\n", 1)[1].split("\n\n", 1)[0]
    assert dict(re.findall(r"^- ([^:\n]+): (\d+)$", listed, re.M)) == {
        reason: str(count) for reason, count in skipped.items()
    }
    tiles = screens.mail_html.text
    assert f"Transfers created {transfers}" in tiles and f"IDs created {new}" in tiles
    assert f"IDs reused {reused}" in tiles and f"Need attention {anomalies} anomalies" in tiles
    mail_skipped = screens.mail_html.table("Reason", "Studies")
    assert {r["Reason"]: number(r["Studies"]) for r in mail_skipped} == skipped
    assert len(screens.mail_html.table("Project", "What happened")) == anomalies
    subject = f": {transfers} transfers created, {anomalies} anomalies"
    assert screens.subject.endswith(subject)

    # the index row
    (row,) = screens.index.table("started (UTC)", "mode", "status")
    assert number(row["transfers"]) == transfers
    assert (number(row["new IDs"]), number(row["reused IDs"])) == (new, reused)
    assert number(row["skipped studies"]) == skipped_total
    assert number(row["anomalies"]) == anomalies

    # the metrics
    metrics = screens.metrics
    assert metrics[("autoid_transfers_created", (("mode", "live"),))] == transfers
    assert metrics[("autoid_ids_created", (("mode", "live"),))] == new
    assert {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.items()
        if name == "autoid_studies_skipped"
    } == skipped
    open_ = [v for (name, _), v in metrics.items() if name == "autoid_open_anomalies"]
    assert sum(open_) == anomalies
    assert metrics[("autoid_api_requests", (("mode", "live"),))] == s["api_requests"]
    assert f"{s['api_requests']} API requests" in report.text
    assert f"REDCap requests: {s['api_requests']}\n" in text


def test_the_reread_after_writing_is_the_same_phrase_everywhere(screens):
    verified = screens.summary["verified"]
    assert verified["matched"] and verified["autoid_rows"] == screens.summary["ids_created"]
    assert verified["transfers"] == screens.summary["transfers_created"]
    phrase = (
        f"{verified['autoid_rows']} patients' AutoID rows, 1 kit record (the hash scheme's) "
        f"and {verified['transfers']} transfer requests match"
    )
    for name, page in (
        ("report", screens.report.text),
        ("index", screens.index.text),
        ("mail text", screens.mail_text),
        ("mail html", screens.mail_html.text),
    ):
        assert phrase in " ".join(page.split()), name


def test_each_projects_counts_agree_in_the_report_the_mail_summary_json_and_explore(screens):
    entries = {p["project"]: p for p in screens.summary["projects"]}
    report = {r["project"]: r for r in screens.report.table("project", "AE title", "pattern")}
    mail = {r["Project"]: r for r in screens.mail_html.table("Project", "AE title", "Pattern")}
    assert set(screens.overview) == set(entries) | {"MissingAETitle"}
    for name, entry in entries.items():
        shared = entry["shares_ae_title_with"]
        row = report[" / ".join(sorted([name, *shared])) + " (shared AE title)" if shared else name]
        keys = ("incoming", "already transferred", "transfers created", "IDs reused",
                "IDs created", "skipped")  # fmt: skip
        fields = ("incoming", "already_transferred", "transfers_created", "ids_reused",
                  "ids_created", "skipped")  # fmt: skip
        for key, field in zip(keys, fields, strict=True):
            assert number(row[key]) == entry[field], (name, key)
        in_mail = mail[name]
        assert number(in_mail["Incoming studies"]) == entry["incoming"], name
        assert number(in_mail["Already sent"]) == entry["already_transferred"], name
        assert number(in_mail["Transfers created"]) == entry["transfers_created"], name
        assert number(in_mail["IDs created"]) == entry["ids_created"], name
        assert number(in_mail["Skipped studies"]) == entry["skipped"], name
        line = next(t for t in screens.mail_text.splitlines() if t.startswith(f"- {name} (AE "))
        incoming = f"{entry['incoming']} {'study' if entry['incoming'] == 1 else 'studies'}"
        assert (
            f"): {incoming} incoming ({entry['already_transferred']} already sent, "
            f"{entry['skipped']} skipped), transfers created {entry['transfers_created']}, "
            f"IDs reused {entry['ids_reused']}, IDs created {entry['ids_created']}" in line
        )

        # explore's Project tab, over the run's window, just before the run
        overview = screens.overview[name]
        counts = overview.counts()
        assert len(overview.table) == entry["incoming"], name
        assert counts["transferred"] == entry["already_transferred"], name
        assert counts["pending"] == entry["transfers_created"], name
        assert counts["skipped"] == entry["skipped"], name
        assert "(the run's window, 2026-11-14 06:30 → 2026-11-28 06:30" in overview.sentence()
        shown = screens.shown[f"project {name}"]
        assert f"{entry['incoming']} stud" in shown.splitlines()[0]
        # the Dry-run tab
        preview = screens.preview[name]
        assert preview["transfers"] == entry["transfers_created"], name
        assert preview["new IDs"] == entry["ids_created"], name
        assert sum(preview["skipped"].values()) == entry["skipped"], name
        if preview["skipped"]:
            assert all(screens.summary["skipped"][r] >= n for r, n in preview["skipped"].items())
        mine = [a for a in screens.summary["anomalies"] if name in a["project"].split(", ")]
        assert preview["anomalies"] == sorted((a["kind"], a["count"]) for a in mine), name
        needs = [r for r in screens.report.table("project", "what", "count") if name in
                 r["project"].split(", ")]  # fmt: skip
        assert preview["needs"] == [{k: r[k] for k in explore.ANOMALY_COLUMNS} for r in needs]
        # the capacity the Project tab and the report show: the IDs in use after the plan
        if overview.capacity is not None:
            capacity = (overview.capacity.used, overview.capacity.size)
            assert capacity == (entry["capacity_used"], entry["capacity_size"]), name
            if not shared:
                assert row["capacity used"].startswith(f"{capacity[0]:,} of {capacity[1]:,} ")


def test_each_anomaly_reads_the_same_in_the_report_the_mail_and_summary_json(screens):
    anomalies = screens.summary["anomalies"]
    report = screens.report.table("project", "what", "count")
    mail = screens.mail_html.table("Project", "What happened", "What to do")
    text = screens.mail_text
    assert len(report) == len(mail) == len(anomalies)
    for anomaly, shown, mailed in zip(anomalies, report, mail, strict=True):
        assert shown["project"] == mailed["Project"] == anomaly["project"]
        assert shown["details"] == anomaly["message"]
        assert shown["count"] == anomaly_count(anomaly["kind"], anomaly["count"])
        assert shown["what to do"] == mailed["What to do"] == anomaly["action"]
        assert mailed["What happened"].startswith(anomaly["message"])
        assert f"- [{anomaly['project']}] {anomaly['message']}" in text


def test_the_status_is_the_same_everywhere(screens):
    summary = screens.summary
    label = Status.parse(summary["status"]).label
    assert label == "Needs attention"
    (row,) = screens.index.table("started (UTC)", "mode", "status")
    assert row["status"] == label and row["mode"] == "live"
    assert summary["headline"].startswith(f"{label} — live run, window 2026-11-14 06:30 → ")
    assert summary["headline"] in " ".join(screens.index.text.split())
    assert screens.subject.startswith(f"[autoid] {label.upper()}: ")
    assert f"\nStatus:          {label.upper()}\n" in screens.mail_text
    banner = next(line for line in screens.report.text.splitlines() if " Created " in line)
    assert banner.startswith(f"{label} Created ")


# -- each study's fate --------------------------------------------------------------------------


def test_each_studys_fate_is_the_same_in_the_report_and_in_explore(screens):
    rows = screens.report.table("project", "study date", "study", "study UID")
    assert rows and all(r["study UID"] for r in rows)
    fates = {}
    for row in rows:
        uid, answer = row["study UID"], screens.studies[row["study UID"]]
        fates[uid] = row["action"]
        if row["action"] == "skipped":
            assert answer == f"skip it ({row['reason']}); nothing is written for it.", uid
        elif row["action"] == "already transferred":
            assert answer.startswith("nothing: it already has a transfer request"), uid
        else:
            assert row["action"] == "create transfer", uid
            project_name = row["project"]
            assert answer.startswith(f"request it for {project_name} under "), uid
            pseudonym = row["pseudonym"]
            if screens.before.get(pseudonym) == project_name:  # a known ID: the same one
                assert answer == f"request it for {project_name} under the patient's known ID " \
                    f"{pseudonym}.", uid  # fmt: skip
            else:
                assert answer == f"request it for {project_name} under a new ID.", uid
    # the studies the report does not list: the run does not serve them, and explore says so
    for uid, answer in screens.studies.items():
        if uid not in fates:
            assert answer.startswith("nothing: "), uid
    # the Project and Dry-run tabs give each study the report's fate too
    by_ref = {row["study"]: row for row in rows}
    for name, overview in screens.overview.items():
        for state in overview.table.to_dict("records"):
            row = by_ref[state["study_ref"]]
            expected = {"skipped": "skipped", "pending": "create transfer",
                        "transferred": "already transferred"}[state["state"]]  # fmt: skip
            assert row["action"] == expected, (name, state["study_ref"])
            if state["state"] == "skipped":
                assert state["detail"] == row["reason"]
        for uid, action, _reason in screens.preview[name]["studies"]:
            assert fates[uid] == action, (name, uid)
    assert "skip it (ID space exhausted)" in screens.shown["study 9.1.2"]
    assert fates["9.1.2"] == "skipped" and fates["9.1.1"] == "create transfer"


def test_each_count_names_its_unit(screens):
    """A bare number beside a word that is not a unit ("Need attention: 7") is what item 8 of
    issue 24 is about: the reader cannot tell studies from patients from anomalies."""
    text = screens.mail_text
    assert re.search(r"\nNeed attention:\s+\d+ anomal(y|ies)\n", text)
    for label in ("Transfers created", "IDs created", "IDs reused"):
        assert re.search(rf"\n{label}:\s+\d+\n", text)  # the label is the unit
    headings = screens.index.table("started (UTC)", "mode", "status")[0]
    counted = ["transfers", "new IDs", "reused IDs", "skipped studies", "anomalies"]
    assert [h for h in counted if h in headings] == counted
    units = ("stud", "patient", "ID", "project", "AutoID row", "transfer")
    for row in screens.report.table("project", "what", "count"):
        assert row["count"] == "—" or any(u in row["count"] for u in units), row
    summary = json.dumps(screens.summary)
    assert "patient" not in screens.folder.name and "5550003" not in summary
