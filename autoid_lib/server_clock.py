"""REDCap's clock, pure part: offsets, the zones that have them, and what the kit may trust.

REDCap filters ``dateRangeBegin``/``End`` on its PHP ``date.timezone`` (naive local time), and
the kit computes those bounds from ``[run] server_timezone``. When the kit's idea of REDCap's
time runs *ahead* of REDCap's own by more than the local copy's overlap can absorb, "changes
since" reads ask from REDCap's future and miss changes (docs/run.md, "REDCap's clock"); being
behind only widens the reads.

``autoid_lib.redcap.clock`` measures the offset from a record the kit itself wrote: it asks,
with names-only exports, whether the record counts as changed since a bound, and bisects over
the whole quarter-hours between UTC-12 and UTC+14 (every zone's offset today is a multiple of
15 minutes). Each bound sits half a quarter-hour below its candidate, so the answer is the
quarter-hour nearest to (REDCap's log time of the write) - (the kit's UTC time just before it):
exact as long as the write took, and the two machines' clocks differ by, less than 7.5 minutes
together. That is enough: the kit needs the zone to name and whether the configured one is off
by more than the tolerance (an hour at the default overlap), not the seconds.

No I/O and no clock here: times are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, available_timezones

from autoid_lib.snapshot import CLOCK_PROJECT
from autoid_lib.vocab import plural

QUARTER = timedelta(minutes=15)
LOWEST = timedelta(hours=-12)  # UTC-12 (Baker Island) ...
HIGHEST = timedelta(hours=14)  # ... to UTC+14 (Kiribati, Line Islands)
# one quarter beyond each end, so "further out than any zone" is an answer of its own
CANDIDATES = int((HIGHEST - LOWEST) / QUARTER) + 1  # 105 offsets: about 7 requests
DST_HOUR = timedelta(hours=1)  # the hour a DST fall-back repeats on REDCap's naive clock
WRITE_MARGIN = timedelta(minutes=5)  # an import logged before it commits, a slow write
CLOCK_RECORD = "autoid-kit-clock"  # its one fixed name: never an auto-number


def probe_row(written_utc: datetime, nonce: str) -> dict[str, str]:
    """The probe record: under its fixed name, with a value that differs at every write (an
    import that changes nothing is no change to REDCap's date filter)."""
    return {
        "record_id": CLOCK_RECORD,
        "autoid_project_name": CLOCK_PROJECT,
        "autoid_hash": "clock-probe",
        "autoid_value": f"written={_naive_utc(written_utc):%Y-%m-%dT%H:%M:%S}Z;nonce={nonce}",
    }


def tolerance(overlap_minutes: float) -> timedelta:
    """How far ahead of REDCap's clock the kit may be and its "changes since" reads stay
    exact: the copy's overlap minus the DST hour and a write's margin (at least 10 minutes,
    since the config refuses an overlap under 75)."""
    return timedelta(minutes=overlap_minutes) - DST_HOUR - WRITE_MARGIN


def bisection_bound(sent_utc: datetime, candidate: int) -> datetime:
    """The ``dateRangeBegin`` (REDCap's naive time) that asks whether REDCap's clock is at
    least candidate offset ``candidate`` (0 = UTC-12) ahead of UTC at ``sent_utc``: half a
    quarter below it, so a write lag or a skew under 7.5 minutes either way does not matter."""
    offset = LOWEST + candidate * QUARTER - QUARTER / 2
    return (_naive_utc(sent_utc) + offset).replace(microsecond=0)


@dataclass(frozen=True)
class Offset:
    """What the bisection found: REDCap's clock minus UTC, or that it lies outside the zones."""

    offset: timedelta | None  # None: below UTC-12 or above UTC+14 (a machine clock is off)
    below: bool = False  # with offset None: below UTC-12 (else above UTC+14)

    def describe(self) -> str:
        if self.offset is None:
            side = "behind UTC-12" if self.below else "ahead of UTC+14"
            return f"REDCap's clock is {side} by this machine's clock"
        return f"REDCap's clock is {utc_offset_text(self.offset)}"


def offset_found(last_listed: int) -> Offset:
    """The offset from the bisection's answer: the highest candidate for which the record
    still counted as changed (-1: none; ``CANDIDATES - 1`` would mean beyond +14)."""
    if last_listed < 0:
        return Offset(None, below=True)
    if last_listed >= CANDIDATES:
        return Offset(None, below=False)
    return Offset(LOWEST + last_listed * QUARTER)


def utc_offset_text(offset: timedelta) -> str:
    """``UTC+01:00``, ``UTC-05:00``, ``UTC+05:45``."""
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(int(offset.total_seconds() // 60))
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def zone_offset(zone: str, at_utc: datetime) -> timedelta:
    """The UTC offset of ``zone`` ("" = this machine's) at ``at_utc``."""
    local = at_utc.astimezone(ZoneInfo(zone) if zone else None)
    return local.utcoffset() or timedelta(0)


def zone_label(zone: str) -> str:
    return zone or "this machine's zone"


def zones_with(
    offset: timedelta, at_utc: datetime, zones: Iterable[str] | None = None
) -> list[str]:
    """IANA zones (``Area/City`` names, and ``UTC``) whose UTC offset at ``at_utc`` is
    ``offset``, sorted: the settings that would match REDCap's clock now."""
    names = zones if zones is not None else available_timezones()
    return sorted(
        name
        for name in names
        if (name == "UTC" or ("/" in name and not name.startswith(("Etc/", "SystemV/"))))
        and zone_offset(name, at_utc) == offset
    )


def zone_groups(
    offset: timedelta, at_utc: datetime, zones: Iterable[str] | None = None
) -> list[list[str]]:
    """``zones_with`` grouped by the clock they keep over the coming year (the same offset
    at every sample: Europe/Paris and Europe/Berlin are one group), largest group first: any
    zone of a group is as right as another for REDCap's date filter."""
    groups: dict[tuple[timedelta, ...], list[str]] = {}
    for zone in zones_with(offset, at_utc, zones):
        key = tuple(zone_offset(zone, at_utc + k * timedelta(days=15)) for k in range(25))
        groups.setdefault(key, []).append(zone)
    return sorted(groups.values(), key=lambda group: (-len(group), _preference(group[0])))


# Named first when in a group: the zones most REDCap servers are likely to run in
WELL_KNOWN = (
    "UTC", "Europe/Paris", "Europe/London", "Europe/Helsinki", "Europe/Moscow",
    "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix",
    "America/Los_Angeles", "America/Sao_Paulo", "Asia/Kolkata", "Asia/Shanghai", "Asia/Tokyo",
    "Australia/Sydney", "Pacific/Auckland",
)  # fmt: skip


def _preference(zone: str) -> tuple[int, int, str]:
    known = WELL_KNOWN.index(zone) if zone in WELL_KNOWN else len(WELL_KNOWN)
    areas = ("Europe/", "America/", "Asia/", "Australia/", "Pacific/", "Africa/")
    rank = next((i for i, area in enumerate(areas) if zone.startswith(area)), len(areas))
    return known, rank, zone


def setting_advice(
    offset: timedelta, at_utc: datetime, current: str, zones: Iterable[str] | None = None
) -> str:
    """What to write in the config: REDCap's zone, or the few clocks it can be (one zone
    each, with how many keep the same clock), most zones first."""
    groups = zone_groups(offset, at_utc, zones)
    if not groups:
        return f"set [run] server_timezone to the zone REDCap runs in ({utc_offset_text(offset)})"
    if any(current in group for group in groups):
        return f'keep [run] server_timezone = "{current}"'
    named = []
    for group in groups[:3]:
        best = min(group, key=_preference)
        others = len(group) - 1
        same = f" (or any of {plural(others, 'other zone')} on its clock)" if others else ""
        named.append(f'"{best}"{same}')
    more = " or another" if len(groups) > 3 else ""
    return (
        f"set [run] server_timezone = {'; or '.join(named)}{more}: REDCap's PHP date.timezone "
        f"({utc_offset_text(offset)} now)"
    )


@dataclass(frozen=True)
class ClockVerdict:
    """The configured zone against the measured offset."""

    measured: Offset
    configured: timedelta  # the configured zone's UTC offset now
    ahead: timedelta | None  # how far the kit's idea runs ahead of REDCap's (negative: behind)
    within: bool  # the kit's reads are exact on this clock
    message: str  # one line: measured, configured, what to set


def judge(
    measured: Offset,
    zone: str,
    at_utc: datetime,
    overlap_minutes: float,
    zones: Iterable[str] | None = None,
    *,
    shift: timedelta = timedelta(0),
) -> ClockVerdict:
    """Whether ``zone`` (the configured ``server_timezone``) may be trusted against what was
    measured: the kit may run behind by any amount (wider reads) and ahead by at most
    ``tolerance``. Both ways, a difference is named with the setting that removes it.
    ``shift``: the kit's clock minus the machine's (0 but in tests that pass a run's ``now``)."""
    configured = zone_offset(zone, at_utc) + shift
    label = zone_label(zone)
    if measured.offset is None:
        return ClockVerdict(
            measured,
            configured,
            None,
            False,
            f"{measured.describe()}; check both machines' clocks (NTP) and [run] server_timezone "
            f"({label}, {utc_offset_text(configured)})",
        )
    ahead = configured - measured.offset
    within = ahead <= tolerance(overlap_minutes)
    advice = setting_advice(measured.offset, at_utc, zone, zones)
    if ahead == timedelta(0):
        message = f"{measured.describe()}, as [run] server_timezone ({label}) says"
    else:
        way = "ahead of" if ahead > timedelta(0) else "behind"
        message = (
            f"{measured.describe()} but [run] server_timezone ({label}) says "
            f"{utc_offset_text(configured)}: the kit's idea of REDCap's time runs "
            f"{_span(abs(ahead))} {way} REDCap's; {advice}"
        )
    return ClockVerdict(measured, configured, ahead, within, message)


def _span(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return f"{hours} h {rest} min"
    return f"{hours} h" if hours else f"{rest} min"


# -- the confirmation kept in the local copy ---------------------------------------------------


@dataclass(frozen=True)
class Confirmation:
    """A clock confirmed by a run (its own ticket among its changes) or by ``autoid check``."""

    at_utc: datetime
    kit_offset: timedelta  # the configured zone's UTC offset then


def still_holds(
    confirmation: Confirmation | None, now_utc: datetime, kit_offset: timedelta, max_age_h: float
) -> tuple[bool, str]:
    """Whether a run that wrote nothing may trust the local copy on this confirmation, and if
    not why (a phrase). It holds for ``max_age_h`` (the copy's ``full_read_hours``) while the
    configured zone's offset is unchanged (a DST change starts over)."""
    if confirmation is None:
        why = "REDCap's clock is not confirmed yet (a run that writes, or autoid check, does it)"
        return False, why
    age = now_utc - confirmation.at_utc
    if age < timedelta(0) or age > timedelta(hours=max_age_h):
        return False, f"REDCap's clock was last confirmed over {max_age_h:g} h ago"
    if confirmation.kit_offset != kit_offset:
        return False, "the configured zone's UTC offset changed since REDCap's clock was confirmed"
    return True, ""


def confirmation_key(url: str, zone: str) -> str:
    """Which confirmation: REDCap's AutoID API address and the configured zone."""
    return f"clock:{url} {zone or '(this machine)'}"


def naive_utc(moment: datetime) -> datetime:
    return _naive_utc(moment)


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)
