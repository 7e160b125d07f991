"""Bounds on every REDCap request: no redirects, a total deadline, a size cap on the answer.

``requests`` alone would re-post the form body (the token, hashes, pseudonyms) to wherever a
307/308 points, and its ``timeout`` is per read, so a server sending one byte every few seconds
holds a run forever; nothing caps the size of an answer. ``GuardedAdapter`` is mounted on the
gateway's own session: it refuses any 3xx, reads the answer itself up to ``max_bytes``, and a
watchdog shuts the socket when ``deadline_s`` has passed, whatever phase the request is in.
"""

from __future__ import annotations

import contextlib
import socket
import threading

import requests
from requests.adapters import HTTPAdapter
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from autoid_lib.safe_text import printable

_CHUNK = 64 * 1024
_local = threading.local()


class AnswerRefused(requests.RequestException):
    """The server's answer was refused by a bound; the message says which, in one line."""


class RedirectRefused(AnswerRefused):
    pass


class AnswerTooLarge(AnswerRefused):
    pass


class DeadlineExceeded(AnswerRefused):
    pass


def guarded_session(deadline_s: float, max_bytes: int) -> requests.Session:
    """A session that follows no redirect and bounds every answer in time and size."""
    session = requests.Session()
    session.max_redirects = 0
    adapter = GuardedAdapter(deadline_s, max_bytes)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


class _Watch:
    """The connection one request uses, and the watchdog that may cut it."""

    def __init__(self):
        self.conn = None
        self.sock: socket.socket | None = None  # the answer's socket, once the body is read
        self.expired = False
        self.done = False
        self.lock = threading.Lock()

    def expire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired = True
            self._shut()

    def adopt(self, sock: socket.socket | None) -> None:
        """The socket the body is read from. An answer that will close the connection (HTTP/1.0,
        or ``Connection: close``) is handed from the connection to the response, which leaves
        ``conn.sock`` empty: without this the watchdog would have nothing to shut."""
        with self.lock:
            self.sock = sock
            if self.expired and not self.done:
                self._shut()

    def _shut(self) -> None:
        for sock in (self.sock, getattr(self.conn, "sock", None)):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # a blocked read returns at once

    def finish(self) -> None:
        with self.lock:
            self.done = True


def _recording(pool_class):
    class Recording(pool_class):
        def _get_conn(self, timeout=None):
            conn = super()._get_conn(timeout)
            watch = getattr(_local, "watch", None)
            if watch is not None:
                watch.conn = conn
            return conn

    Recording.__name__ = f"Recording{pool_class.__name__}"
    return Recording


_POOLS = {"http": _recording(HTTPConnectionPool), "https": _recording(HTTPSConnectionPool)}


class GuardedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that reads the whole answer itself, within the bounds."""

    def __init__(self, deadline_s: float, max_bytes: int):
        self.deadline_s = deadline_s
        self.max_bytes = max_bytes
        self.received = 0  # answer bytes, all requests: what a run costs the server
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def send(self, request, stream=False, timeout=None, **kwargs):
        watch = _Watch()
        _local.watch = watch
        timer = threading.Timer(self.deadline_s, watch.expire)
        timer.daemon = True
        timer.start()
        try:
            response = super().send(request, stream=True, timeout=timeout, **kwargs)
            watch.adopt(_socket_of(response))
            try:
                _refuse_redirect(response)
                response._content = self._read(response)
            finally:
                response.close()
            if watch.expired:  # the body ended early because the watchdog cut it
                raise self._late()
            return response
        except (requests.RequestException, OSError) as error:
            if watch.expired and not isinstance(error, RedirectRefused | AnswerTooLarge):
                raise self._late() from None
            raise
        finally:
            timer.cancel()
            watch.finish()
            _local.watch = None

    def _read(self, response) -> bytes:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large()
        body = bytearray()
        for chunk in response.iter_content(_CHUNK):
            body += chunk
            if len(body) > self.max_bytes:
                raise self._too_large()
        self.received += len(body)
        return bytes(body)

    def _too_large(self) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"answer larger than {self.max_bytes / 1e6:g} MB; see [redcap] max_answer_mb"
        )

    def _late(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"timed out: no complete answer within {self.deadline_s:g} s "
            "(the [redcap] timeout_s limit, plus a second)"
        )


def _socket_of(response) -> socket.socket | None:
    """The socket under a streamed answer (``requests`` → urllib3 → ``http.client`` → its
    buffered socket file), or None where a layer keeps it elsewhere."""
    fp = getattr(getattr(response.raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


def _refuse_redirect(response) -> None:
    if 300 <= response.status_code < 400:
        location = printable(response.headers.get("Location", "(no Location)"))[:200]
        raise RedirectRefused(
            f"the server answered {response.status_code}, a redirect to {location}; "
            "redirects are not followed: set [redcap] url to the right address"
        )
