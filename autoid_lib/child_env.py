"""The environment a site's program is started with: an allow-list, never the kit's own.

The kit's environment holds every ``AUTOID_TOKEN_*``, the HMAC key and the SMTP password. A
third-party program (the external ID generator) and anything it starts must see none of them,
so it gets only what a program needs to run (``PATH``, locale, ``HOME``, ``TMPDIR``, ...) plus
the names a site lists in ``[run] external_generator_env``. A deny-list would miss the next
secret someone adds; an allow-list cannot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

BASE_NAMES = ("PATH", "LANG", "LANGUAGE", "HOME", "TMPDIR", "TZ", "USER", "LOGNAME")
# what can never be passed on, even if a site lists it (names of the kit's own secrets)
_NEVER_PREFIXES = ("AUTOID_TOKEN_", "AUTOID_HASH", "AUTOID_SMTP", "AUTOID_LOCK_HELD_BY")


def refused_name(name: str) -> str | None:
    """Why ``name`` may not be passed to a site's program, or None if it may."""
    if not name or "=" in name or "\0" in name:
        return f"{name!r} is not an environment variable name"
    if name.upper().startswith(_NEVER_PREFIXES):
        return f"{name} holds a secret of the kit"
    return None


def minimal_environment(
    extra: Iterable[str] = (), source: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allow-listed part of ``source`` (default: this process's environment)."""
    source = os.environ if source is None else source
    wanted = set(BASE_NAMES) | {name for name in extra if refused_name(name) is None}
    return {
        name: value
        for name, value in source.items()
        if name in wanted or (name.startswith("LC_") and refused_name(name) is None)
    }
