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
    lock_file = "/var/lib/autoid/autoid.lock"
    reports_dir = "reports"
    [cache]                                    # the local copy of AutoID and Projects
    enabled = true                             # default; docs/run.md "Reading what changed"
    dir = "/var/lib/autoid/state"             # default: "autoid-state" beside reports_dir

Relative paths are read relative to the config file's folder.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from autoid_lib.child_env import refused_name
from autoid_lib.errors import ConfigError
from autoid_lib.hashing import MIN_KEY_BYTES, PatientHasher
from autoid_lib.lease import KNOWN_KEYS as LEASE_KEYS
from autoid_lib.lease import lease_settings
from autoid_lib.secret import Secret, resolve_secret

DATABASES = ("projects", "incoming", "autoid", "transfers")
# Every key the kit reads; anything else is a typo worth stopping for (docs/run.md lists them).
KNOWN_KEYS = {
    "": ("redcap", "run", "email", "lease", "monitoring", "cache"),
    "redcap": (
        "url", "urls", "verify", "timeout_s", "read_retries", "chunk_size", "tokens",
        "max_answer_mb", "read_chunk_records", "max_requests_per_minute",
    ),
    "redcap.urls": DATABASES,
    "redcap.tokens": DATABASES,
    "run": (
        "lookback_days", "hash", "hash_key", "lock_file", "reports_dir", "capacity_warn_at",
        "server_timezone", "external_generator", "cell_timeout_s", "external_generator_env",
        "previous_hash", "previous_hash_key", "max_catchup_days", "forecast_weeks",
        "forecast_warn_days",
    ),
    "lease": LEASE_KEYS,  # checked by autoid_lib.lease
    "monitoring": ("textfile", "ping_url", "ping_timeout_s"),
    "cache": ("enabled", "dir", "full_read_hours", "overlap_minutes"),
}  # fmt: skip
# [email]'s keys (docs/operations.md): a misspelt one stops the config like any other table's;
# its values are checked by mail.settings when mail is configured (autoid check, --email).
EMAIL_KEYS = (
    "smtp_host", "smtp_port", "security", "username", "password", "sender", "recipients", "send",
    "attach_report", "report_url_base", "timeout_s", "subject_prefix", "attach_max_bytes",
    "tls_ca_file", "repeat_failure_hours",
)  # fmt: skip
KNOWN_KEYS["email"] = EMAIL_KEYS
_TOKEN_SHAPE = re.compile(r"[0-9A-Za-z]{32}")
# Ten years: longer than any site's history, short enough that dates stay representable.
MAX_LOOKBACK_DAYS = 3660
# An hour for the repeated DST hour on REDCap's local clock, plus room for clock differences.
MIN_OVERLAP_MINUTES = 75


@dataclass(frozen=True)
class RedcapSettings:
    urls: dict[str, str]
    tokens: dict[str, Secret] = field(repr=False)
    verify: bool | str = True
    timeout_s: float = 30.0
    read_retries: int = 3
    chunk_size: int = 500
    read_chunk_records: int = 5000  # records per export request (reads)
    max_answer_bytes: int = 512 * 10**6  # a larger answer fails closed (memory stays bounded)
    max_requests_per_minute: int = 120  # REDCap bans the IP past its limiter (600 by default)

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
    external_generator_env: tuple[str, ...] = ()  # variables it gets besides PATH, LANG, HOME...
    cell_timeout_s: float = 900.0  # a notebook cell running longer fails the run
    previous_hash: str = ""  # the scheme before a rotation, still looked up ("" = none)
    previous_hash_key: Secret | None = field(default=None, repr=False)
    max_catchup_days: int = 60  # how far back a run reaches after runs stopped
    forecast_weeks: int = 8  # how far back the exhaustion forecast looks (docs/run.md)
    forecast_warn_days: int = 180  # a forecast date this close is an anomaly

    def hasher(self) -> PatientHasher:
        previous = None
        if self.previous_hash:
            previous = PatientHasher(self.previous_hash, self.previous_hash_key)
        return PatientHasher(self.hash, self.hash_key, previous)


@dataclass(frozen=True)
class CacheSettings:
    """The ``[cache]`` table: the local copy of the AutoID and Projects tables (docs/run.md,
    "Reading what changed"). Only a cache: deleting ``dir`` is always safe."""

    enabled: bool = True
    dir: Path = Path("autoid-state")
    full_read_hours: float = 24.0  # a full re-read at least this often
    overlap_minutes: float = 120.0  # dateRangeBegin reaches back this far before the last read


