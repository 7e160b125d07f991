"""REDCap's clock, I/O part: confirm it or measure it from a record the kit itself wrote.

REDCap's ``dateRangeBegin`` counts a record as changed when its log has a change at or after
the bound (inclusive, to the second) on REDCap's own clock, its PHP ``date.timezone``. So a
record written between two known UTC moments tells where that clock is:

``confirm``   1 request: a names-only export of the record with ``dateRangeBegin`` at the
              kit's idea of REDCap's time when it wrote, minus the tolerance. Listed: the kit
              is not ahead by more than that (every run, with its lease ticket).
``measure``   6-7 requests: the same question, bisected over the whole quarter-hours from
              UTC-12 to UTC+14 (``server_clock``), when ``confirm`` failed or for ``check``.
``probe``     what ``autoid check`` does without a ticket: write the kit's probe record
              (``server_clock.CLOCK_RECORD``), measure, delete it if the token may.

The pure half (bounds, offsets, zones, verdicts) is ``autoid_lib.server_clock``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime

from autoid_lib.errors import RedcapError
from autoid_lib.redcap.gateway import lacks_delete_right
from autoid_lib.server_clock import (
    CANDIDATES,
    CLOCK_RECORD,
    Offset,
    bisection_bound,
    offset_found,
    probe_row,
)

log = logging.getLogger("autoid.clock")
# A record name the kit never writes: deleting it proves the right and deletes nothing
NEVER_A_RECORD = "autoid-kit-never-a-record"
# REDCap 15.7.6: rights are checked before existence (API/record/delete.php)
_DOES_NOT_EXIST = "do not exist"  # api_131


def listed(gateway, record: str, begin: datetime) -> bool:
    """Whether REDCap counts ``record`` as changed at or after ``begin`` (its clock)."""
    names = gateway.changed_since("autoid", [record], begin)
    return record.casefold() in {name.casefold() for name in names}  # REDCap's names ignore case


def confirm(gateway, record: str, bound: datetime) -> bool:
    """1 request: is the kit's own ``record`` among the changes since ``bound``?"""
    return listed(gateway, record, bound)


def measure(gateway, record: str, sent_utc: datetime) -> Offset:
    """REDCap's clock minus UTC, to the nearest quarter-hour, from ``record`` written just
    after ``sent_utc`` (the kit's UTC clock): 6 or 7 requests (``server_clock``)."""
    below, above = -1, CANDIDATES + 1  # listed at ``below``, not at ``above`` (sentinels)
    asked = 0
    while above - below > 1:
        middle = (below + above) // 2
        asked += 1
        if listed(gateway, record, bisection_bound(sent_utc, middle)):
            below = middle
        else:
            above = middle
    found = offset_found(below)
    log.info("REDCap's clock measured in %d requests: %s", asked, found.describe())
    return found


def probe(
    gateway, *, may_delete: bool, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Offset:
    """``autoid check``'s measurement: write the probe record, measure, then delete it when
    the token may delete (else it stays, rewritten under its one name at every check)."""
    sent = clock()
    row = probe_row(sent, secrets.token_hex(4))
    gateway.write_kit_record("autoid", row, "write the clock probe record")
    try:
        return measure(gateway, CLOCK_RECORD, sent)
    finally:
        if may_delete:
            gateway.delete_kit_records("autoid", [CLOCK_RECORD], "delete the clock probe record")


def may_delete(gateway) -> bool:
    """Whether the AutoID token may delete records, asked without harm: a delete of a name
    the kit never writes. REDCap checks the rights first (403 without "Delete Records", 400
    api_135 without "API Import/Update"), existence after (api_131)."""
    try:
        gateway.delete_kit_records("autoid", [NEVER_A_RECORD], "probe the delete right")
    except RedcapError as error:
        if lacks_delete_right(error):
            return False
        if _DOES_NOT_EXIST in error.reason.lower():
            return True
        raise
    log.warning("REDCap deleted the reserved record %s: it existed", NEVER_A_RECORD)
    return True
