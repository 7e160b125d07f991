"""The REDCap lease, I/O part: take a ticket, settle who writes, check before writes, release.

A run that may write calls, in this order (``autoid_lib.run``):

``take()``      1 request: write this run's ticket (a new auto-numbered record, or this
                installation's own slot record when its token may not delete records)
``settle(...)`` 0 requests when nobody else is live (the decision uses the run's own AutoID
                read, made right after ``take``), 1 more (a second AutoID read after
                ``wait_s``) when a later ticket was live or a dead run of this machine may
                still have a request under way; raises ``LeaseHeld`` after releasing when
                another run holds the lease or comes first
``check()``     0 requests: before every data import, refuse if the lease may have run out;
                1 request (a renewal: the same ticket with a later ``expires``) when the
                import after this one could no longer be sent under the current expiry
``release()``   1 request: delete the ticket (and the dead ones seen), or mark it released;
                never raises: a failure is kept in ``release_failure`` for the report

So the lease costs 2 requests per writing run, 3 when two runs meet, +1 per renewal. The pure
rules are in ``autoid_lib.lease``; the argument is in docs/run.md.

Besides REDCap, the lease reads two local facts: whether a process of this machine is still
running (``process_gone``), and ``LeaseState``, the installation's own 0600 file next to its
lock file, which remembers each ticket this installation wrote until it is given back, with
when its run last sent a request. The run holds the lock file's ``flock`` throughout, so a
ticket recorded there belongs to a run that has ended or been killed — or whose kernel outlived
its parent for a moment, which is why the process ID decides, never the record alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from autoid_lib.errors import LeaseExpired, LeaseHeld, RedcapError
from autoid_lib.lease import (
    RELEASED,
    Decision,
    LeaseSettings,
    Ticket,
    Verdict,
    decide,
    holder_text,
    may_still_write,
    parse_ticket,
    renewal_due,
    ticket_fields,
)
from autoid_lib.redcap.gateway import lacks_delete_right

log = logging.getLogger("autoid.lease")


def tickets_of(lease_rows: list[dict]) -> list[Ticket]:
    """Tickets from the gateway's raw lease records."""
    return [
        parse_ticket(row["record_id"], row.get("autoid_hash", ""), row.get("autoid_value", ""))
        for row in lease_rows
    ]


# -- this machine ------------------------------------------------------------------------------


def node_id() -> str:
    """This process space: a digest of the boot and the PID namespace ("" where unknown, e.g.
    not Linux). Two tickets with one node share their process IDs; any other pair never is
    compared by process ID (containers and reboots reuse them)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return hashlib.sha256(f"{boot}|{namespace}".encode()).hexdigest()[:16]


def process_gone(pid: str) -> bool:
    """Whether process ``pid`` of this process space is certainly not running (a zombie is
    gone too); anything unsure — another user's process, an unreadable answer — is running."""
    if not pid.isdigit() or int(pid) <= 0:
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    return state in (["Z"], ["X"])


# -- what the installation remembers -----------------------------------------------------------


