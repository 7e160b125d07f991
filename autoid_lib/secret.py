"""Secrets by reference: ``env:NAME`` or ``file:PATH``, never inline, masked on the way out.

Config files and papermill parameters end up in places people read (output notebooks record
every parameter, twice), so a token is only ever named by where it lives. ``Secret`` keeps the
value out of ``repr``/``str`` and so out of logs, tracebacks and notebook outputs.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from autoid_lib.errors import ConfigError


@dataclass(frozen=True)
class Secret:
    """A secret value that never prints itself; ``source`` says where it came from."""

    source: str
    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The value, for the one place that must send it (an HTTP form, an SMTP login)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source!r})"

    __str__ = __repr__


def redact(text: str, secrets: list[Secret]) -> str:
    """Replace every secret value in ``text`` by a mask (for messages from other libraries)."""
    for secret in secrets:
        value = secret.reveal()
        if value:
            text = text.replace(value, "***")
    return text


def resolve_secret(reference: str, what: str) -> Secret:
    """Read the secret that ``reference`` (``env:NAME`` or ``file:PATH``) points to.

    ``what`` names the secret in error messages ("the autoid token"). A token file readable by
    group or others is refused, as ssh refuses such a key.
    """
    if not isinstance(reference, str) or ":" not in reference:
        raise ConfigError(
            f"{what} must be a reference like 'env:VARIABLE' or 'file:/path/to/file', "
            "never the secret itself"
        )
    scheme, _, target = reference.partition(":")
    if scheme == "env":
        value = os.environ.get(target, "")
        if not value.strip():
            raise ConfigError(f"{what}: environment variable {target} is not set or empty")
        return Secret(reference, value.strip())
    if scheme == "file":
        return Secret(reference, _read_private_file(Path(target).expanduser(), what))
    raise ConfigError(f"{what}: unknown secret scheme; use 'env:VARIABLE' or 'file:/path'")


def _read_private_file(path: Path, what: str) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise ConfigError(f"{what}: cannot read {path}: {error.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{what}: {path} is readable by group or others; run: chmod 600 {path}")
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"{what}: cannot read {path}: {error.strerror}") from None
    if not value:
        raise ConfigError(f"{what}: {path} is empty")
    return value
