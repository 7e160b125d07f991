"""Runs that remember (autoid_lib.anomaly_memory): pure, so the properties are checked directly."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from autoid_lib.anomaly_memory import (
    NEW,
    OPEN,
    Memory,
    age_text,
    anomaly_keys,
    memory_as_json,
    memory_from_json,
    remember,
)

T0 = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)


def anomaly(kind: str, project: str, message: str = "m", count: int = 1) -> dict:
    return {"kind": kind, "project": project, "message": message, "count": count, "action": "a"}


anomalies = st.lists(
    st.builds(
        anomaly,
        st.sampled_from(["ambiguous_ae_title", "invalid_pattern", "id_conflict"]),
        st.sampled_from(["A", "B", "A, B"]),
        st.text(max_size=5),
    ),
    max_size=6,
)


def test_first_run_marks_everything_new_and_names_no_previous_run():
    memory, changes = remember(Memory(), [anomaly("invalid_pattern", "A")], T0)
    assert [m.state for m in changes.marks] == [NEW]
    assert changes.since is None and changes.changed
    assert memory.updated == T0.isoformat(timespec="seconds")


def test_the_same_problem_with_another_count_is_not_new_and_changes_nothing():
    memory, _ = remember(Memory(), [anomaly("id_conflict", "A", "3 studies", 3)], T0)
    later = T0 + timedelta(weeks=3)
    _, changes = remember(memory, [anomaly("id_conflict", "A", "5 studies", 5)], later)
    assert [m.state for m in changes.marks] == [OPEN]
    assert not changes.changed
    assert changes.marks[0].seen == "open since 2026-11-01 (3 weeks)"
    assert "0 new, 1 still open, 0 resolved" in changes.text


def test_a_problem_that_went_away_is_resolved_once_then_forgotten():
    memory, _ = remember(Memory(), [anomaly("invalid_pattern", "A"), anomaly("x", "B")], T0)
    memory, changes = remember(memory, [anomaly("x", "B")], T0 + timedelta(hours=1))
    assert [r.key for r in changes.resolved] == ["invalid_pattern|A"] and changes.changed
    memory, changes = remember(memory, [anomaly("x", "B")], T0 + timedelta(hours=2))
    assert changes.resolved == () and not changes.changed


def test_a_problem_that_comes_back_is_new_again():
    memory, _ = remember(Memory(), [anomaly("x", "A")], T0)
    memory, _ = remember(memory, [], T0 + timedelta(hours=1))
    _, changes = remember(memory, [anomaly("x", "A")], T0 + timedelta(hours=2))
    assert changes.marks[0].state == NEW


@given(anomalies)
def test_keys_are_unique_and_do_not_depend_on_the_order(found):
    keys = anomaly_keys(found)
    assert len(set(keys)) == len(found)
    backwards = found[::-1]
    pairs = sorted(zip(keys, map(str, found), strict=True))
    assert pairs == sorted(zip(anomaly_keys(backwards), map(str, backwards), strict=True))


@given(anomalies, anomalies)
def test_every_key_is_new_open_or_resolved_exactly_once(before, now):
    memory, _ = remember(Memory(), before, T0)
    _, changes = remember(memory, now, T0 + timedelta(days=1))
    old, current = set(anomaly_keys(before)), set(anomaly_keys(now))
    assert {m.key for m in changes.marks if m.state == OPEN} == old & current
    assert {m.key for m in changes.marks if m.state == NEW} == current - old
    assert {r.key for r in changes.resolved} == old - current
    assert changes.changed == (old != current)


@given(anomalies)
def test_the_file_form_reads_back_as_the_same_memory(found):
    memory, _ = remember(Memory(), found, T0)
    assert memory_from_json(json.loads(json.dumps(memory_as_json(memory)))) == memory


def test_a_malformed_file_is_no_memory():
    for data in (None, [], {"schema": 99}, {"schema": 1, "open": [{"kind": "x"}]}):
        assert memory_from_json(data) == Memory()


def test_ages_read_as_people_say_them():
    assert age_text(40 * 60) == "40 min"
    assert age_text(5 * 3600) == "5 hours"
    assert age_text(36 * 3600) == "36 hours"
    assert age_text(3 * 86400) == "3 days"
    assert age_text(22 * 86400) == "3 weeks"


# -- through real runs against the sandbox ---------------------------------------------------


def _demo_settings(sb, tmp_path):
    from autoid_lib.config import load_settings

    return load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))


def test_three_live_runs_new_then_not_new_then_resolved(demo_sandbox, tmp_path):
    from autoid_lib.records.anomaly_log import FILE_NAME
    from autoid_lib.records.summary import run_summary
    from autoid_lib.run import run_autoid

    settings = _demo_settings(demo_sandbox, tmp_path)
    first = run_autoid(settings, now=T0)
    assert first.changes is not None and first.changes.new >= 2 and first.changes.since is None
    assert (tmp_path / "reports" / FILE_NAME).stat().st_mode & 0o777 == 0o600

    second = run_autoid(settings, now=T0 + timedelta(days=2))
    assert second.changes is not None and not second.changes.changed
    assert second.changes.new == 0 and second.changes.still_open == first.changes.new
    summary = run_summary(second)
    assert {a["state"] for a in summary["anomalies"]} == {OPEN}
    assert summary["anomaly_changes"]["since"] == T0.isoformat(timespec="seconds")

    # fix one: CardioB gets its own AE title
    demo_sandbox.add_rows("projects", [{"record_id": "6", "project_autoid_aetitle": "CARDIOB"}])
    third = run_autoid(settings, now=T0 + timedelta(days=3))
    assert third.changes is not None and third.changes.changed
    assert [r.key for r in third.changes.resolved] == ["ambiguous_ae_title|CardioA, CardioB"]
    assert "1 resolved" in run_summary(third)["anomaly_changes"]["text"]


def test_a_dry_run_compares_but_leaves_the_next_live_run_its_news(demo_sandbox, tmp_path):
    from autoid_lib.run import run_autoid

    settings = _demo_settings(demo_sandbox, tmp_path)
    dry = run_autoid(settings, dry_run=True, now=T0)
    assert dry.changes is not None and dry.changes.new > 0
    live = run_autoid(settings, now=T0 + timedelta(hours=1))
    assert live.changes is not None and live.changes.new == dry.changes.new


def test_a_run_limited_to_some_projects_neither_compares_nor_resolves(demo_sandbox, tmp_path):
    from autoid_lib.run import run_autoid

    settings = _demo_settings(demo_sandbox, tmp_path)
    run_autoid(settings, now=T0)
    limited = run_autoid(settings, now=T0 + timedelta(hours=1), projects=["ABCTrial"])
    assert limited.changes is None
    after = run_autoid(settings, now=T0 + timedelta(hours=2))
    assert after.changes is not None and after.changes.resolved == ()
