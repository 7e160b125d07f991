"""The audit streams all of Incoming (``HistoryFold`` fed by ``gateway.iter_history_chunks``):
its findings equal the whole-list audit's, however the history is cut into chunks, and a chunk
that comes back short mid-stream either reads again from scratch (same result) or fails closed.
Pure checks with hypothesis; the read against the sandbox over HTTP, through PyCap."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scenarios import clean_history, plant_problems, study, transfer

from autoid_lib.audit.checks import AuditReport, AuditSettings, HistoryFold, audit
from autoid_lib.audit.job import audit_history, audit_in_kernel, fold_history, read_history
from autoid_lib.audit.view import run_details
from autoid_lib.config import load_settings
from autoid_lib.errors import RedcapError
from autoid_lib.hashing import PatientHasher, sha512_hex
from autoid_lib.records.folders import SUMMARY_FILE
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.retired import retired_name
from autoid_lib.sandbox.faults import dropped_rows
from autoid_lib.sandbox.protocol import parse_form
from autoid_lib.snapshot import (
    LEASE_PROJECT,
    AutoIdRow,
    ExistingTransfer,
    IncomingStudy,
    ProjectRecord,
    Snapshot,
)

WINDOW_BEGIN = datetime(2026, 1, 15)
HASHER = PatientHasher()


def same_report(streamed: AuditReport, whole: AuditReport) -> None:
    """Every finding (kind, title, severity, count, action, table, groups), the per-project
    overview, the pending studies and the counts are identical."""
    assert streamed.findings == whole.findings
    for mine, theirs in zip(streamed.findings, whole.findings, strict=True):
        pd.testing.assert_frame_equal(mine.table, theirs.table)
        if theirs.groups is None:
            assert mine.groups is None
        else:
            pd.testing.assert_frame_equal(mine.groups, theirs.groups)
    pd.testing.assert_frame_equal(streamed.projects, whole.projects)
    pd.testing.assert_frame_equal(streamed.pending, whole.pending)
    assert (streamed.studies, streamed.autoid_rows) == (whole.studies, whole.autoid_rows)
    assert streamed.summary() == whole.summary()


# -- generated histories ------------------------------------------------------------------------

PROJECTS = [
    ProjectRecord("1", "Alpha", True, "ALPHA", r"A\d{3}"),
    ProjectRecord("2", "Beta", True, "BETA", r"B\d{2}"),
    ProjectRecord("3", "Gamma", True, "SHARED", r"G\d"),
    ProjectRecord("4", "Delta", True, "SHARED ", r"D\d"),  # shares Gamma's AE title
    ProjectRecord("5", "Manual", False, "MANUAL", r"M\d"),
    ProjectRecord("6", "Broken", True, "BROKEN", r"(unclosed"),
]
# spellings of a few patients: padding and NULs, the legacy hashes of the raw ID, an empty one
PATIENT_SPELLINGS = ["P1", "P1 ", "P1\x00", " P1", "P2", "P2  ", "P3", "", "  "]
PROJECT_NAMES = ["Alpha", "Beta", "Gamma", "Delta", "Manual", "alpha", "Alpha ", "Other", ""]
# AutoID rows mostly under one project, so conflicts between them are common
STORED_NAMES = [
    *["Alpha"] * 8,
    *PROJECT_NAMES[1:-1],
    retired_name("Alpha"),
    retired_name("Beta"),
    LEASE_PROJECT,
]
VALUES = ["A001", "A002", "A1", "B01", "G1", "D2", "M1", ""]
AE_TITLES = ["ALPHA", "BETA", "SHARED", "SHARED ", "MANUAL", "BROKEN", "OTHER", " ALPHA", ""]
DATES = ["20200101", "20260110", "20260120", "", "2026-01-20"]


@st.composite
def autoid_rows(draw) -> list[AutoIdRow]:
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(STORED_NAMES),
                st.sampled_from(PATIENT_SPELLINGS),
                st.sampled_from(VALUES),
                st.booleans(),
            ),
            max_size=16,
        )
    )
    return [
        AutoIdRow(
            str(n),
            name,
            sha512_hex(patient).upper() if upper else sha512_hex(patient),
            value,
        )
        for n, (name, patient, value, upper) in enumerate(rows, start=1)
    ]


transfers = st.lists(
    st.builds(
        lambda name, pseudonym, codes, sent: (name, pseudonym, tuple(sorted(codes)), sent),
        st.sampled_from(PROJECT_NAMES),
        st.sampled_from(VALUES),
        st.sets(st.sampled_from(["1", "2", "3", "7"]), max_size=2),
        st.sampled_from(["", "2026-01-02 10:00"]),
    ),
    max_size=3,
)


@st.composite
def studies(draw) -> list[IncomingStudy]:
    drawn = draw(
        st.lists(
            st.tuples(
                st.sampled_from(AE_TITLES),
                st.sampled_from(PATIENT_SPELLINGS),
                st.sampled_from(DATES),
                transfers,
            ),
            max_size=25,
        )
    )
    return [
        IncomingStudy(
            uid=f"1.2.3.{n}",
            ae_title=ae,
            patient_id=patient,
            study_date=date,
            accession_number=f"ACC{n}",
            transfers=tuple(
                ExistingTransfer(i, name, pseudonym, "2026-01-01 10:00", sent, codes)
                for i, (name, pseudonym, codes, sent) in enumerate(found, start=1)
            ),
        )
        for n, (ae, patient, date, found) in enumerate(drawn, start=1)
    ]


def cut(items: list, points: list[int]) -> list[list]:
    """``items`` in consecutive chunks, cut at ``points`` (empty chunks included)."""
    edges = [0, *sorted(min(p, len(items)) for p in points), len(items)]
    return [items[a:b] for a, b in pairwise(edges)]


@settings(max_examples=300, deadline=None)
@given(
    projects=st.lists(st.sampled_from(PROJECTS), unique=True, max_size=6),
    history=studies(),
    rows=autoid_rows(),
    points=st.lists(st.integers(0, 25), max_size=6),
    window=st.one_of(st.none(), st.sets(st.integers(1, 25))),
)
def test_the_streamed_audit_equals_the_whole_list_audit(projects, history, rows, points, window):
    in_window = None if window is None else frozenset(f"1.2.3.{n}" for n in window)
    audit_settings = AuditSettings(HASHER, WINDOW_BEGIN, 14, in_window)
    snapshot = Snapshot(
        tuple(projects), tuple(history), tuple(rows), WINDOW_BEGIN, WINDOW_BEGIN + timedelta(14)
    )
    fold = HistoryFold(projects)
    for chunk in cut(history, points):
        fold.add(chunk)
    same_report(fold.report(rows, audit_settings), audit(snapshot, audit_settings))


@given(history=studies())
def test_the_fold_keeps_no_accession_number_and_no_study_no_check_looks_at(history):
    fold = HistoryFold(PROJECTS)
    fold.add(history)
    addressed = {p.ae_title.strip() for p in PROJECTS if p.use_autoid}
    needed = [s for s in history if s.transfer_requests or s.ae_title.strip() in addressed]
    assert [s.uid for s in fold.studies] == [s.uid for s in needed]
    assert fold.count == len(history)
    assert all(s.accession_number == "" for s in fold.studies)
    assert all(t.is_request for s in fold.studies for t in s.transfers)


def test_a_patient_seen_only_in_studies_the_fold_drops_still_counts_for_the_spellings():
    """The study is addressed to no auto-ID project and has no request, so the fold keeps only
    its patient's spelling: enough to see that 'P1' and 'P1 ' hold two IDs in Alpha."""
    history = [IncomingStudy("1.1", "OTHER", "P1", "20200101")]
    rows = [AutoIdRow("1", "Alpha", sha512_hex("P1"), "A001"),
            AutoIdRow("2", "Alpha", sha512_hex("P1 "), "A002")]  # fmt: skip
    audit_settings = AuditSettings(HASHER, WINDOW_BEGIN, 14)
    fold = HistoryFold(PROJECTS)
    fold.add(history)
    assert fold.studies == []
    report = fold.report(rows, audit_settings)
    assert report.counts()["spelling_several_ids"] == 1
    snapshot = Snapshot(tuple(PROJECTS), tuple(history), tuple(rows), WINDOW_BEGIN, WINDOW_BEGIN)
    same_report(report, audit(snapshot, audit_settings))


