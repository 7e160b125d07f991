"""Shared fixtures: a clean environment, REDCap sandboxes and SMTP servers on loopback ports."""

from __future__ import annotations

import email
import email.policy
import os
import socket

import pytest

from autoid_lib.sandbox import Sandbox

_PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No proxy may intercept loopback calls and no AUTOID_* setting may leak into a test."""
    for name in list(os.environ):
        if name.upper() in _PROXY_VARIABLES or name.startswith("AUTOID_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def sandbox_factory():
    """Start sandboxes with any options (``sandbox_factory(seed="demo", now=...)``); all stop
    at the end of the test."""
    started: list[Sandbox] = []

    def start(**options) -> Sandbox:
        sb = Sandbox(**options).start()
        started.append(sb)
        return sb

    yield start
    for sb in started:
        sb.stop()


@pytest.fixture
def sandbox(sandbox_factory) -> Sandbox:
    """An empty sandbox (the three databases, no records), fresh in memory for each test."""
    return sandbox_factory(seed="empty")


@pytest.fixture
def demo_sandbox(sandbox_factory) -> Sandbox:
    """A sandbox with the deterministic demo seed, fresh in memory for each test."""
    return sandbox_factory(seed="demo")


class SmtpInbox:
    """aiosmtpd handler for ``smtp_server``: keeps what it receives, or answers DATA with
    ``reply``."""

    def __init__(self, reply: str = "250 OK"):
        self.reply = reply
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        if self.reply.startswith("250"):
            self.envelopes.append(envelope)
        return self.reply

    def messages(self) -> list[email.message.EmailMessage]:
        return [
            email.message_from_bytes(e.original_content, policy=email.policy.default)
            for e in self.envelopes
        ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    return _free_port()


@pytest.fixture
def smtp_server():
    """Start a real SMTP server (aiosmtpd) on 127.0.0.1: ``start(reply="250 OK",
    **controller_options) -> (inbox, port)``; every server stops at the end of the test."""
    from aiosmtpd.controller import Controller

    controllers = []

    def start(reply: str = "250 OK", **options):
        inbox = SmtpInbox(reply)
        port = _free_port()
        controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return inbox, port

    yield start
    for controller in controllers:
        controller.stop()


class SmtpSwitch:
    """A real SMTP server on one loopback port that a test stops and starts (an outage)."""

    def __init__(self):
        self.inbox = SmtpInbox()
        self.port = _free_port()
        self._controller = None

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        if self._controller is None:
            self._controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port)
            self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp_switch():
    """``SmtpSwitch``, started; stopped at the end of the test."""
    switch = SmtpSwitch()
    switch.start()
    yield switch
    switch.stop()
