"""The kit's configuration: one TOML file, secrets by reference.

Scripts and schedulers depend on these key names, so keys are added, never renamed::

    [redcap]
    url = "https://redcap.example.org/api/"   # per database: [redcap.urls] autoid = "..."
    verify = true                              # or a CA bundle path
    timeout_s = 30
    [redcap.tokens]
    projects = "env:AUTOID_TOKEN_PROJECTS"
    incoming = "env:AUTOID_TOKEN_INCOMING"
    autoid   = "file:/etc/autoid/autoid.token"
    # transfers = "env:AUTOID_TOKEN_TRANSFERS"  (default: the incoming token)
    [run]
    lookback_days = 14
    hash = "sha512"                            # or "hmac-sha256" with hash_key = "env:..."
    lock_file = "/var/lock/autoid.lock"
    reports_dir = "reports"

Relative paths are read relative to the config file's folder.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from autoid_lib.errors import ConfigError
from autoid_lib.hashing import PatientHasher
from autoid_lib.secret import Secret, resolve_secret

DATABASES = ("projects", "incoming", "autoid", "transfers")
# Every key the kit reads; anything else is a typo worth stopping for (docs/run.md lists them).
KNOWN_KEYS = {
    "": ("redcap", "run", "email", "monitoring"),
    "redcap": ("url", "urls", "verify", "timeout_s", "read_retries", "chunk_size", "tokens"),
    "redcap.urls": DATABASES,
    "redcap.tokens": DATABASES,
    "run": (
        "lookback_days", "hash", "hash_key", "lock_file", "reports_dir", "capacity_warn_at",
        "server_timezone", "external_generator", "cell_timeout_s",
        "forecast_weeks", "forecast_warn_days",
    ),
    "monitoring": ("textfile", "ping_url", "ping_timeout_s"),
}  # fmt: skip
_TOKEN_SHAPE = re.compile(r"[0-9A-Za-z]{32}")


@dataclass(frozen=True)
class RedcapSettings:
    urls: dict[str, str]
    tokens: dict[str, Secret] = field(repr=False)
    verify: bool | str = True
    timeout_s: float = 30.0
    read_retries: int = 3
    chunk_size: int = 500

    def same_database(self, a: str, b: str) -> bool:
        return self.urls[a] == self.urls[b] and self.tokens[a].reveal() == self.tokens[b].reveal()


@dataclass(frozen=True)
class RunSettings:
    lookback_days: int = 14
    hash: str = "sha512"
    hash_key: Secret | None = field(default=None, repr=False)
    lock_file: Path = Path("autoid.lock")
    reports_dir: Path = Path("reports")
    capacity_warn_at: float = 0.8
    server_timezone: str = ""  # REDCap's clock for dateRangeBegin; default: this machine's
    external_generator: tuple[str, ...] = ()  # argv with {pattern} and {exclusion_file}
    cell_timeout_s: float = 900.0  # a notebook cell running longer fails the run
    forecast_weeks: int = 8  # how far back the exhaustion forecast looks (docs/run.md)
    forecast_warn_days: int = 180  # a forecast date this close is an anomaly

    def hasher(self) -> PatientHasher:
        return PatientHasher(self.hash, self.hash_key)


@dataclass(frozen=True)
class Settings:
    redcap: RedcapSettings
    run: RunSettings
    email: dict = field(default_factory=dict)  # the raw [email] table, parsed by autoid_lib.mail
    monitoring: dict = field(default_factory=dict)  # raw [monitoring], parsed by .monitoring
    path: Path | None = None

    def secrets(self) -> list[Secret]:
        found = list(self.redcap.tokens.values())
        if self.run.hash_key is not None:
            found.append(self.run.hash_key)
        return found


def load_settings(path: str | Path) -> Settings:
    """Read and validate the config file; every problem is a ConfigError naming the key."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from None
    _refuse_unknown_keys(data)
    base = path.parent.resolve()
    return Settings(
        redcap=_redcap_settings(_table(data, "redcap"), base),
        run=_run_settings(_table(data, "run", required=False), base),
        email=_table(data, "email", required=False),
        monitoring=_table(data, "monitoring", required=False),
        path=path.resolve(),
    )


def _refuse_unknown_keys(data: dict) -> None:
    for where, known in KNOWN_KEYS.items():
        table = data
        for part in filter(None, where.split(".")):
            table = table.get(part) if isinstance(table, dict) else None
        if not isinstance(table, dict):
            continue
        unknown = sorted(set(table) - set(known))
        if unknown:
            shown = f"[{where}] " if where else ""
            raise ConfigError(
                f"unknown config key {shown}{unknown[0]}; known keys: {', '.join(known)}"
            )


