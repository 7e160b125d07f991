"""The ``[email]`` table, checked: ``EmailSettings`` and ``email_settings_from_config``.

Its own module so that composing a mail (``mail.compose``) and sending it (``mail.send``) share
the settings type without importing each other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from autoid_lib.config import EMAIL_KEYS
from autoid_lib.errors import ConfigError
from autoid_lib.secret import Secret, resolve_secret

log = logging.getLogger("autoid.mail")

SECURITY_MODES = ("none", "starttls", "tls")
SEND_POLICIES = ("always", "on-change", "on-attention")
_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_MAX_REPEAT_HOURS = 24 * 366


@dataclass(frozen=True)
class EmailSettings:
    """The ``[email]`` table, checked. ``password`` is a ``Secret``, never a plain string."""

    smtp_host: str
    sender: str
    recipients: tuple[str, ...]
    smtp_port: int = 587
    security: str = "starttls"  # none | starttls | tls
    username: str | None = None
    password: Secret | None = None
    send: str = "on-change"  # always | on-change | on-attention
    attach_report: bool = False
    report_url_base: str | None = None
    timeout_s: float = 30.0
    subject_prefix: str = "[autoid]"
    attach_max_bytes: int = 10_000_000
    tls_ca_file: str | None = None  # extra CA bundle for a site-internal SMTP certificate
    repeat_failure_hours: float = 6.0  # remind of a failure that persists, at most this often


_KEYS = EMAIL_KEYS  # one list, in config (load_settings refuses any other key)


def email_settings_from_config(section: Mapping[str, Any]) -> EmailSettings:
    """Check the ``[email]`` table and resolve its password reference.

    Raises ``ConfigError`` naming the key and the fix for anything missing or malformed.
    """
    if not isinstance(section, Mapping):
        raise ConfigError("[email] must be a table of settings")
    unknown = sorted(set(section) - set(_KEYS))
    if unknown:
        raise ConfigError(
            f"[email] has unknown key(s) {', '.join(unknown)}; known keys: {', '.join(_KEYS)}"
        )
    security = _choice(section, "security", SECURITY_MODES, "starttls")
    port = section.get("smtp_port", _DEFAULT_PORTS[security])
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"[email] smtp_port must be a port number like 587, not {port!r}")
    username = _optional_text(section, "username")
    password = None
    if section.get("password") is not None:
        password = resolve_secret(section["password"], "[email] password")
    if (username is None) != (password is None):
        raise ConfigError(
            "[email] username and password go together: set both to log in, or neither"
        )
    if username and security == "none":
        log.warning("[email] logs in without TLS (security = 'none'); the password is exposed")
    recipients = section.get("recipients")
    if isinstance(recipients, str) or not isinstance(recipients, list | tuple) or not recipients:
        raise ConfigError(
            '[email] recipients must be a non-empty list, e.g. recipients = ["ops@example.org"]'
        )
    url_base = _optional_text(section, "report_url_base")
    if url_base and not url_base.startswith(("https://", "http://")):
        raise ConfigError(
            f"[email] report_url_base must start with https:// (or http://), not {url_base!r}"
        )
    timeout = section.get("timeout_s", 30)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 1 <= timeout <= 600:
        raise ConfigError(f"[email] timeout_s must be seconds between 1 and 600, not {timeout!r}")
    repeat = section.get("repeat_failure_hours", EmailSettings.repeat_failure_hours)
    if (
        isinstance(repeat, bool)
        or not isinstance(repeat, int | float)
        or not 0 < repeat <= _MAX_REPEAT_HOURS
    ):
        raise ConfigError(
            f"[email] repeat_failure_hours must be hours above 0 and at most {_MAX_REPEAT_HOURS} "
            f"(e.g. 6, or 168 for weekly), not {repeat!r}"
        )
    max_bytes = section.get("attach_max_bytes", EmailSettings.attach_max_bytes)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ConfigError("[email] attach_max_bytes must be a positive number of bytes")
    ca_file = _optional_text(section, "tls_ca_file")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"[email] tls_ca_file {ca_file} does not exist; give a PEM CA bundle")
    prefix = section.get("subject_prefix", "[autoid]")
    if not isinstance(prefix, str) or re.search(r"[\r\n]", prefix):
        raise ConfigError("[email] subject_prefix must be one line of text, e.g. '[autoid]'")
    return EmailSettings(
        smtp_host=_required_text(section, "smtp_host", 'smtp_host = "smtp.example.org"'),
        smtp_port=port,
        security=security,
        username=username,
        password=password,
        sender=_address(section.get("sender"), "sender"),
        recipients=tuple(_address(r, "recipients") for r in recipients),
        send=_choice(section, "send", SEND_POLICIES, "on-change"),
        attach_report=_flag(section, "attach_report"),
        report_url_base=url_base,
        timeout_s=float(timeout),
        subject_prefix=prefix.strip(),
        attach_max_bytes=max_bytes,
        tls_ca_file=ca_file,
        repeat_failure_hours=float(repeat),
    )


def _choice(section: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = section.get(key, default)
    if value not in choices:
        raise ConfigError(f"[email] {key} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _flag(section: Mapping[str, Any], key: str) -> bool:
    value = section.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"[email] {key} must be true or false, not {value!r}")
    return value


def _optional_text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"[email] {key} must be text, not {value!r}")
    return value.strip()


def _required_text(section: Mapping[str, Any], key: str, example: str) -> str:
    value = _optional_text(section, key)
    if value is None:
        raise ConfigError(f"[email] {key} is missing; add e.g. {example}")
    return value


def _address(value: Any, key: str) -> str:
    if (
        not isinstance(value, str)
        or re.search(r"[\s,;<>]", value.strip())
        or "@" not in parseaddr(value)[1]
    ):
        raise ConfigError(
            f"[email] {key}: {value!r} is not a plain address like 'autoid@example.org'"
        )
    return value.strip()
