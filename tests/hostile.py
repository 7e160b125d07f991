"""A hostile 'REDCap' on loopback for the security tests: it redirects, drips, floods, nests
or answers with escape sequences. Raw sockets, so it can misbehave exactly."""

from __future__ import annotations

import json
import socket
import threading
import time


class HostileServer:
    """Answers every request with ``behaviour``; ``connections`` counts who connected."""

    def __init__(self, behaviour: str, **options):
        self.behaviour = behaviour
        self.options = options
        self.connections = 0
        self.received = b""
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/api/"
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                self.received += _read_request(conn)
                getattr(self, f"_{self.behaviour}")(conn)
            except OSError:
                pass  # the client gave up: that is the point

    def _silent(self, conn) -> None:
        self._stop.wait(60)

    def _redirect(self, conn) -> None:
        status, target = self.options["status"], self.options["location"]
        conn.sendall(
            f"HTTP/1.1 {status} Moved\r\nLocation: {target}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    def _drip(self, conn) -> None:
        """Headers and body one byte at a time, each well within any per-read timeout; with
        ``http10``, headers at once then an HTTP/1.0 body of no declared length (read until
        the server closes), which ``http.client`` reads from a socket it has detached."""
        body = b'{"project_title": "' + b"x" * 10_000 + b'"}'
        if self.options.get("http10"):
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n")
            head = b""
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        for byte in head + body:
            if self._stop.is_set():
                return
            conn.sendall(bytes([byte]))
            time.sleep(self.options.get("every_s", 0.2))

    def _flood(self, conn) -> None:
        """A JSON answer of ``megabytes`` MB, with or without a Content-Length."""
        size = self.options["megabytes"] * 10**6
        length = f"Content-Length: {size + 2}\r\n" if self.options.get("declared") else ""
        conn.sendall(f"HTTP/1.1 200 OK\r\n{length}Connection: close\r\n\r\n[".encode())
        chunk = b" " * 10**6
        for _ in range(self.options["megabytes"]):
            conn.sendall(chunk)
        conn.sendall(b"]")

    def _nested(self, conn) -> None:
        depth = self.options.get("depth", 200_000)
        self._send(conn, 200, b"[" * depth + b"]" * depth)

    def _error(self, conn) -> None:
        self._send(conn, 400, json.dumps({"error": self.options["message"]}).encode())

    def _send(self, conn, status: int, body: bytes) -> None:
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        conn.sendall(head.encode() + body)


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(65536)
        if not part:
            return data
        data += part
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        part = conn.recv(65536)
        if not part:
            break
        body += part
    return head + b"\r\n\r\n" + body
