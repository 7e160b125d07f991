"""The REDCap lease, I/O part: take a ticket, settle who writes, check before writes, release.

A run that may write calls, in this order (``autoid_lib.run``):

``take()``      1 request: write this run's ticket (a new auto-numbered record, or this
                installation's own slot record when its token may not delete records)
``settle(...)`` 0 requests when nobody else is live (the decision uses the run's own AutoID
                read, made right after ``take``), 1 more (a second AutoID read after
                ``wait_s``) when a later ticket was live; raises ``LeaseHeld`` after
                releasing when another run holds the lease or comes first
``check()``     0 requests: before every data import, refuse if the lease may have run out
``release()``   1 request: delete the ticket (and expired ones seen), or mark it released

So the lease costs 2 requests per writing run, 3 when two runs meet. The pure rules are in
``autoid_lib.lease``; the argument is in docs/run.md.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from autoid_lib.errors import LeaseExpired, LeaseHeld, RedcapError
from autoid_lib.lease import (
    RELEASED,
    LeaseSettings,
    Ticket,
    Verdict,
    decide,
    may_still_write,
    parse_ticket,
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


class LeaseState:
    """What an installation remembers between runs (0600 JSON next to its lock file): whether
    its token may delete records and, if not, the name of its own reusable slot record."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}

    @property
    def may_delete(self) -> bool | None:
        value = self.data.get("delete")
        return value if isinstance(value, bool) else None

    @property
    def slot(self) -> str:
        return str(self.data.get("slot") or "")

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
    ):
        self.gateway = gateway
        self.settings = settings
        self.state = state
        self.timeout_s = timeout_s
        self.clock, self.monotonic, self.sleep = clock, monotonic, sleep
        self.run_id = secrets.token_hex(8)
        self.record = ""
        self.held = False
        self.seen: list[Ticket] = []  # the other tickets of the last decisive read
        self._dead: tuple[str, ...] = ()
        self._sent_at = 0.0
        self.sent_utc: datetime | None = None
        self._fields: dict[str, str] = {}

    # -- take ---------------------------------------------------------------------------------

    def take(self) -> None:
        """Write this run's ticket (1 request)."""
        self._fields = ticket_fields(
            run_id=self.run_id,
            installation=self.settings.installation,
            host=socket.gethostname(),
            pid=os.getpid(),
            started=self.clock(),
            expiry_s=self.settings.expiry_s,
        )
        reuse = self.state.slot if not self._may_delete() else ""
        if not reuse and self._may_delete() is False:
            reuse = f"lease-{secrets.token_hex(6)}"  # never an auto-number: only ours
            self.state.save(slot=reuse)
        self._sent_at = self.monotonic()
        self.sent_utc = self.clock()
        self.record = self.gateway.write_lease(self._fields, reuse or None)

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
            log.info("lease: waiting %gs for %s", self.settings.wait_s, decision.other.describe())
            self.sleep(self.settings.wait_s)
            decision = self._decide(reread(), last_look=True)
            again = True
        if decision.verdict is Verdict.BACK_OFF:
            self.release(own_only=True)
            holder = decision.other.describe() if decision.other else "unknown (ticket lost)"
            raise LeaseHeld(holder)
        self.held = True
        self._dead = decision.dead
        log.info("lease: held (ticket %s)", self.record)
        for other in self.seen:
            log.info("lease: also in REDCap: %s", other.describe())
        self.check()
        return again

    def _decide(self, lease_rows: list[dict], *, last_look: bool):
        tickets = tickets_of(lease_rows)
        self.seen = [t for t in tickets if t.record != self.record]
        return decide(self.record, self.run_id, tickets, self.clock(), last_look=last_look)

    # -- check and release --------------------------------------------------------------------

    def check(self) -> None:
        """Before a write: refuse if a request sent now might end after the lease."""
        elapsed = self.monotonic() - self._sent_at
        if not may_still_write(elapsed, self.settings, self.timeout_s):
            raise LeaseExpired(
                f"the REDCap lease (ticket {self.record}) runs out {self.settings.expiry_s:g} s "
                f"after it was taken and {elapsed:.0f} s have passed; nothing more is written, "
                "the next run completes the work"
            )

    def release(self, *, own_only: bool = False) -> None:
        """Give the ticket back (1 request), unless it may have run out already: then another
        run may have removed or reused it, and it simply expires."""
        if not self.record:
            return
        record, self.record, self.held = self.record, "", False
        elapsed = self.monotonic() - self._sent_at
        if not may_still_write(elapsed, self.settings, self.timeout_s):
            log.warning("lease: ticket %s outlived its lease; left to expire", record)
            return
        if self._may_delete() is False:
            self._mark_released(record)
            return
        dead = () if own_only or record.startswith("lease-") else self._dead
        try:
            self.gateway.delete_lease_records([record, *dead])
        except RedcapError as error:
            if lacks_delete_right(error):
                log.warning(
                    "lease: the AutoID token may not delete records; tickets are reused "
                    "from now on (set [lease] delete = false to skip this try)"
                )
                self.state.save(delete=False)
                self._mark_released(record)
            elif dead:  # one of the expired tickets was removed meanwhile: ours alone
                self.gateway.delete_lease_records([record])
            else:
                raise
        else:
            if self.state.may_delete is None:
                self.state.save(delete=True)

    def _mark_released(self, record: str) -> None:
        fields = {**self._fields, "autoid_hash": RELEASED}
        self.gateway.write_lease(fields, record)
        if not record.isdigit():
            self.state.save(slot=record)


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
