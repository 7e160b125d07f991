"""Weeks of operation, shortened: the mail's outbox, runs in the order they happened, flap
damping, reminders on schedule, prune and the index against a clock that jumps.

Each run here is a real run folder (``new_run_folder``: a sequence number claimed under its
lock) with its summary.json, mailed by ``notify`` through a real SMTP server (aiosmtpd) that
the tests stop and start. Only the notebook is left out: ``notify`` reads nothing else.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoid_lib.mail.policy import FLAPPING, STABLE, MailHistory, MailRules, decide
from autoid_lib.mail.send import EmailSettings, find_previous_summary, mail_history, notify
from autoid_lib.records.folders import (
    SUMMARY_FILE,
    new_run_folder,
    read_summary,
    run_folders,
    run_sequence,
    write_json,
)
from autoid_lib.records.index import rebuild_index
from autoid_lib.records.prune import prune_reports

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
FIVE = timedelta(minutes=5)
QUIET = {
    "schema": 1,
    "status": "ok",
    "mode": "live",
    "transfers_created": 0,
    "ids_created": 0,
    "ids_reused": 0,
    "anomalies": [],
    "projects": [],
    "error": None,
    "report": "report.html",
    "detail": "summary",
}
BUSY = dict(QUIET, transfers_created=3, ids_created=2)
FAILED = dict(
    QUIET,
    status="failed",
    error={"step": "read incoming", "type": "RedcapError", "message": "HTTP 500"},
)


def settings_for(port: int, **changes: Any) -> EmailSettings:
    return EmailSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        security="none",
        sender="autoid@example.org",
        recipients=("ops@example.org",),
        send=changes.pop("send", "on-change"),
        timeout_s=5,
        **changes,
    )


def run(reports: Path, data: Mapping[str, Any], when: datetime, mail: EmailSettings) -> dict:
    """One recorded run at ``when`` (the host's clock): folder, summary.json, mail."""
    folder = new_run_folder(reports, str(data["mode"]), when)
    summary = copy.deepcopy(dict(data))
    summary.update(started=when.isoformat(timespec="seconds"), seq=run_sequence(folder))
    (folder / "report.html").write_text("<html><body>report</body></html>")
    write_json(folder / SUMMARY_FILE, summary)
    summary["email"] = notify(summary, folder, mail)
    write_json(folder / SUMMARY_FILE, summary)
    return summary["email"]


def bodies(inbox) -> list[str]:
    return [m.get_body(("plain",)).get_content() for m in inbox.messages()]


# -- 1. the outbox: an SMTP outage loses nothing and duplicates nothing ---------------------


def test_a_transfer_created_while_smtp_is_down_is_mailed_once_when_it_is_back(
    smtp_switch, tmp_path
):
    reports, mail = tmp_path / "reports", settings_for(smtp_switch.port)
    assert run(reports, QUIET, T0, mail)["sent"] is True  # the first run: nothing to compare
    smtp_switch.stop()
    down = run(reports, BUSY, T0 + FIVE, mail)  # creates 3 transfers; its mail fails
    assert down["sent"] is False and "cannot reach" in down["error"]
    assert down["news"] == ["3 transfers and 2 IDs created"]
    for step in (2, 3):  # still down: each run tries, none adds news
        entry = run(reports, QUIET, T0 + step * FIVE, mail)
        assert entry["sent"] is False and entry["news"] == []
    smtp_switch.start()
    back = run(reports, QUIET, T0 + 4 * FIVE, mail)
    assert back["sent"] is True and back["carried"] == 1
    assert back["reason"] == "1 earlier news never mailed (3 transfers and 2 IDs created)"
    for step in (5, 6):  # delivered: the outbox is empty, quiet runs are quiet again
        assert run(reports, QUIET, T0 + step * FIVE, mail)["sent"] is False
    assert len(smtp_switch.inbox.envelopes) == 2
    [_, carried] = smtp_switch.inbox.messages()
    assert "earlier not mailed" in carried["Subject"]
    text = carried.get_body(("plain",)).get_content()
    assert "3 transfers and 2 IDs created" in text
    assert "3 transfers and 2 IDs created" in carried.get_body(("html",)).get_content()
    assert text.count("3 transfers and 2 IDs created") == 1


def test_an_outage_folds_its_news_and_loses_none(smtp_switch, tmp_path):
    """Failures and flapping during an SMTP outage arrive in the first mail after it, folded."""
    reports, mail = tmp_path / "reports", settings_for(smtp_switch.port, send="on-attention")
    run(reports, QUIET, T0, mail)
    smtp_switch.stop()
    when = T0
    for data in [FAILED] * 3 + [QUIET] * 2 + [FAILED] * 2 + [QUIET]:
        when += FIVE
        assert run(reports, data, when, mail)["sent"] is False
    smtp_switch.start()
    assert run(reports, QUIET, when + FIVE, mail)["sent"] is True
    assert run(reports, QUIET, when + 2 * FIVE, mail)["sent"] is False
    [mailed] = bodies(smtp_switch.inbox)  # the first run's ok sends nothing under on-attention
    # each failed run was news (the last mailed state was ok): folded into one line; the
    # second outage made the status flap (3 changes), which is said once instead
    assert mailed.count("the run failed") == 1
    assert "runs of 2026-11-28T10:05:00+00:00 to 2026-11-28T10:15:00+00:00 (3 runs)" in mailed
    assert mailed.count("the status is flapping") == 1


# -- 2. runs in the order they happened: a clock stepped back, repeated seconds ------------


def test_a_clock_stepped_back_compares_with_the_run_before_not_the_clocks_choice(
    smtp_switch, tmp_path
):
    """Runs fail for an hour, the clock steps back an hour, REDCap is healthy: one mail that
    it works again, then quiet (before: "nothing changed", then eleven "failed to ok")."""
    reports, mail = tmp_path / "reports", settings_for(smtp_switch.port)
    run(reports, QUIET, T0 - FIVE, mail)
    failures = [run(reports, FAILED, T0 + i * FIVE, mail) for i in range(12)]
    assert [e["sent"] for e in failures] == [True] + [False] * 11
    healthy = [run(reports, QUIET, T0 + i * FIVE, mail) for i in range(12)]  # the same times
    assert [e["sent"] for e in healthy] == [True] + [False] * 11
    assert healthy[0]["reason"] == "status changed from failed to ok"
    assert len(smtp_switch.inbox.envelopes) == 3

    folders = run_folders(reports)
    assert [parsed.seq for _, parsed in folders] == list(range(1, 26))
    assert len({path.name for path, _ in folders}) == 25  # repeated seconds, unique names
    [*_, (last_failed, _), (first_ok, _)] = folders[:14]
    assert find_previous_summary(reports, first_ok)["seq"] == read_summary(last_failed)["seq"]

    page = rebuild_index(reports).read_text()
    statuses = re.findall(r'class="s s-(\w+)"', page)
    assert statuses == ["ok"] * 12 + ["failed"] * 12 + ["ok"]  # newest first, by sequence
    assert prune_reports(reports, 30, T0 + timedelta(days=1)) == []


def test_same_second_runs_get_unique_names_in_the_order_they_started(tmp_path):
    moment = datetime(2026, 11, 28, 10, 0, 0, 0, tzinfo=UTC)  # .000: sorts before 10:00:00Z
    made = [new_run_folder(tmp_path, "live", moment) for _ in range(4)]
    assert len(set(made)) == 4
    assert [path for path, _ in run_folders(tmp_path)] == made
    assert [run_sequence(path) for path in made] == [1, 2, 3, 4]


def test_numbering_continues_after_the_folders_when_its_state_file_is_lost(tmp_path):
    for _ in range(3):
        new_run_folder(tmp_path, "live", T0)
    (tmp_path / "run-sequence.json").unlink()
    assert run_sequence(new_run_folder(tmp_path, "dry", T0)) == 4
    (tmp_path / "run-sequence.json").write_text("{not json")
    assert run_sequence(new_run_folder(tmp_path, "dry", T0)) == 5


def test_folders_from_before_sequence_numbers_come_first_by_their_names(tmp_path):
    for name in ("20271128T100000Z-live", "20261001T100000Z-live"):  # one from the future
        (tmp_path / name).mkdir()
    numbered = new_run_folder(tmp_path, "live", T0)
    assert [p.name for p, _ in run_folders(tmp_path)] == [
        "20261001T100000Z-live",
        "20271128T100000Z-live",
        numbered.name,
    ]


# -- 3. a folder from the future ------------------------------------------------------------


def test_prune_keeps_the_real_newest_run_and_reports_a_folder_from_the_future(
    smtp_switch, tmp_path, caplog
):
    reports = tmp_path / "reports"
    now = T0
    real, future = "20261019T100000Z-live", "20271128T100000Z-live"  # 40 days old; next year
    for name in (real, future):
        (reports / name).mkdir(parents=True)
        write_json(reports / name / SUMMARY_FILE, dict(QUIET, started=name))
    assert prune_reports(reports, 30, now) == []
    assert (reports / real).is_dir() and (reports / future).is_dir()
    assert f"{future} lies in the future" in caplog.text

    mail = settings_for(smtp_switch.port)
    assert run(reports, QUIET, now, mail)["sent"] is False  # it has a previous run: quiet
    newest = run_folders(reports)[-1][0]
    assert find_previous_summary(reports, newest) is not None
    statuses = re.findall(r"<tr[^>]*><td>([^<]+)</td>", rebuild_index(reports).read_text())
    assert statuses[0] == f"{now:%Y-%m-%d %H:%M:%S}"  # the new run tops the index

    # the future folder came before the new run, so it is no younger than it: it ages with it
    later = now + timedelta(days=31)
    removed = prune_reports(reports, 30, later)
    assert [p.name for p in removed] == [real, future]
    assert [p for p, _ in run_folders(reports)] == [newest]


def test_a_numbered_run_from_the_future_never_stands_in_for_the_newest(tmp_path):
    old = new_run_folder(tmp_path, "live", T0 - timedelta(days=40))
    ahead = new_run_folder(tmp_path, "live", T0 + timedelta(days=365))  # the clock jumped
    assert prune_reports(tmp_path, 30, T0) == []  # old: the newest with a trustworthy age
    current = new_run_folder(tmp_path, "live", T0)
    assert prune_reports(tmp_path, 30, T0) == [old]
    assert [p for p, _ in run_folders(tmp_path)] == [ahead, current]


# -- 4. flap damping ------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "most"), [("on-change", 4), ("on-attention", 2)])
def test_twelve_runs_alternating_failure_and_success_send_a_handful(
    smtp_switch, tmp_path, policy, most
):
    reports, mail = tmp_path / "reports", settings_for(smtp_switch.port, send=policy)
    write_json(new_run_folder(reports, "live", T0 - FIVE) / SUMMARY_FILE, QUIET)
    entries = [run(reports, (FAILED, QUIET)[i % 2], T0 + i * FIVE, mail) for i in range(12)]
    sent = [e["reason"] for e in entries if e["sent"]]
    assert len(sent) <= most
    assert len(smtp_switch.inbox.envelopes) == len(sent)
    assert "the status is flapping" in sent[-1]
    assert any("status flapping" in m["Subject"] for m in smtp_switch.inbox.messages())
    assert entries[-1]["flap"] == FLAPPING

    # it settles: ok for six runs (the last alternating one included), one "stable again"
    settle = [run(reports, QUIET, T0 + (12 + i) * FIVE, mail) for i in range(8)]
    assert [e["sent"] for e in settle] == [False] * 4 + [True, False, False, False]
    assert settle[4]["flap"] == STABLE and "stable again: status ok" in settle[4]["reason"]


def _simulate(statuses: tuple[str, ...], policy: str) -> list[bool]:
    """The decisions for runs with these statuses, 5 minutes apart, after one quiet run."""
    runs: list[dict] = [dict(QUIET, email={"sent": True})]
    sent = []
    for i, status in enumerate(statuses):
        summary = dict(FAILED if status == "failed" else QUIET)
        history = MailHistory(runs[-1], tuple(reversed(runs[-12:])))
        when = T0 + i * FIVE
        decision = decide(summary, history, MailRules(policy), when)
        entry = {"sent": decision.send, **decision.entry()}
        if status == "failed":
            mailed = when.isoformat() if decision.send else decision.failure_mailed
            entry.update(failure_since=decision.failure_since, failure_mailed=mailed)
        runs.append(dict(summary, email=entry))
        sent.append(decision.send)
    return sent


def _most_in_any_twelve(sent: list[bool]) -> int:
    return max(sum(sent[i : i + 12]) for i in range(max(1, len(sent) - 11)))


@pytest.mark.parametrize(("policy", "bound"), [("on-change", 5), ("on-attention", 4)])
def test_no_sequence_of_twelve_runs_mails_more_than_the_documented_bound(policy, bound):
    worst = max(
        sum(_simulate(statuses, policy))
        for statuses in itertools.product(("ok", "failed"), repeat=12)
    )
    assert worst == bound  # docs/operations.md states it; the bound is reached


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["ok", "failed"]), min_size=12, max_size=48), st.booleans())
def test_longer_histories_stay_within_the_bound_in_every_twelve_runs(statuses, attention):
    policy, bound = ("on-attention", 4) if attention else ("on-change", 5)
    assert _most_in_any_twelve(_simulate(tuple(statuses), policy)) <= bound


