"""A ceiling on REDCap requests per minute: REDCap bans the client's IP past its own limiter.

REDCap counts a user's API requests over the last minute (600 by default) and, past that, blocks
the address. ``RequestPacer`` keeps the kit below ``[redcap] max_requests_per_minute`` by the
same measure: at most ``limit`` requests in any ``window_s`` seconds. It is pure: the caller
passes the clock's reading (``wait_s(now)``, ``done(now)``) and does the sleeping, so the rule
is tested without time passing (tests/test_pacing.py).

A request counts from the moment it *finished* (``done``), not when it was sent: the server
sees it somewhere in between, so "the request ``limit`` places back finished at least a window
ago" means the server received at most ``limit`` of them in any window, whatever the latency.
Up to ``limit`` requests go out at once (a run's dozen requests never wait); only a longer read
is spread out.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


class RequestPacer:
    """At most ``limit`` requests in any ``window_s`` seconds, given the times they finished."""

    def __init__(self, limit: int, window_s: float = WINDOW_S):
        if limit < 1:
            raise ValueError("the request limit must be at least 1")
        self.limit = limit
        self.window_s = window_s
        self._finished: deque[float] = deque(maxlen=limit)  # the last ``limit`` finish times

    def wait_s(self, now: float) -> float:
        """How long to wait before sending the next request at ``now`` (0: send it now)."""
        return self.room_s(now, 1)

    def room_s(self, now: float, room: int) -> float:
        """How long to wait from ``now`` until ``room`` requests can go out without waiting
        (at most ``limit``): a run about to take the REDCap lease makes room first, so that no
        pause for the ceiling falls while it holds the lease."""
        must_expire = len(self._finished) - (self.limit - min(room, self.limit))
        if must_expire <= 0:
            return 0.0
        return max(0.0, self._finished[must_expire - 1] + self.window_s - now)

    def done(self, now: float) -> None:
        """A request finished (answered or failed) at ``now``."""
        self._finished.append(now)
