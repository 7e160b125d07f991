"""Dead man's switch pings, the Healthchecks convention: ``<url>/start``, ``<url>``, ``<url>/fail``.

A check that stops receiving pings alerts, so a cron job that silently stopped running is seen.
A ping is best effort: bounded by a short timeout, never retried, redirects not followed (a
redirect could carry the URL's secret part elsewhere), and a failure is logged and swallowed:
it never fails or delays the run beyond the timeout. The URL's path usually holds the check's
secret UUID, so logs name only its scheme and host.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import requests

from autoid_lib.secret import Secret

log = logging.getLogger("autoid.ping")

START, SUCCESS, FAIL = "start", "success", "fail"
_SUFFIX = {START: "/start", SUCCESS: "", FAIL: "/fail"}
MAX_BODY = 10_000  # Healthchecks keeps the first 100 kB of a ping's body as its log


def ping_address(url: str, event: str) -> str:
    """``https://hc-ping.com/<uuid>`` + ``/start`` | ``""`` | ``/fail``."""
    return url.rstrip("/") + _SUFFIX[event]


def shown(url: str) -> str:
    """The URL as logs may show it: scheme and host, never the path that holds the UUID."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}/…"


def ping(url: Secret, event: str, *, timeout_s: float, body: str = "") -> bool:
    """Send one ping; True if the server answered 2xx. Never raises for network trouble."""
    address = ping_address(url.reveal(), event)
    try:
        answer = requests.post(
            address,
            data=body[:MAX_BODY].encode("utf-8"),
            timeout=timeout_s,
            allow_redirects=False,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )
    except requests.Timeout:
        log.warning("%s ping to %s: no answer within %g s", event, shown(address), timeout_s)
        return False
    except requests.RequestException as error:
        log.warning("%s ping to %s failed: %s", event, shown(address), type(error).__name__)
        return False
    if not 200 <= answer.status_code < 300:
        log.warning("%s ping to %s: HTTP %s", event, shown(address), answer.status_code)
        return False
    log.info("%s ping sent to %s", event, shown(address))
    return True