def test_always_is_never_damped():
    assert all(_simulate(("ok", "failed") * 6, "always"))


# -- 5. reminders on schedule from the failure's first run ----------------------------------


def test_an_hourly_reminder_is_not_pushed_back_by_the_time_a_run_takes(smtp_switch, tmp_path):
    """The first failed run starts at 10:00:07 and mails; a run starting at 11:00:00 is due a
    reminder (before: counted from the mail, due at 11:00:07, so it slipped to 11:05)."""
    reports = tmp_path / "reports"
    mail = settings_for(smtp_switch.port, send="on-attention", repeat_failure_hours=1)
    run(reports, QUIET, T0 - FIVE, mail)
    first = run(reports, FAILED, T0 + timedelta(seconds=7), mail)
    assert first["sent"] and first["failure_since"] == "2026-11-28T10:00:07+00:00"
    quiet = [run(reports, FAILED, T0 + i * FIVE, mail)["sent"] for i in range(1, 12)]
    assert not any(quiet)
    reminder = run(reports, FAILED, T0 + timedelta(hours=1), mail)
    assert reminder["sent"] is True and reminder["reason"].startswith("reminder")
    assert reminder["failure_since"] == first["failure_since"]  # the schedule stays put
    assert run(reports, FAILED, T0 + timedelta(hours=1) + FIVE, mail)["sent"] is False


def test_mail_history_reads_only_what_the_decision_needs(tmp_path):
    """The outbox ends at the last delivered mail; a thousand earlier runs are not read."""
    reports = tmp_path / "reports"
    for i in range(1000):
        write_json(new_run_folder(reports, "live", T0 + i * FIVE) / SUMMARY_FILE,
                   dict(QUIET, email={"sent": True}, n=i))  # fmt: skip
    current = new_run_folder(reports, "live", T0 + 1000 * FIVE)
    history = mail_history(reports, current)
    assert history.previous["n"] == 999
    assert [r["n"] for r in history.recent] == list(range(999, 987, -1))
    assert history.undelivered == ()
    json.dumps([dict(r) for r in history.recent])