def test_a_fold_shares_one_copy_of_each_repeated_text():
    one = IncomingStudy("1.1", "".join(["AL", "PHA"]), "".join(["P", "1"]), "20260101")
    two = IncomingStudy("1.2", "".join(["AL", "PHA"]), "".join(["P", "1"]), "20260101")
    assert one.ae_title is not two.ae_title  # as from two JSON answers
    fold = HistoryFold(PROJECTS)
    fold.add([one])
    fold.add([two])
    first, second = fold.studies
    assert first.ae_title is second.ae_title and first.patient_id is second.patient_id


# -- against the sandbox ------------------------------------------------------------------------


def settings_for(sb, tmp_path, **redcap):
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    return replace(settings, redcap=replace(settings.redcap, **redcap)) if redcap else settings


NOW = datetime.now().replace(microsecond=0)  # one window for both audits of a test


def window(settings) -> tuple[datetime, datetime]:
    return NOW - timedelta(days=settings.run.lookback_days), NOW


def whole_audit(settings) -> AuditReport:
    """The unstreamed reference: all of Incoming in one list, then ``checks.audit``."""
    begin, end = window(settings)
    snapshot, in_window = read_history(RedcapGateway(settings.redcap), begin, end)
    hasher, days = settings.run.hasher(), settings.run.lookback_days
    return audit(snapshot, AuditSettings(hasher, begin, days, in_window))


