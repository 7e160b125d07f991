"""Scripted failures, so tests can see how the kit behaves when REDCap misbehaves.

A fault replaces a request entirely: the request is counted but never reaches the data, so
a faulted import writes nothing (a ``truncated`` import is computed without being committed,
to cut a realistic answer) — except ``lost_answer``, whose whole point is that the work was
done. Kinds, each what a real REDCap or its web server has done:

``http500``    HTTP 500 with an HTML error page (PHP fatal error, proxy error)
``timeout``    the server sleeps ``delay_s`` seconds, then answers HTTP 504 with HTML
``lost_answer`` the request is carried out (an import is written), then the server sleeps
               ``delay_s`` seconds and answers HTTP 504: the client cannot know it worked
``truncated``  HTTP 200 with the real JSON answer cut off half way (dropped connection)
``oom``        HTTP 500 with REDCap's error "REDCap ran out of server memory…" in the request's
               return format (JSON ``{"error": …}``), as REDCap 15.7.6 answers an API request
               that passes its 2 GB memory limit (System.php)
``dropped_rows`` HTTP 200 with valid JSON, but the rows of some records left out (every third
               record, at least one): large exports have come back like this, silently

Which requests: every request matching ``database``/``content``/``action`` (``None`` matches
anything), from the ``nth`` matching one after injection (default: the next one), for
``times`` requests (``None``: for ever). With ``above_bytes`` only requests whose real answer
is larger than that count as matching: REDCap fails on large answers, not on small ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import JSON_TYPE, TEXT_TYPE, ApiError, Response, render_error

FAULT_KINDS = ("http500", "timeout", "truncated", "oom", "lost_answer", "dropped_rows")

_HTTP500 = """<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">
<html><head>
<title>500 Internal Server Error</title>
</head><body>
<h1>Internal Server Error</h1>
<p>The server encountered an internal error or
misconfiguration and was unable to complete
your request.</p>
<hr>
<address>Apache Server at redcap.example.org Port 443</address>
</body></html>
"""

_HTTP504 = """<html>
<head><title>504 Gateway Time-out</title></head>
<body>
<center><h1>504 Gateway Time-out</h1></center>
<hr><center>nginx</center>
</body>
</html>
"""

OOM_MESSAGE = (
    "REDCap ran out of server memory. The request cannot be processed. Please try "
    "importing/exporting a smaller amount of data."
)


@dataclass
class Fault:
    """One scripted failure and how far it has got."""

    kind: str
    database: str | None = None
    content: str | None = None
    action: str | None = None
    nth: int | None = None
    times: int | None = 1
    delay_s: float = 5.0
    above_bytes: int | None = None  # only answers larger than this match
    seen: int = 0  # matching requests since injection
    fired: int = 0  # requests this fault has replaced

    def matches(self, database: str, content: str, action: str) -> bool:
        return all(
            want is None or want == got
            for want, got in (
                (self.database, database),
                (self.content, content),
                (self.action, action),
            )
        )

    @property
    def spent(self) -> bool:
        return self.times is not None and self.fired >= self.times


class FaultPlan:
    """The faults waiting for requests; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        if fault.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {fault.kind!r}; choose one of {FAULT_KINDS}")
        if fault.nth is not None and fault.nth < 1:
            raise ValueError("nth counts from 1")
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be at least 1, or None for every matching request")
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def pick(
        self, database: str, content: str, action: str, size: Callable[[], int] | None = None
    ) -> Fault | None:
        """The fault that replaces this request, if any (advances every matching fault).

        ``size`` gives the real answer's length, asked only for a fault with ``above_bytes``.
        """
        chosen = None
        known: list[int] = []
        with self._lock:
            for fault in self._faults:
                if not fault.matches(database, content, action):
                    continue
                if fault.above_bytes is not None:
                    if size is None:
                        continue
                    if not known:
                        known.append(size())
                    if known[0] <= fault.above_bytes:
                        continue
                fault.seen += 1
                if chosen is None and fault.seen >= (fault.nth or 1):
                    fault.fired += 1
                    chosen = fault
            self._faults = [f for f in self._faults if not f.spent]
        return chosen


def http500() -> Response:
    return 500, TEXT_TYPE, _HTTP500.encode()


def gateway_timeout() -> Response:
    return 504, TEXT_TYPE, _HTTP504.encode()


def out_of_memory(fmt: str = "json") -> Response:
    """REDCap's answer past its memory limit: RestUtility::sendResponse(500, …)."""
    return render_error(ApiError(OOM_MESSAGE, 500), fmt)


def truncated(real: Response) -> Response:
    """The real answer cut in half: a valid start that no JSON parser accepts."""
    _, content_type, body = real
    cut = body[: max(1, len(body) // 2)] if len(body) > 2 else b"[{"
    return 200, content_type or JSON_TYPE, cut


def dropped_rows(real: Response) -> Response:
    """The real answer without the rows of every third record (at least one record): JSON
    records, or the lines of a CSV export."""
    status, content_type, body = real
    if status == 200 and content_type.startswith("text/csv"):
        return status, content_type, _dropped_csv_rows(body)
    try:
        rows = json.loads(body)
    except ValueError:
        return real
    if status != 200 or not isinstance(rows, list) or not rows:
        return real
    if not all(isinstance(row, dict) and row for row in rows):  # not records: an import's answer
        return real
    names = list(dict.fromkeys(str(next(iter(row.values()), "")) for row in rows))
    gone = set(names[2::3]) or {names[-1]}
    kept = [row for row in rows if str(next(iter(row.values()), "")) not in gone]
    return status, content_type, json.dumps(kept).encode()


def _dropped_csv_rows(body: bytes) -> bytes:
    """A CSV answer without the lines of every third record (first column: the record)."""
    header, *lines = body.decode().splitlines(keepends=True)
    if not lines:
        return body
    names = list(dict.fromkeys(line.split(",", 1)[0] for line in lines))
    gone = set(names[2::3]) or {names[-1]}
    return (header + "".join(line for line in lines if line.split(",", 1)[0] not in gone)).encode()
