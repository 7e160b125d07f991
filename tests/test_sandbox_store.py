"""The store's SQL selection against its definition, on random tables: a record list and a
created/modified date range pick exactly the records a loop over every record would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from autoid_lib.sandbox.store import BASE, Store, record_sort_key

NAMES = st.sampled_from(["1", "2", "10", "11", "a", "b 2", "1.2.3", "x'y", '"q"', "%", "é"])
STAMPS = st.sampled_from([f"2026-0{m}-01 0{h}:00:00" for m in (1, 2, 3) for h in (0, 5)])


@st.composite
def tables(draw):
    """Records ``name -> (created, modified, values)`` with modified never before created."""
    out = {}
    for name in draw(st.sets(NAMES, max_size=8)):
        created, later = sorted(draw(st.lists(STAMPS, min_size=2, max_size=2)))
        values = draw(st.dictionaries(st.sampled_from(["c1", "c2", "c3"]), st.text(max_size=3)))
        out[name] = (created, later, values)
    return out


def stored(table) -> Store:
    store = Store()
    store.put_records(
        "incoming", [(n, {BASE: values}, c, m) for n, (c, m, values) in table.items()]
    )
    store.put_records("autoid", [("1", {BASE: {"c1": "other database"}}, "2020", "2020")])
    return store


def _between(stamp: str, low: str | None, high: str | None) -> bool:
    return (low is None or stamp >= low) and (high is None or stamp <= high)


@settings(max_examples=150, deadline=None)
@given(
    table=tables(),
    records=st.none() | st.lists(NAMES, max_size=6),
    low=st.none() | STAMPS,
    high=st.none() | STAMPS,
)
def test_matching_is_the_record_list_and_date_range_rule(table, records, low, high):
    store = stored(table)
    expected = {
        name
        for name, (created, modified, _) in table.items()
        if (records is None or name in records)
        and any(_between(t, low, high) for t in (created, modified))
    }
    assert store.matching("incoming", records, low, high) == expected


@settings(max_examples=150, deadline=None)
@given(
    table=tables(),
    records=st.none() | st.lists(NAMES, max_size=6),
    columns=st.none() | st.lists(st.sampled_from(["c1", "c2", "c3", "nope"]), max_size=3),
)
def test_load_returns_the_named_records_and_columns_in_redcap_order(table, records, columns):
    store = stored(table)
    names = [n for n in table if records is None or n in records]
    expected = {}
    for name in sorted(names, key=record_sort_key):
        kept = {
            col: value
            for col, value in table[name][2].items()
            if value != "" and (columns is None or col in columns)
        }
        expected[name] = {BASE: kept} if kept else {}
    loaded = store.load("incoming", records, columns)
    assert loaded == expected
    assert list(loaded) == list(expected)  # the order too