@dataclass(frozen=True)
class Settings:
    redcap: RedcapSettings
    run: RunSettings
    email: dict[str, Any] = field(
        default_factory=dict
    )  # the raw [email] table, parsed by autoid_lib.mail
    lease: dict[str, Any] = field(
        default_factory=dict
    )  # the raw [lease] table, read by autoid_lib.lease
    monitoring: dict[str, Any] = field(
        default_factory=dict
    )  # raw [monitoring], parsed by .monitoring
    path: Path | None = None
    cache: CacheSettings = CacheSettings()

    def secrets(self) -> list[Secret]:
        found = list(self.redcap.tokens.values())
        found += [k for k in (self.run.hash_key, self.run.previous_hash_key) if k is not None]
        return found


def load_settings(path: str | Path) -> Settings:
    """Read and validate the config file; every problem is a ConfigError naming the key."""
    path = Path(path).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config {path} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config {path} is not valid TOML: {error}") from None
    _refuse_unknown_keys(data)
    _refuse_secrets_for_generator(data)
    base = path.parent.resolve()
    run = _run_settings(_table(data, "run", required=False), base)
    settings = Settings(
        redcap=_redcap_settings(_table(data, "redcap"), base),
        run=run,
        email=_table(data, "email", required=False),
        lease=_table(data, "lease", required=False),
        monitoring=_table(data, "monitoring", required=False),
        path=path.resolve(),
        cache=_cache_settings(_table(data, "cache", required=False), base, run.reports_dir),
    )
    lease = lease_settings(settings.lease, timeout_s=settings.redcap.timeout_s)  # now, not mid-run
    ticket_life_s = lease.expiry_s + lease.clock_skew_s
    if (
        lease.enabled
        and settings.cache.enabled
        and settings.cache.overlap_minutes * 60 < ticket_life_s
    ):
        raise ConfigError(
            f"[cache] overlap_minutes ({settings.cache.overlap_minutes:g}) must cover a lease "
            f"ticket's life, [lease] expiry_s plus clock_skew_s ({ticket_life_s / 60:g} min): "
            "a live ticket must always be among the changes a run reads"
        )
    return settings


def _cache_settings(table: dict[str, Any], base: Path, reports_dir: Path) -> CacheSettings:
    """``[cache]``; the default folder is ``autoid-state`` beside the reports folder."""
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError("[cache] enabled must be true or false")
    overlap = _positive(table, "overlap_minutes", 120.0, "[cache]")
    if overlap < MIN_OVERLAP_MINUTES:
        raise ConfigError(
            f"[cache] overlap_minutes must be at least {MIN_OVERLAP_MINUTES}: the overlap "
            "covers the hour a DST change repeats on REDCap's clock, and clock differences"
        )
    default_dir = reports_dir.parent / "autoid-state"
    return CacheSettings(
        enabled=enabled,
        dir=_path(table["dir"], base) if "dir" in table else default_dir,
        full_read_hours=_positive(table, "full_read_hours", 24.0, "[cache]"),
        overlap_minutes=overlap,
    )


def _refuse_unknown_keys(data: dict[str, Any]) -> None:
    for where, known in KNOWN_KEYS.items():
        table: Any = data
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


def _refuse_secrets_for_generator(data: dict[str, Any]) -> None:
    """A variable that holds one of this config's secrets never goes to the generator."""
    run, redcap = data.get("run") or {}, data.get("redcap") or {}
    names = run.get("external_generator_env") if isinstance(run, dict) else None
    if not isinstance(names, list):
        return
    tokens = redcap.get("tokens") if isinstance(redcap, dict) else None
    references = list(tokens.values()) if isinstance(tokens, dict) else []
    references += [run.get("hash_key"), (data.get("email") or {}).get("password")]
    secret_vars = {r[4:] for r in references if isinstance(r, str) and r.startswith("env:")}
    for name in names:
        if name in secret_vars:
            raise ConfigError(f"[run] external_generator_env: {name} holds a secret of the kit")


def _table(data: dict[str, Any], name: str, required: bool = True) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        if required:
            raise ConfigError(f"config lacks the [{name}] table")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key {name} must be a table ([{name}])")
    return value


def _redcap_settings(table: dict[str, Any], base: Path) -> RedcapSettings:
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
        read_chunk_records=_whole(table, "read_chunk_records", 5000, "[redcap]"),
        max_answer_bytes=int(_positive(table, "max_answer_mb", 512, "[redcap]") * 10**6),
        max_requests_per_minute=_whole(table, "max_requests_per_minute", 120, "[redcap]"),
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


