"""The REDCap lease, pure part: what a ticket says and whether its run may write.

Two installations on two machines can point at one REDCap; the local ``flock`` cannot see
across machines, so a run that writes first takes a *ticket* in REDCap: one record in the
AutoID project under the reserved project name ``LEASE_PROJECT`` (never an auto-ID project's
name: the gateway drops it from every AutoID read and from the Projects read). The rule, with
its argument, is in docs/run.md ("Two installations, one REDCap"); in short:

- a run writes its ticket, *then* reads the AutoID table (the decisive read);
- it may write only if that read shows its own ticket intact and no other live ticket;
- another live ticket that comes first in ticket order means back off at once (exit 3); one
  that comes later means wait ``wait_s`` and read once more (the later run backs off), then
  proceed only if no other live ticket is left;
- a ticket written on this machine whose process is gone is dead once every request that
  process may have sent has ended (``ended`` below): a SIGKILLed run blocks nobody for long.

Nothing here does I/O or reads a clock: ``autoid_lib.redcap.lease`` is the thin REDCap side.
A ticket holds no patient data: the installation's label and host, a process ID, the machine's
process space (``node``: a one-way digest of the boot and PID namespace, so that a process ID is
judged only where it means something), a random run ID and two UTC times.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

from autoid_lib.errors import ConfigError
from autoid_lib.plan.model import Anomaly
from autoid_lib.snapshot import LEASE_PROJECT as SNAPSHOT_LEASE_PROJECT
from autoid_lib.vocab import AnomalyKind

# The reserved ``autoid_project_name`` of lease records. Project names are matched exactly
# after stripping; the brackets and colon make a clash with a real project implausible, and
# the gateway refuses it as a project name all the same.
LEASE_PROJECT = SNAPSHOT_LEASE_PROJECT  # defined beside the other reserved names
LIVE, RELEASED = "live", "released"
FORMAT = "lease-v1"
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_LABEL = re.compile(r"[^A-Za-z0-9._-]+")
KNOWN_KEYS = ("enabled", "expiry_s", "wait_s", "clock_skew_s", "installation", "delete")


@dataclass(frozen=True)
class LeaseSettings:
    """The ``[lease]`` table (docs/run.md); ``guard_s`` is added by the run from timeout_s."""

    enabled: bool = True
    expiry_s: float = 1800.0  # a ticket not released by then is dead: longer than any run
    wait_s: float = 15.0  # how long an earlier ticket waits for a later one to back off
    clock_skew_s: float = 30.0  # how far apart the installations' clocks may be
    installation: str = ""  # a label for this installation; default: the host name
    delete: bool | None = None  # may the AutoID token delete records? None: find out


def lease_settings(table: dict, *, timeout_s: float) -> LeaseSettings:
    """Read and check the raw ``[lease]`` table; every problem is a ConfigError naming the key."""
    unknown = sorted(set(table) - set(KNOWN_KEYS))
    if unknown:
        raise ConfigError(f"unknown config key [lease] {unknown[0]}; known keys: {KNOWN_KEYS}")
    numbers = {}
    for key, default in (("expiry_s", 1800.0), ("wait_s", 15.0), ("clock_skew_s", 30.0)):
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"[lease] {key} must be a number of seconds, 0 or more")
        numbers[key] = float(value)
    guard = timeout_s + numbers["clock_skew_s"]
    if numbers["expiry_s"] <= 2 * guard:
        raise ConfigError(
            f"[lease] expiry_s ({numbers['expiry_s']:g}) must exceed twice [redcap] timeout_s "
            f"plus [lease] clock_skew_s ({2 * guard:g}): a run stops writing that long before "
            "its ticket expires"
        )
    for key in ("enabled", "delete"):
        if key in table and not isinstance(table[key], bool):
            raise ConfigError(f"[lease] {key} must be true or false")
    label = table.get("installation", "")
    if not isinstance(label, str):
        raise ConfigError("[lease] installation must be a short label")
    return LeaseSettings(
        enabled=table.get("enabled", True),
        installation=_LABEL.sub("-", label or socket.gethostname())[:64],
        delete=table.get("delete"),
        **numbers,
    )


@dataclass(frozen=True)
class Ticket:
    """One lease record as read from REDCap."""

    record: str
    state: str  # LIVE or RELEASED; anything else is a malformed ticket
    run_id: str = ""
    installation: str = ""
    host: str = ""
    pid: str = ""
    started: datetime | None = None  # UTC, the holder's clock when it sent the ticket
    expires: datetime | None = None  # UTC (a renewal moves it later)
    node: str = ""  # the process space the pid belongs to ("": unknown, never judged)

    @property
    def malformed(self) -> bool:
        return self.state not in (LIVE, RELEASED) or self.started is None or self.expires is None

    def live(self, now: datetime) -> bool:
        """Still holding (or still deciding); a malformed ticket never expires: fail closed."""
        if self.malformed:
            return True
        return self.state == LIVE and now < self.expires  # type: ignore[operator]

    def order(self) -> tuple:
        """Ticket order: earlier start first, then the record name (numbers numerically)."""
        started = self.started or datetime.max.replace(tzinfo=UTC)
        number = int(self.record) if self.record.isdigit() else 1 << 62
        return (started, number, self.record)

    def describe(self) -> str:
        if self.malformed:
            return f"a malformed lease record {self.record} in AutoID (delete it by hand)"
        return (
            f"installation {self.installation or '?'} on host {self.host or '?'}, run started "
            f"{self.started:%Y-%m-%d %H:%M:%S} UTC, lease until {self.expires:%H:%M:%S} UTC "
            f"(ticket {self.record})"
        )


def ticket_fields(
    *,
    run_id: str,
    installation: str,
    host: str,
    pid: int,
    started: datetime,
    expiry_s: float,
    state: str = LIVE,
    node: str = "",
    expires: datetime | None = None,
) -> dict[str, str]:
    """The AutoID fields of a ticket (without ``record_id``); ``expires`` defaults to
    ``started + expiry_s`` (a renewal passes a later one and keeps ``started``)."""
    expires = expires or started + timedelta(seconds=expiry_s)
    parts = [
        FORMAT,
        f"run={run_id}",
        f"installation={_LABEL.sub('-', installation)}",
        f"host={_LABEL.sub('-', host)}",
        f"pid={pid}",
        f"started={started.astimezone(UTC):{_TIME}}",
        f"expires={expires.astimezone(UTC):{_TIME}}",
    ]
    if node:
        parts.append(f"node={_LABEL.sub('-', node)}")
    value = ";".join(parts)
    return {
        "autoid_project_name": LEASE_PROJECT,
        "autoid_hash": state,
        "autoid_value": value,
    }


def parse_ticket(record: str, state: str, value: str) -> Ticket:
    """A ticket from its AutoID fields; what cannot be read leaves it malformed."""
    parts = value.strip().split(";")
    if not parts or parts[0] != FORMAT:
        return Ticket(record, "malformed")
    fields = dict(part.partition("=")[::2] for part in parts[1:])
    return Ticket(
        record=record,
        state=state.strip(),
        run_id=fields.get("run", ""),
        installation=fields.get("installation", ""),
        host=fields.get("host", ""),
        pid=fields.get("pid", ""),
        started=_time(fields.get("started", "")),
        expires=_time(fields.get("expires", "")),
        node=fields.get("node", ""),
    )


def _time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, _TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


class Verdict(Enum):
    PROCEED = "proceed"  # no other live ticket: this run holds the lease
    WAIT = "wait"  # only later tickets (or dead ones still settling) are live: read again
    BACK_OFF = "back off"  # another run holds or comes first: release and exit 3


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    other: Ticket | None = None  # the run this one defers to (for the exit-3 message)
    dead: tuple[str, ...] = ()  # tickets the holder may remove when it releases
    until: datetime | None = None  # WAIT: when the last settling dead ticket is surely quiet
    gone: tuple[str, ...] = ()  # of ``dead``: tickets still marked live whose process is gone


def decide(
    own_record: str,
    run_id: str,
    tickets: list[Ticket],
    now: datetime,
    *,
    last_look: bool,
    ended: Mapping[str, datetime] | None = None,
    settle_s: float = 0.0,
) -> Decision:
    """Whether a run that has written ticket ``own_record`` may write, from a read made
    after that ticket was written (``now``: a time no later than the read's start).
    ``last_look``: the run has already waited once.

    ``ended`` maps a ticket's record to a time by which its run had sent its last request:
    the edge gives it only for a ticket written on this machine (same ``node``) whose process
    is gone — the recorded time of the run's last send (``LeaseState``), or when the process
    was first seen gone. Such a run writes nothing more once ``settle_s`` (timeout_s plus
    clock_skew_s: the longest a request it sent can still take) has passed: its ticket is
    dead then, and settling (waited for, never deferred to) until then."""
    ended = ended or {}
    mine = [t for t in tickets if t.record == own_record]
    if len(mine) != 1 or mine[0].run_id != run_id or mine[0].malformed:
        # the ticket vanished or someone overwrote it: this run cannot prove it holds anything
        other = mine[0] if mine and mine[0].run_id != run_id else None
        return Decision(Verdict.BACK_OFF, other)
    me = mine[0]
    quiet = {
        t.record: ended[t.record] + timedelta(seconds=settle_s)
        for t in tickets
        if t.record != own_record and t.record in ended and not t.malformed
    }
    gone = tuple(r for r, at in quiet.items() if at <= now)
    settling = {r: at for r, at in quiet.items() if at > now}
    others = [
        t for t in tickets if t.record != own_record and t.live(now) and t.record not in quiet
    ]
    waiting = [t for t in tickets if t.record in settling and t.live(now)]
    if not others and not waiting:
        dead = tuple(
            t.record
            for t in tickets
            if t.record != own_record and (not t.live(now) or t.record in gone)
        )
        revived = tuple(t.record for t in tickets if t.record in gone and t.live(now))
        return Decision(Verdict.PROCEED, dead=dead, gone=revived)
    if others:
        first = min(others, key=Ticket.order)
        if first.order() < me.order() or last_look:
            return Decision(Verdict.BACK_OFF, first)
    if last_look:  # waited already and a dead run's requests may still land: stay out
        return Decision(Verdict.BACK_OFF, min(waiting, key=Ticket.order))
    until = max((settling[t.record] for t in waiting), default=None)
    first = min(others or waiting, key=Ticket.order)
    return Decision(Verdict.WAIT, first, until=until)


def holder_text(
    other: Ticket | None, own_record: str, *, installation: str, host: str, node: str
) -> tuple[bool, str]:
    """Who an exit 3 defers to, truthfully: (whether another run is known, the words).

    Never this run, and never a ticket of this machine whose process is gone (those are dead,
    ``decide``); a ticket that carries this installation's label and host but whose process
    cannot be checked from here says so instead of blaming "another installation"."""
    if other is None:
        return False, (
            f"this run's ticket {own_record} is missing from its own AutoID read (removed, or "
            "REDCap's answer is stale); no other installation's live ticket is known"
        )
    if other.record == own_record:
        return False, (
            f"this run's ticket {own_record} reads back with another run's content (run "
            f"started {_when(other.started)}): REDCap's answer is stale or the record was "
            "overwritten; no other installation's live ticket is known"
        )
    if other.malformed:
        return True, other.describe()
    if node and other.node == node:
        return True, (
            f"a run on this machine whose process {other.pid} is still running: {other.describe()}"
        )
    if other.installation == _LABEL.sub("-", installation) and other.host == _LABEL.sub("-", host):
        return True, (
            f"a run with this installation's own label and host whose process cannot be "
            f"checked from here (another container or boot, or an older kit): {other.describe()}"
        )
    return True, other.describe()


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "?"


def renewal_due(elapsed_s: float, settings: LeaseSettings, timeout_s: float) -> bool:
    """Whether to renew the ticket before the next import: after this import (which ends
    within ``timeout_s``) the run could no longer send one under the current expiry.
    Never due at the start (the config keeps expiry_s above twice timeout_s + clock_skew_s)."""
    return not may_still_write(elapsed_s + timeout_s, settings, timeout_s)


def may_still_write(elapsed_s: float, settings: LeaseSettings, timeout_s: float) -> bool:
    """Whether a write request sent now ends before any other run can think the ticket dead:
    ``elapsed_s`` counts (on a monotonic clock) from just before the ticket was sent."""
    return elapsed_s + timeout_s + settings.clock_skew_s < settings.expiry_s


_NOT_ANSWERED = ("unreachable", "timeout", "tls", "out_of_memory")  # failures.FailureKind values


def not_released_anomaly(
    record: str,
    cause: str,
    expires: datetime | None,
    *,
    kind: str,
    token: str,
    tried_delete: bool,
) -> Anomaly:
    """The anomaly of a ticket the run could not give back: REDCap's cause (already redacted
    and printable: ``RedcapError``), and what to change so that it does not recur; ``kind`` is
    the error's ``failures.FailureKind``."""
    until = f" until it expires at {expires:%Y-%m-%d %H:%M} UTC" if expires else ""
    rights = (
        f"give the REDCap user of the AutoID token ({token}) the 'Delete Records' and "
        "'API Import/Update' rights on the AutoID project (User Rights), or set [lease] "
        "delete = false (tickets are then marked released instead of deleted)"
        if tried_delete
        else f"give the REDCap user of the AutoID token ({token}) the 'API Import/Update' "
        "right on the AutoID project (User Rights)"
    )
    if kind == "internal":
        action = "Run again; if it repeats, send run.log to the maintainers."
    elif kind in _NOT_ANSWERED:
        action = (
            "Nothing, if REDCap answers again: this installation's next run that writes "
            "removes the ticket. Other installations wait for it until it expires."
        )
    elif kind == "token_refused" or "privileges" in cause.lower():
        action = rights[:1].upper() + rights[1:] + "."
    else:
        action = (
            "This installation's next run that writes removes the ticket. If it recurs, "
            f"REDCap's message says why; for a missing right, {rights}."
        )
    return Anomaly(
        AnomalyKind.LEASE_NOT_RELEASED,
        "",
        f"the REDCap lease ticket {record} was not given back: {cause}. Other installations "
        f"treat it as a running run{until}; this installation's next run that writes "
        "recognises it as its own and removes it (runs with nothing to write leave REDCap "
        "alone)",
        action,
    )
