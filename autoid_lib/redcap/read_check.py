"""Is a chunked read complete? Pure checks between what was asked and what came back.

REDCap has answered large exports with HTTP 200, valid JSON and rows missing; a missing AutoID
row makes a returning patient look new. So a read first lists the record names (a cheap
names-only export), then asks for them in chunks, and every chunk must bring back exactly the
records it asked for, each once. Anything else is an ``IncompleteRead``: the caller reads again
or fails closed, never plans from a smaller table. Messages give counts only: record names of
Incoming are study UIDs.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

REPEAT_INSTRUMENT = "redcap_repeat_instrument"


class IncompleteRead(Exception):
    """An answer that does not hold what was asked for (counts only, no record names)."""


def record_names(rows: Iterable[Mapping[str, str]], id_field: str) -> list[str]:
    """The distinct, non-empty record names of ``rows`` in first-seen order (a names-only
    export has one row per record, plus one per repeat instance)."""
    return list(dict.fromkeys(name for row in rows if (name := row.get(id_field, ""))))


def names_from_csv(text: str, id_field: str) -> list[str]:
    """The record names of a names-only CSV export (its first column), refusing an answer
    whose header is not the record ID field: an error page is not an empty list. A byte-order
    mark, CRLF line ends and quoted names are CSV as REDCap writes it."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff")))
    if not reader.fieldnames or reader.fieldnames[0] != id_field:
        raise IncompleteRead("answer is not a CSV list of record names")
    return record_names(reader, id_field)


def check_chunk(rows: Sequence[Mapping[str, str]], asked: Sequence[str], id_field: str) -> None:
    """Every asked record came back, nothing else did, and each record has one own row."""
    missing = len(set(asked) - {row.get(id_field, "") for row in rows})
    problems = [f"{missing} of {len(set(asked))} requested records missing"] * bool(missing)
    _refuse(problems + _strays(rows, asked, id_field))


def check_present(rows: Sequence[Mapping[str, str]], asked: Sequence[str], id_field: str) -> None:
    """Records asked for by name where some may be gone (deleted): nothing else came back,
    and each record that did has one own row."""
    _refuse(_strays(rows, asked, id_field))


def _strays(rows: Sequence[Mapping[str, str]], asked: Sequence[str], id_field: str) -> list[str]:
    """What an answer holds that was not asked for: other records, records twice."""
    own_rows = Counter(row.get(id_field, "") for row in rows if not row.get(REPEAT_INSTRUMENT))
    extra = len({row.get(id_field, "") for row in rows} - set(asked))
    twice = sum(1 for count in own_rows.values() if count > 1)
    return [f"{extra} record(s) not requested"] * bool(extra) + [
        f"{twice} record(s) returned twice"
    ] * bool(twice)


def _refuse(problems: list[str]) -> None:
    if problems:
        raise IncompleteRead("; ".join(problems))


def check_total(read: int, listed: int) -> None:
    """The chunks together hold as many records as the names-only export listed."""
    if read != listed:
        raise IncompleteRead(f"the chunks held {read} records, the record list {listed}")