def _run_settings(table: dict[str, Any], base: Path) -> RunSettings:
    scheme = table.get("hash", "sha512")
    key_reference = table.get("hash_key")
    hash_key = resolve_secret(key_reference, "[run] hash_key") if key_reference else None
    if hash_key is not None and len(hash_key.reveal().encode("utf-8")) < MIN_KEY_BYTES:
        # new rows are keyed with it; a rotation's previous key is only looked up, so not here
        raise ConfigError(
            f"[run] hash_key ({hash_key.source}) is shorter than {MIN_KEY_BYTES} bytes; "
            "use a long random key, e.g. from: openssl rand -hex 32"
        )
    previous_reference = table.get("previous_hash_key")
    previous_key = (
        resolve_secret(previous_reference, "[run] previous_hash_key")
        if previous_reference
        else None
    )
    previous_hash = table.get("previous_hash", "")
    if not isinstance(previous_hash, str):
        raise ConfigError("[run] previous_hash must be 'sha512' or 'hmac-sha256'")
    generator = table.get("external_generator", [])
    if not isinstance(generator, list) or not all(isinstance(a, str) for a in generator):
        raise ConfigError(
            "[run] external_generator must be a list of arguments, e.g. "
            "['/opt/gen-id.py', '-r', '{pattern}', '-e', '{exclusion_file}']"
        )
    lookback_days = _days(table, "lookback_days", 14)
    max_catchup_days = _days(table, "max_catchup_days", max(60, lookback_days))
    if max_catchup_days < lookback_days:
        raise ConfigError(
            f"[run] max_catchup_days ({max_catchup_days}) must be at least lookback_days "
            f"({lookback_days})"
        )
    generator_env = _generator_env(table.get("external_generator_env", []))
    settings = RunSettings(
        lookback_days=lookback_days,
        hash=scheme,
        hash_key=hash_key,
        lock_file=_path(table.get("lock_file", "autoid.lock"), base),
        reports_dir=_path(table.get("reports_dir", "reports"), base),
        capacity_warn_at=_fraction(table, "capacity_warn_at", 0.8, "[run]"),
        server_timezone=_timezone(table.get("server_timezone", "")),
        external_generator=tuple(generator),
        external_generator_env=generator_env,
        cell_timeout_s=float(_positive(table, "cell_timeout_s", 900.0, "[run]")),
        previous_hash=previous_hash,
        previous_hash_key=previous_key,
        max_catchup_days=max_catchup_days,
        forecast_weeks=_whole(table, "forecast_weeks", 8, "[run]"),
        forecast_warn_days=_whole(table, "forecast_warn_days", 180, "[run]", allow_zero=True),
    )
    settings.hasher()  # validates the scheme and key now, not mid-run
    return settings


def _generator_env(names: object) -> tuple[str, ...]:
    """Variable names the site passes to its generator; the kit's secrets are refused."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError("[run] external_generator_env must be a list of variable names")
    for name in names:
        why = refused_name(name)
        if why:
            raise ConfigError(f"[run] external_generator_env: {why}")
    return tuple(names)


def _positive(
    table: dict[str, Any], key: str, default: float, where: str, allow_zero: bool = False
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} {key} must be a number")
    if not math.isfinite(value):
        raise ConfigError(f"{where} {key} must be a finite number, not {value}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{where} {key} must be positive")
    return value


def _whole(
    table: dict[str, Any], key: str, default: int, where: str, allow_zero: bool = False
) -> int:
    value = _positive(table, key, default, where, allow_zero)
    if not isinstance(value, int):
        raise ConfigError(f"{where} {key} must be a whole number, not {value}")
    return value


def _days(table: dict[str, Any], key: str, default: int) -> int:
    """A number of days back from now, bounded so that every date stays representable."""
    value = _whole(table, key, default, "[run]")
    if value > MAX_LOOKBACK_DAYS:
        raise ConfigError(f"[run] {key} must be at most {MAX_LOOKBACK_DAYS} (ten years)")
    return value


def _fraction(table: dict[str, Any], key: str, default: float, where: str) -> float:
    value = float(_positive(table, key, default, where))
    if value > 1:
        raise ConfigError(f"{where} {key} is a fraction: 0.8 means 80 %, not {value:g}")
    return value


def _timezone(name: object) -> str:
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


def _path(value: object, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"expected a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
