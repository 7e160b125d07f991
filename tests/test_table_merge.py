"""The local copy's rules (``table_merge``), pure: which read a run makes, and that the copy
plus the record list plus the changes is the table REDCap holds, or an incomplete read."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoid_lib.redcap.read_check import IncompleteRead
from autoid_lib.redcap.table_merge import (
    CopyState,
    ReadKind,
    changes_since,
    choose_read,
    merge,
    without_deleted,
    witnesses,
)

NOW = datetime(2026, 12, 4, 12, 0)
COPY = CopyState(
    rows={str(n): {"record_id": str(n)} for n in range(10)},
    read_began=NOW - timedelta(minutes=5),
    full_read_at=NOW - timedelta(hours=3),
)


def kind(copy=COPY, **options):
    chosen = dict(now=NOW, server_now=NOW, full_read_hours=24, one_request=5) | options
    return choose_read(copy, **chosen)


def test_a_copy_is_used_unless_a_whole_read_is_due():
    assert kind()[0] == ReadKind.CHANGES
    assert kind(forced=True) == (ReadKind.FULL, "asked for (--full-read)")
    assert kind(None, missing_because="why") == (ReadKind.FULL, "why")
    assert kind(one_request=10)[0] == ReadKind.FULL  # one request reads it whole anyway
    assert kind(full_read_hours=3)[0] == ReadKind.FULL  # the periodic whole read
    assert kind(full_read_hours=3.1)[0] == ReadKind.CHANGES
    assert kind(now=NOW - timedelta(hours=4))[0] == ReadKind.FULL  # the clock went back
    assert kind(server_now=NOW - timedelta(minutes=6))[0] == ReadKind.FULL


def test_changes_are_read_from_the_last_read_minus_the_overlap():
    assert changes_since(COPY, 120) == NOW - timedelta(minutes=125)


def test_a_vanished_lease_ticket_is_dropped_without_asking():
    rows = {"1": {"id": "1", "lease": "yes"}, "2": {"id": "2", "lease": ""}}
    merged = merge(rows, [], [], "id", routinely_deleted=lambda row: row["lease"] == "yes")
    assert merged.vanished == ("2",) and "1" not in merged.rows


def test_a_witness_missing_from_the_answer_makes_it_suspect():
    merged = merge({"1": {"id": "1"}, "2": {"id": "2"}}, ["1"], [], "id")
    assert witnesses(merged, ["1"]) == ["1"]
    with pytest.raises(IncompleteRead):
        without_deleted(merged, [], "id", ["1"])
    assert without_deleted(merged, [{"id": "1"}], "id", ["1"]) == {"1": {"id": "1"}}


# -- the property: a table's history, a copy from a past read, and what REDCap answers now ------

OVERLAP = 120  # minutes
event = st.tuples(
    st.integers(0, 600),  # minute of the day on REDCap's clock
    st.sampled_from(["write", "delete"]),
    st.integers(1, 12),  # record name
    st.integers(0, 3),  # value
)


def replay(events, until: int) -> tuple[dict[str, dict], dict[str, int]]:
    """The table after the events up to minute ``until``, and each record's last write."""
    table: dict[str, dict] = {}
    written: dict[str, int] = {}
    for minute, action, record, value in sorted(events, key=lambda e: e[0]):
        if minute > until:
            break
        name = str(record)
        if action == "delete":
            table.pop(name, None)
        else:
            table[name] = {"id": name, "value": str(value)}
            written[name] = minute
    return table, written


@given(
    events=st.lists(event, max_size=60),
    read_at=st.integers(0, 600),
    clock_error=st.integers(-OVERLAP, OVERLAP),  # this machine's clock against REDCap's
    dropped=st.sets(st.integers(1, 12), max_size=3),  # names the record list silently lacks
)
def test_the_copy_and_the_changes_are_the_table_or_the_read_fails(
    events, read_at, clock_error, dropped
):
    copy_rows, _ = replay(events, read_at)  # the previous read: complete, began at read_at
    now_rows, written = replay(events, 600)
    since = read_at + clock_error - OVERLAP  # our idea of read_at, minus the overlap
    changed = [row for name, row in now_rows.items() if written[name] >= since]
    listed = [name for name in now_rows if int(name) not in dropped]
    merged = merge(copy_rows, listed, changed, "id")
    assert merged.unexplained == 0  # the argument in docs/run.md: nothing is unexplained
    asked = [*merged.vanished, *witnesses(merged, listed)]
    answer = [now_rows[name] for name in asked if name in now_rows]
    try:
        table = without_deleted(merged, answer, "id", witnesses(merged, listed))
    except IncompleteRead:
        assert any(int(n) in dropped for n in now_rows)  # only a short list is refused
        return
    assert table == now_rows


def test_a_csv_record_list_is_read_as_redcap_writes_it():
    from autoid_lib.redcap.read_check import names_from_csv

    text = '\ufeffrecord_id\r\n1\r\n2\r\n"a,b"\r\n2\r\n'
    assert names_from_csv(text, "record_id") == ["1", "2", "a,b"]
    assert names_from_csv("record_id\n", "record_id") == []
    with pytest.raises(IncompleteRead):
        names_from_csv("<html>Allowed memory size exhausted</html>\n", "record_id")
    with pytest.raises(IncompleteRead):
        names_from_csv("study_instance_uid\n1.2.3\n", "record_id")