def streamed_audit(settings) -> tuple[AuditReport, RedcapGateway]:
    begin, end = window(settings)
    gateway = RedcapGateway(settings.redcap, sleep=lambda _: None)
    hasher, days = settings.run.hasher(), settings.run.lookback_days
    return audit_history(gateway, hasher, begin, end, days), gateway


def planted(sb) -> int:
    """The audit tests' clean history and planted problems, and 60 more studies to chunk; how
    many studies Incoming holds."""
    clean_history(sb)
    plant_problems(sb)
    more = [study(f"9.{n}", "ALPHA" if n % 3 else "OTHER", f"X{n % 7}") for n in range(60)]
    sb.add_rows("incoming", more)
    sb.add_rows("incoming", [transfer("9.4", 1, "Alpha", "A999")])
    return len({row["study_instance_uid"] for row in sb.rows("incoming")})


def short_chunks(sb, which: Callable[[int], bool]) -> list[int]:
    """Incoming's record-list exports (numbered from 1) for which ``which`` holds come back
    without every third record: HTTP 200, valid JSON. Returns the numbers of the short ones."""
    answer, seen, shortened = sb.app.handle, [0], []

    def handle(body: bytes):
        reply = answer(body)
        form = parse_form(body)
        if "records" in form and "study_aetitle_addressed" in form.values():
            seen[0] += 1
            if which(seen[0]):
                shortened.append(seen[0])
                return dropped_rows(reply)
        return reply

    sb.app.handle = handle
    return shortened


