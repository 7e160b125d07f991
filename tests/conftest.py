"""Shared fixtures: a clean environment for every test and REDCap sandboxes on loopback ports."""

from __future__ import annotations

import os

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
