"""Which kit, REDCap host, config and machine produced a report: the environment line.

A report read weeks later must say where it came from. Only names that are safe to show: the
kit's version, the REDCap host names (never a path with a token, never a token), the config
file's path and the machine's name.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from autoid_lib import __version__

if TYPE_CHECKING:
    from autoid_lib.config import Settings


def environment(settings: Settings) -> dict[str, str]:
    """The environment line's facts for ``settings`` (read where the job runs): ``kit_version``,
    ``redcap_host`` (several joined by ", " when the databases differ), ``config``, ``machine``."""
    hosts = sorted({urlsplit(url).hostname or "?" for url in settings.redcap.urls.values()})
    return {
        "kit_version": __version__,
        "redcap_host": ", ".join(hosts),
        "config": str(settings.path) if settings.path else "",
        "machine": socket.gethostname(),
    }


def describe(env: object) -> str:
    """``kit 0.1.0 · REDCap redcap.example.org · config /etc/autoid.toml · host ops1``."""
    if not isinstance(env, dict):
        return ""
    parts = [
        ("kit", env.get("kit_version")),
        ("REDCap", env.get("redcap_host")),
        ("config", env.get("config")),
        ("machine", env.get("machine")),
    ]
    return " · ".join(f"{label} {value}" for label, value in parts if value)
