"""Issue 26: a run with nothing to write takes no lease and writes nothing to REDCap; a run
that writes takes the lease, reads again what another installation may have written since its
first look, and plans again (docs/run.md, "Quiet runs").

Real runs against the sandbox (REDCap 15.7.6's rules, over HTTP, through PyCap): a site of
2,000 studies as in ``benchmarks/bench_large_site.py --autoid 2000 --studies 10000``, counted
by the sandbox, and another installation that serves the same study between a run's first look
and its ticket.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

from scenarios import autoid, project, study

from autoid_lib.config import load_settings
from autoid_lib.report import run_details
from autoid_lib.run import run_autoid

LEASE = "[autoid-kit:lease]"


def a_site(sb, known: int = 2000, window: int = 2000) -> None:
    """One project, ``known`` patients with an ID (written long ago), and ``window`` recent
    studies of those patients, each already sent under its ID."""
    sb.set_now(datetime.now() - timedelta(days=400))
    sb.add_rows("projects", [project("1", "KNEE", "KNEE_AE", r"K\d{5}")])
    sb.add_rows("autoid", [autoid(i + 1, "KNEE", f"P{i}", f"K{i:05d}") for i in range(known)])
    sb.set_now(None)
    sb.add_rows(
        "incoming", [study(f"1.2.7.{i}", "KNEE_AE", f"P{i % known}") for i in range(window)]
    )


def installation(sb, folder: Path, label: str):
    config = sb.write_kit_files(folder, reports_dir=folder / "reports")
    config.write_text(config.read_text() + f'[lease]\ninstallation = "{label}"\nwait_s = 0.1\n')
    return load_settings(config)


def requests(sb) -> Counter:
    """The sandbox's request counts by action ("export", "import", "delete")."""
    found: Counter = Counter()
    for (_, _, action), n in sb.request_counts().items():
        found[action] += n
    return found


def transfers_of(sb) -> Counter:
    return Counter(
        r["study_instance_uid"]
        for r in sb.rows("incoming")
        if r.get("redcap_repeat_instrument") == "transfers" and r.get("transfer_name")
    )


def test_on_a_2000_study_site_a_quiet_run_makes_at_most_5_requests_and_writes_nothing(
    sandbox, tmp_path
):
    a_site(sandbox)
    settings = installation(sandbox, tmp_path, "site")
    first = run_autoid(settings)
    assert first.error is None and first.lease is not None  # the hash scheme: it writes
    autoid_rows = sandbox.rows("autoid")
    sandbox.reset_counts()
    second = run_autoid(settings)
    assert second.error is None and second.plan.is_empty and second.lease is None
    counts = requests(sandbox)
    assert sum(counts.values()) <= 5 and counts["import"] == counts["delete"] == 0
    assert sandbox.rows("autoid") == autoid_rows  # no ticket, no mark: REDCap's log untouched
    details = run_details(second).data  # the report says so
    assert "REDCap lease:</b> not taken: nothing to write, so nothing written to REDCap" in details


def test_a_run_with_50_new_studies_writes_them_once_under_the_lease(sandbox, tmp_path):
    a_site(sandbox)
    settings = installation(sandbox, tmp_path, "site")
    run_autoid(settings)
    run_autoid(settings)
    sandbox.add_rows("incoming", [study(f"1.2.8.{i}", "KNEE_AE", f"NEW{i}") for i in range(50)])
    before = transfers_of(sandbox)
    sandbox.reset_counts()
    result = run_autoid(settings)
    assert result.error is None and result.problems == []
    assert result.lease is not None and result.lease["released"] is True
    assert len(result.plan.new_ids) == 50
    created = transfers_of(sandbox) - before
    assert sorted(created) == sorted(f"1.2.8.{i}" for i in range(50))
    assert set(created.values()) == {1}
    assert not [r for r in sandbox.rows("autoid") if r["autoid_project_name"] == LEASE]
    assert sum(requests(sandbox).values()) <= 16
    assert (
        f"REDCap lease:</b> ticket {result.lease['ticket']}, given back" in run_details(result).data
    )


def test_work_done_by_another_installation_after_the_first_look_is_not_done_twice(
    sandbox, tmp_path
):
    """Installation A plans a new patient's study, then — between its first look and its
    ticket — installation B serves it. A's plan made before the lease is never written: after
    its ticket A reads AutoID and the study's transfer requests again, plans again, finds
    nothing to do, gives the lease back and writes nothing. Without the read again, A would
    give the patient a second ID and the study a second transfer request."""
    a_site(sandbox, known=20, window=20)
    a = installation(sandbox, tmp_path / "a", "a")
    b = installation(sandbox, tmp_path / "b", "b")
    run_autoid(a)
    run_autoid(b)
    sandbox.add_rows("incoming", [study("1.2.9.1", "KNEE_AE", "NEWCOMER")])

    handle, served = sandbox.app.handle, []

    def b_serves_just_before_as_ticket(body: bytes):
        if not served and b"forceAutoNumber" in body and b"autoid-kit%3Alease" in body:
            served.append(None)  # B's own ticket passes straight through
            served[0] = run_autoid(b, rng=random.Random(2))  # B's whole run, then A's ticket
        return handle(body)

    sandbox.app.handle = b_serves_just_before_as_ticket
    result = run_autoid(a, rng=random.Random(1))
    sandbox.app.handle = handle
    assert served and served[0].error is None and len(served[0].plan.transfers) == 1
    assert result.error is None and result.plan.is_empty  # planned again: nothing left
    assert result.lease is not None and result.lease["released"] is True
    assert transfers_of(sandbox)["1.2.9.1"] == 1
    ids = [r for r in sandbox.rows("autoid") if r["autoid_project_name"] == "KNEE"]
    assert len(ids) == 21 and len({r["autoid_hash"] for r in ids}) == 21


def test_a_dry_run_reads_as_a_quiet_run_does(sandbox, tmp_path):
    a_site(sandbox, known=20, window=20)
    settings = installation(sandbox, tmp_path, "site")
    run_autoid(settings)
    sandbox.add_rows("incoming", [study("1.2.9.2", "KNEE_AE", "NEWCOMER")])
    sandbox.reset_counts()
    dry = run_autoid(replace(settings), dry_run=True)
    assert dry.plan.transfers and requests(sandbox) == Counter(export=3)
