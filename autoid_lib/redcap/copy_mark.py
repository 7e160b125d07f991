"""The local copy's mark: how a run knows REDCap did not go back in time since the copy was made.

``dateRangeBegin`` shows what changed *forward*. A REDCap restored from last night's backup
goes back: rows revert to older values with their older log times, rows made since vanish,
and nothing in "what changed since" says so; the copy would keep values REDCap no longer
holds, and a study could go out under a pseudonym AutoID does not hold. So each time the copy
of a run that writes takes in changes, the run then writes a *mark* — an AutoID record of its
own, named ``autoid-kit-mark-<installation>-<random>``, project ``autoid-kit:copy-mark`` (never
an ID) — deletes its previous one (in the lease's release), and keeps the mark's name in the
copy. A run that writes nothing keeps AutoID's copy as it was. A REDCap restored to
any moment before the mark was written does not hold that name: the record list every
"changes since" read already makes lacks it, and the run reads whole (0 extra requests).
REDCap restored to after the mark holds everything the copy took in before it.

A token that may not delete records cannot remove its old marks; it keeps one mark under a
fixed name and rewrites its value, which the run reads back by name (1 small request).

Pure: rows and names in, decisions out. The argument in full: docs/run.md, "Reading what
changed".
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Mapping, Sequence

from autoid_lib.snapshot import MARK_PROJECT

Row = Mapping[str, str]
PREFIX = "autoid-kit-mark-"
_LABEL = re.compile(r"[^a-z0-9-]+")


def mark_stem(installation: str) -> str:
    """The part of every mark name that says whose it is (REDCap compares names ignoring
    case, so lower case only)."""
    return f"{PREFIX}{_LABEL.sub('-', installation.lower())[:40]}"


def new_mark(installation: str, *, fixed: bool) -> dict[str, str]:
    """A new mark record: a new name (a token that may delete), or the installation's one
    fixed name with a new value (one that may not)."""
    token = secrets.token_hex(6)
    name = mark_stem(installation) if fixed else f"{mark_stem(installation)}-{token}"
    return {
        "record_id": name,
        "autoid_project_name": MARK_PROJECT,
        "autoid_hash": "",
        "autoid_value": token,
    }


def is_mark_row(row: Row) -> bool:
    return row.get("autoid_project_name", "").strip() == MARK_PROJECT


def own_marks(rows: Iterable[Row], installation: str) -> list[Row]:
    """This installation's marks among ``rows`` (other installations keep their own)."""
    stem = mark_stem(installation)
    return [
        row
        for row in rows
        if is_mark_row(row)
        and (row.get("record_id", "") == stem or row.get("record_id", "").startswith(stem + "-"))
    ]


def kept_mark(copy_rows: Mapping[str, Row], installation: str) -> Row | None:
    """The mark the copy was saved with, or None (no mark: the copy cannot be trusted for a
    changes-only read). A copy holds one at most."""
    marks = own_marks(copy_rows.values(), installation)
    return marks[0] if len(marks) == 1 else None


def is_fixed(mark: Row, installation: str) -> bool:
    """A fixed-name mark (a token that may not delete): checked by its value, read back."""
    return mark.get("record_id", "") == mark_stem(installation)


def went_back(
    mark: Row, listed: Sequence[str], read_back: Row | None = None, *, by_value: bool = False
) -> bool:
    """Whether REDCap no longer holds the copy's ``mark``: a mark by name is checked against
    the record list; a fixed-name one (``by_value``) by its value, ``read_back`` by name
    (None: gone)."""
    if by_value:
        return read_back is None or read_back.get("autoid_value") != mark.get("autoid_value")
    return mark.get("record_id", "") not in set(listed)