class LeaseState:
    """What an installation remembers between runs (0600 JSON next to its lock file): whether
    its token may delete records, the name of its own reusable slot record if not, and each
    ticket it wrote and has not yet given back (``runs``: run ID → record, pid, node and the
    UTC time its run last sent a request)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}
        if not isinstance(self.data, dict):
            self.data = {}

    @property
    def may_delete(self) -> bool | None:
        value = self.data.get("delete")
        return value if isinstance(value, bool) else None

    @property
    def slot(self) -> str:
        return str(self.data.get("slot") or "")

    @property
    def runs(self) -> dict[str, dict[str, Any]]:
        runs = self.data.get("runs")
        return (
            {k: v for k, v in runs.items() if isinstance(v, dict)} if isinstance(runs, dict) else {}
        )

    def last_send(self, run_id: str) -> datetime | None:
        """When run ``run_id`` of this installation last sent a request (None: unknown)."""
        try:
            return datetime.fromisoformat(str(self.runs[run_id]["sent"]))
        except (KeyError, ValueError, TypeError):
            return None

    def note_run(self, run_id: str, **fields: Any) -> None:
        runs = self.runs
        runs[run_id] = {**runs.get(run_id, {}), **fields}
        self.save(runs=runs)

    def forget(self, run_ids: Iterable[str]) -> None:
        runs = self.runs
        gone = [run_id for run_id in run_ids if run_id in runs]
        if gone:
            self.save(runs={k: v for k, v in runs.items() if k not in gone})

    def save(self, **changes) -> None:
        self.data.update(changes)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.data, handle)
        os.replace(partial, self.path)


def state_path(lock_file: Path) -> Path:
    return lock_file.with_name(lock_file.name + ".lease.json")


@dataclass(frozen=True)
class ReleaseFailure:
    """A ticket the run could not give back, and why (REDCap's words, redacted)."""

    record: str
    cause: str
    kind: str  # a failures.FailureKind
    expires: datetime | None
    tried_delete: bool


# -- one run's ticket --------------------------------------------------------------------------


class RedcapLease:
    """One run's ticket; ``gateway`` is the run's ``RedcapGateway`` (requests are counted)."""

    def __init__(
        self,
        gateway,
        settings: LeaseSettings,
        state: LeaseState,
        *,
        timeout_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        gone: Callable[[str], bool] = process_gone,
        node: str | None = None,
    ):
        self.gateway = gateway
        self.settings = settings
        self.state = state
        self.timeout_s = timeout_s
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.process_gone = gone
        self.node = node_id() if node is None else node
        self.run_id = secrets.token_hex(8)
        self.record = ""
        self.held = False
        self.sent_utc: datetime | None = None  # UTC, just before the ticket was sent
        self.seen: list[Ticket] = []  # the other tickets of the last decisive read
        self.renewals = 0  # tickets rewritten with a later expiry during this run
        self.released = False  # the ticket was deleted or marked released
        self.release_failure: ReleaseFailure | None = None
        self._dead: tuple[str, ...] = ()
        self._gone: tuple[str, ...] = ()
        self._also: list[str] = []  # the kit's own records the release deletes with the ticket
        self._rows: dict[str, dict] = {}  # the last decisive read's lease records by name
        self._tickets: list[Ticket] = []  # and as tickets
        self._last_record = ""  # the ticket's record once given back
        self._gone_seen: dict[str, datetime] = {}  # record -> when its process was seen gone
        self._read_at: datetime | None = None
        self._sent_at = 0.0
        self._fields: dict[str, str] = {}

    # -- take ---------------------------------------------------------------------------------

    def take(self) -> None:
        """Write this run's ticket (1 request); remember it in ``LeaseState`` first, so that a
        run killed while the import is under way is recognised by the next one."""
        self.sent_utc = self.clock()
        self._fields = ticket_fields(
            run_id=self.run_id,
            installation=self.settings.installation,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self.sent_utc,
            expiry_s=self.settings.expiry_s,
            node=self.node,
        )
        reuse = self.state.slot if not self._may_delete() else ""
        if reuse and any(entry.get("record") == reuse for entry in self.state.runs.values()):
            # the slot's last run never gave it back (killed): overwriting its ticket would hide
            # a run that may still be writing; it is judged as any ticket, this run takes a new
            reuse = ""
        if not reuse and self._may_delete() is False:
            reuse = f"lease-{secrets.token_hex(6)}"  # never an auto-number: only ours
            self.state.save(slot=reuse)
        self.state.note_run(
            self.run_id, record=reuse, pid=os.getpid(), node=self.node, sent=_iso(self.sent_utc)
        )
        self._sent_at = self.monotonic()
        self.sent_utc = self.clock()  # for REDCap's clock: as late as possible before the send
        self.record = self.gateway.write_lease(self._fields, reuse or None)
        self.state.note_run(self.run_id, record=self.record)
        self._read_at = self.clock()  # the decisive read starts after this

    def _may_delete(self) -> bool | None:
        if self.settings.delete is not None:
            return self.settings.delete
        return self.state.may_delete

    # -- settle -------------------------------------------------------------------------------

    def settle(self, lease_rows: list[dict], reread: Callable[[], list[dict]]) -> bool:
        """Decide from a read made after ``take``; ``reread`` reads the AutoID table again and
        returns its lease records. Returns True if it read again (the caller's rows are stale).
        Raises ``LeaseHeld`` (after releasing) if another run holds the lease or comes first."""
        decision = self._decide(lease_rows, last_look=False)
        again = False
        if decision.verdict is Verdict.WAIT:
            pause = self.settings.wait_s
            if decision.until is not None and self._read_at is not None:
                pause = max(pause, (decision.until - self._read_at).total_seconds())
            log.info("lease: waiting %gs for %s", pause, _who(decision.other))
            self.sleep(pause)
            self._read_at = self.clock()
            decision = self._decide(reread(), last_look=True)
            again = True
        if decision.verdict is Verdict.BACK_OFF:
            self.release(own_only=True)
            known, holder = holder_text(
                decision.other,
                self.record or self._last_record,
                installation=self.settings.installation,
                host=socket.gethostname(),
                node=self.node,
            )
            raise LeaseHeld(holder, known=known)
        self.held = True
        self._dead, self._gone = decision.dead, decision.gone
        log.info("lease: held (ticket %s)", self.record)
        for other in self.seen:
            state = " (its process is gone: removed)" if other.record in self._gone else ""
            log.info("lease: also in REDCap: %s%s", other.describe(), state)
        self._forget_vanished(self._tickets, self._read_at or self.clock())
        self.check()
        return again

    def _decide(self, lease_rows: list[dict], *, last_look: bool) -> Decision:
        tickets = self._tickets = tickets_of(lease_rows)
        self._rows = {str(row["record_id"]): row for row in lease_rows}
        self.seen = [t for t in tickets if t.record != self.record]
        now = self._read_at or self.clock()
        return decide(
            self.record,
            self.run_id,
            tickets,
            now,
            last_look=last_look,
            ended=self._ended(tickets, now),
            settle_s=self.timeout_s + self.settings.clock_skew_s,
        )

    def _ended(self, tickets: list[Ticket], now: datetime) -> dict[str, datetime]:
        """For each ticket of this process space whose process is gone: by when its run sent
        its last request (recorded by this installation, else when first seen gone)."""
        ended = {}
        for ticket in tickets:
            if ticket.record == self.record or not self.node or ticket.node != self.node:
                continue
            if not ticket.live(now) or not self._run_ended(ticket):
                continue
            # seen gone now, after the read: its last request went out before this moment
            first_seen = self._gone_seen.setdefault(ticket.record, self.clock())
            recorded = self.state.last_send(ticket.run_id)
            ended[ticket.record] = min(recorded, first_seen) if recorded else first_seen
        return ended

    def _run_ended(self, ticket: Ticket) -> bool:
        """Whether the run behind a ticket of this process space has ended: its process is
        gone, or it is this very process and the run is one this installation recorded (one
        process runs one run of an installation at a time: the lock)."""
        if ticket.pid == str(os.getpid()):
            return ticket.run_id != self.run_id and ticket.run_id in self.state.runs
        return self.process_gone(ticket.pid)

    def _forget_vanished(self, tickets: list[Ticket], now: datetime) -> None:
        """Drop remembered runs that need no judging any more: their ticket is released or
        expired, or absent from REDCap and no longer able to arrive."""
        present = {t.run_id: t for t in tickets if t.record != self.record}
        settle = timedelta(seconds=self.timeout_s + self.settings.clock_skew_s)
        done = []
        for run_id in self.state.runs:
            if run_id == self.run_id:
                continue
            sent = self.state.last_send(run_id)
            ticket = present.get(run_id)
            finished = ticket is not None and not ticket.malformed and not ticket.live(now)
            lost = ticket is None and (sent is None or sent + settle < now)
            if finished or lost:
                done.append(run_id)
        self.state.forget(done)

    # -- check, renew and release -------------------------------------------------------------

    def check(self) -> None:
        """Before a write: refuse if a request sent now might end after the lease; renew the
        ticket (1 request) when the next import could not be sent under its expiry."""
        elapsed = self.monotonic() - self._sent_at
        if not may_still_write(elapsed, self.settings, self.timeout_s):
            raise LeaseExpired(
                f"the REDCap lease (ticket {self.record}) runs out {self.settings.expiry_s:g} s "
                f"after it was taken or renewed and {elapsed:.0f} s have passed; nothing more "
                "is written, the next run completes the work"
            )
        if self.held and renewal_due(elapsed, self.settings, self.timeout_s):
            self._renew()
        self._note_send()

    def _renew(self) -> None:
        """Rewrite the ticket with a later ``expires`` (same run, same start: same order). Sent
        only while ``may_still_write`` holds, so it lands while the old expiry still stands."""
        started = self.sent_utc or self.clock()
        at, wall = self.monotonic(), self.clock()
        fields = ticket_fields(
            run_id=self.run_id,
            installation=self.settings.installation,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=started,
            expiry_s=self.settings.expiry_s,
            node=self.node,
            expires=wall + timedelta(seconds=self.settings.expiry_s),
        )
        self._note_send()
        try:
            self.gateway.write_lease(fields, self.record)
        except RedcapError as error:  # it may have landed or not: the old expiry still binds
            log.warning("lease: renewing ticket %s failed: %s", self.record, error)
            return
        self._sent_at, self._fields = at, fields
        self.renewals += 1
        log.info("lease: ticket %s renewed until %s UTC", self.record, f"{wall:%H:%M:%S}")

    def _note_send(self) -> None:
        """Record, before a request goes out, that this run is sending: the next run of this
        installation waits that long plus ``timeout_s`` if this process dies meanwhile."""
        self.state.note_run(self.run_id, sent=_iso(self.clock()))

    def release(self, *, own_only: bool = False) -> None:
        """Give the ticket back (1 request), unless it may have run out already: then another
        run may have removed or reused it, and it simply expires. Never raises: a failure is
        kept in ``release_failure`` (the run reports it as an anomaly)."""
        if not self.record:
            return
        record, self.record, self.held = self.record, "", False
        self._last_record = record
        elapsed = self.monotonic() - self._sent_at
        if not may_still_write(elapsed, self.settings, self.timeout_s):
            log.warning("lease: ticket %s outlived its lease; left to expire", record)
            return
        tried_delete = self._may_delete() is not False
        try:
            self._note_send()
            removed = self._give_back(record, own_only)
        except RedcapError as error:
            self._failed(record, str(error), error.kind, tried_delete)
            return
        except Exception as error:  # never hide the run's own outcome behind the release's
            self._failed(record, f"internal error ({type(error).__name__})", "internal", True)
            return
        self.released = True
        self.state.forget([self.run_id, *(self._run_of(r) for r in removed)])

    def _failed(self, record: str, cause: str, kind: str, tried_delete: bool) -> None:
        expires = parse_ticket(record, "", self._fields.get("autoid_value", "")).expires
        self.release_failure = ReleaseFailure(record, cause, kind, expires, tried_delete)
        log.warning("could not release the REDCap lease (ticket %s): %s", record, cause)

    def also_give_back(self, records: Iterable[str]) -> bool:
        """Have the release delete these records of the kit's own (the local copy's older
        mark) in its one delete: 1 request fewer. False when the release will not delete (no
        delete right): the caller deletes them itself, or leaves them."""
        if not self.held or self._may_delete() is False:
            return False
        self._also.extend(records)
        return True

    def _give_back(self, record: str, own_only: bool) -> tuple[str, ...]:
        """Delete (or mark released) this run's ticket and, when it held, the dead ones it
        saw and the records handed over (``also_give_back``); returns the other tickets removed
        or marked."""
        if self._may_delete() is False:
            self._mark_released(record)
            marked = () if own_only else self._mark_gone_released()
            return marked
        dead = () if own_only or record.startswith("lease-") else self._dead
        also = () if own_only else tuple(self._also)
        try:
            self.gateway.delete_lease_records([record, *dead, *also])
        except RedcapError as error:
            if lacks_delete_right(error):
                log.warning(
                    "lease: the AutoID token may not delete records; tickets are reused "
                    "from now on (set [lease] delete = false to skip this try)"
                )
                self.state.save(delete=False)
                self._mark_released(record)
                return () if own_only else self._mark_gone_released()
            if dead or also:  # one of the others was removed meanwhile: ours alone
                self.gateway.delete_lease_records([record])
                return ()
            raise
        if self.state.may_delete is None:
            self.state.save(delete=True)
        return dead

    def _mark_released(self, record: str) -> None:
        fields = {**self._fields, "autoid_hash": RELEASED}
        self.gateway.write_lease(fields, record)
        if not record.isdigit():
            self.state.save(slot=record)

    def _mark_gone_released(self) -> tuple[str, ...]:
        """Without the delete right, a dead run's ticket still marked live is marked released
        (1 request each; it happens once per killed run), so no installation waits for it."""
        marked = []
        for record in self._gone:
            row = self._rows.get(record)
            if row is None:
                continue
            fields = {
                "autoid_project_name": row.get("autoid_project_name", ""),
                "autoid_hash": RELEASED,
                "autoid_value": row.get("autoid_value", ""),
            }
            self.gateway.write_lease(fields, record)
            marked.append(record)
        return tuple(marked)

    def _run_of(self, record: str) -> str:
        return next((t.run_id for t in self.seen if t.record == record), "")

    def summary(self) -> dict[str, Any]:
        """summary.json's ``lease``: the ticket (None: none was written), its renewals, whether
        it was given back."""
        return {
            "ticket": self._last_record or self.record or None,
            "renewals": self.renewals,
            "released": self.released,
        }


def _iso(moment: datetime) -> str:
    """Full precision: a last send rounded down would let the next run stop waiting early."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _who(ticket: Ticket | None) -> str:
    return ticket.describe() if ticket is not None else "?"


def installations_seen(lease_rows: list[dict], now: datetime) -> list[str]:
    """One line per lease record, newest first: who ran (or runs) against this REDCap.

    Runs of an installation whose token may delete records remove their tickets, so their
    clean runs leave nothing here; running, crashed and no-delete installations stay visible.
    """
    tickets = sorted(tickets_of(lease_rows), key=Ticket.order, reverse=True)
    lines = []
    for ticket in tickets:
        if ticket.malformed:
            state = "malformed"
        elif ticket.live(now):
            state = "running now (holds or is taking the lease)"
        elif ticket.state == RELEASED:
            state = "finished"
        else:
            state = "stopped without giving the lease back (expired)"
        lines.append(f"{ticket.describe()}: {state}")
    return lines