def test_the_streamed_audit_of_a_real_history_equals_the_whole_list_audit(sandbox, tmp_path):
    total = planted(sandbox)
    settings = settings_for(sandbox, tmp_path, read_chunk_records=25)
    streamed, gateway = streamed_audit(settings)
    same_report(streamed, whole_audit(settings))
    assert streamed.findings and streamed.studies == total
    chunks = -(-total // 25)
    assert chunks >= 3  # a first, a middle and a last chunk
    assert gateway.requests == 2 + (1 + chunks) + 2 + 1  # projects, Incoming, AutoID, window


def test_a_chunk_short_mid_stream_reads_all_history_again_and_counts_nothing_twice(
    sandbox, tmp_path
):
    total = planted(sandbox)
    settings = settings_for(sandbox, tmp_path, read_chunk_records=25)
    expected = whole_audit(settings)
    _, clean = streamed_audit(settings)
    # the second chunk comes back short after the first went into the fold
    shortened = short_chunks(sandbox, lambda n: n == 2)
    streamed, gateway = streamed_audit(settings)
    assert shortened == [2]
    same_report(streamed, expected)  # nothing of the first attempt is counted
    assert streamed.studies == total
    assert gateway.requests == clean.requests + 1 + 2  # names again, chunks 1 and 2 again


def test_the_streamed_read_never_asks_for_an_accession_number(sandbox, tmp_path):
    planted(sandbox)
    settings = settings_for(sandbox, tmp_path, read_chunk_records=25)
    answer, asked = sandbox.app.handle, []

    def handle(body: bytes):
        asked.append(parse_form(body))
        return answer(body)

    sandbox.app.handle = handle
    streamed, _ = streamed_audit(settings)
    assert streamed.studies and len(asked) > 5
    assert not [form for form in asked if "study_accession_number" in form.values()]


def test_chunks_short_on_every_read_fail_the_audit_closed(sandbox, tmp_path):
    planted(sandbox)
    settings = settings_for(sandbox, tmp_path, read_chunk_records=25, read_retries=2)
    shortened = short_chunks(sandbox, lambda n: n >= 2)  # each attempt's first chunk is whole
    gateway = RedcapGateway(settings.redcap, sleep=lambda _: None)
    projects = gateway.project_records()
    with pytest.raises(RedcapError) as failure:
        fold_history(gateway, projects)
    assert len(shortened) == 3  # one short chunk per attempt
    message = str(failure.value)
    assert "incoming" in message and "all history" in message
    assert "incomplete answer" in message and "(read 3x)" in message
    assert "X1" not in message and "9.1" not in message  # no patient ID, no study UID


def test_each_attempt_opens_with_an_empty_chunk_and_the_last_holds_every_study_once(
    sandbox, tmp_path
):
    """What the gateway promises the fold, which starts over on a new attempt number."""
    total = planted(sandbox)
    settings = settings_for(sandbox, tmp_path, read_chunk_records=25)
    short_chunks(sandbox, lambda n: n == 2)
    gateway = RedcapGateway(settings.redcap, sleep=lambda _: None)
    seen = list(gateway.iter_history_chunks())
    assert seen[0] == (1, []) and [a for a, _ in seen].index(2) == 2
    assert seen[2] == (2, [])
    first = [s.uid for a, chunk in seen if a == 1 for s in chunk]
    last = [s.uid for a, chunk in seen if a == 2 for s in chunk]
    assert len(first) == 25  # one chunk went out before the short one
    assert len(last) == len(set(last)) == total


def test_transfers_in_their_own_database_stream_too(demo_sandbox, tmp_path):
    config = demo_sandbox.write_kit_files(tmp_path)
    other_url = demo_sandbox.url.replace("127.0.0.1", "localhost")
    config.write_text(config.read_text() + f'\n[redcap.urls]\ntransfers = "{other_url}"\n')
    settings = load_settings(config)
    assert not settings.redcap.same_database("incoming", "transfers")
    settings = replace(settings, redcap=replace(settings.redcap, read_chunk_records=40))
    streamed, _ = streamed_audit(settings)
    same_report(streamed, whole_audit(settings))
    assert streamed.projects["transferred"].sum() > 0  # the transfers were read


def test_the_audits_run_details_and_summary_give_its_peak_memory(sandbox, tmp_path):
    planted(sandbox)
    config = sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    report = audit_in_kernel(str(config), output_dir=str(tmp_path))
    assert report.run is not None and report.run.peak_rss_mb > 10
    details = run_details(report).data
    assert f"<b>Peak memory:</b> {report.run.peak_rss_mb:,.0f} MiB" in details
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["peak_rss_mb"] == round(report.run.peak_rss_mb, 1)