def _table(data: dict, name: str, required: bool = True) -> dict:
    value = data.get(name)
    if value is None:
        if required:
            raise ConfigError(f"config lacks the [{name}] table")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key {name} must be a table ([{name}])")
    return value


def _redcap_settings(table: dict, base: Path) -> RedcapSettings:
    overrides = dict(_table(table, "urls", required=False))
    overrides.setdefault("transfers", overrides.get("incoming"))  # like its token, below
    default_url = table.get("url")
    urls = {}
    for database in DATABASES:
        url = overrides.get(database) or default_url
        if not isinstance(url, str) or not url.endswith("/api/"):
            raise ConfigError(
                f"[redcap] url for {database} must be the API address ending in '/api/'"
            )
        urls[database] = url
    references = _table(table, "tokens")
    references.setdefault("transfers", references.get("incoming"))
    tokens = {}
    for database in DATABASES:
        if database not in references or references[database] is None:
            raise ConfigError(f"[redcap.tokens] lacks {database} = 'env:...' or 'file:...'")
        tokens[database] = _token(references[database], database)
    verify = table.get("verify", True)
    if isinstance(verify, str):
        verify = str(_path(verify, base))
    elif not isinstance(verify, bool):
        raise ConfigError("[redcap] verify must be true, false or a CA bundle path")
    return RedcapSettings(
        urls=urls,
        tokens=tokens,
        verify=verify,
        timeout_s=_positive(table, "timeout_s", 30.0, "[redcap]"),
        read_retries=_whole(table, "read_retries", 3, "[redcap]", allow_zero=True),
        chunk_size=_whole(table, "chunk_size", 500, "[redcap]"),
    )


def _token(reference: str, database: str) -> Secret:
    """Resolve and check a token before PyCap sees it (PyCap's own check prints the token)."""
    secret = resolve_secret(reference, f"the {database} token")
    if not _TOKEN_SHAPE.fullmatch(secret.reveal()):
        raise ConfigError(
            f"the {database} token ({reference}) is not a REDCap API token: "
            "expected 32 letters or digits"
        )
    return secret


def _run_settings(table: dict, base: Path) -> RunSettings:
    scheme = table.get("hash", "sha512")
    key_reference = table.get("hash_key")
    hash_key = resolve_secret(key_reference, "[run] hash_key") if key_reference else None
    generator = table.get("external_generator", [])
    if isinstance(generator, str) or not all(isinstance(a, str) for a in generator):
        raise ConfigError("[run] external_generator must be a list of arguments")
    settings = RunSettings(
        lookback_days=_whole(table, "lookback_days", 14, "[run]"),
        hash=scheme,
        hash_key=hash_key,
        lock_file=_path(table.get("lock_file", "autoid.lock"), base),
        reports_dir=_path(table.get("reports_dir", "reports"), base),
        capacity_warn_at=_fraction(table, "capacity_warn_at", 0.8, "[run]"),
        server_timezone=_timezone(table.get("server_timezone", "")),
        external_generator=tuple(generator),
        cell_timeout_s=float(_positive(table, "cell_timeout_s", 900.0, "[run]")),
        forecast_weeks=_whole(table, "forecast_weeks", 8, "[run]"),
        forecast_warn_days=_whole(table, "forecast_warn_days", 180, "[run]", allow_zero=True),
    )
    settings.hasher()  # validates the scheme and key now, not mid-run
    return settings


def _positive(table: dict, key: str, default, where: str, allow_zero: bool = False):
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} {key} must be a number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where} {key} must be positive")
    return value


def _whole(table: dict, key: str, default: int, where: str, allow_zero: bool = False) -> int:
    value = _positive(table, key, default, where, allow_zero)
    if not isinstance(value, int):
        raise ConfigError(f"{where} {key} must be a whole number, not {value}")
    return value


def _fraction(table: dict, key: str, default: float, where: str) -> float:
    value = float(_positive(table, key, default, where))
    if value > 1:
        raise ConfigError(f"{where} {key} is a fraction: 0.8 means 80 %, not {value:g}")
    return value


def _timezone(name) -> str:
    """'' (this machine's zone) or an IANA name such as Europe/Oslo, checked now."""
    if not isinstance(name, str):
        raise ConfigError("[run] server_timezone must be a name like 'Europe/Oslo'")
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"[run] server_timezone {name!r} is not a known time zone (e.g. 'Europe/Oslo')"
            ) from None
    return name


def _path(value, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
