"""The commented ``autoid.toml`` that ``autoid init`` writes: every key the kit reads, each with
its default and what it is for.

The keys come from ``config.KNOWN_KEYS`` and the defaults from the settings classes themselves
(``RedcapSettings``, ``RunSettings``, ``CacheSettings``, ``LeaseSettings``,
``MonitoringSettings``, ``EmailSettings``), so the template cannot name a key the loader does not
know or show a default it does not use: tests/test_init.py loads it, and loads it again with
every default uncommented, and compares. Only the words (``HELP``) are written here. Secrets
appear as ``env:``/``file:`` references, never as values.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from autoid_lib.config import DATABASES, KNOWN_KEYS, CacheSettings, RedcapSettings, RunSettings
from autoid_lib.lease import LeaseSettings
from autoid_lib.mail.settings import EmailSettings
from autoid_lib.monitoring import MonitoringSettings

# The tables in the order written; [email] is written commented out (it needs a server).
TABLES = ("redcap", "redcap.urls", "redcap.tokens", "run", "email", "monitoring", "lease", "cache")
OPTIONAL_TABLES = {"email"}
TOKEN_VARIABLE = "AUTOID_TOKEN_{}"
LINE = 100  # characters; longer settings get their words on the line above
# Set in the written file (the rest is commented out): what no default can supply.
REQUIRED: dict[str, Any] = {
    "redcap.url": "https://redcap.example.org/api/",
    **{f"redcap.tokens.{db}": f"env:{TOKEN_VARIABLE.format(db.upper())}" for db in DATABASES[:3]},
}
# Shown commented out, for keys whose default is "none": an example value.
EXAMPLES: dict[str, Any] = {
    "redcap.urls.projects": "https://redcap2.example.org/api/",
    "redcap.urls.incoming": "https://redcap2.example.org/api/",
    "redcap.urls.autoid": "https://redcap2.example.org/api/",
    "redcap.urls.transfers": "https://redcap2.example.org/api/",
    "redcap.tokens.transfers": "env:AUTOID_TOKEN_TRANSFERS",
    "run.hash_key": "env:AUTOID_HASH_KEY",
    "run.previous_hash": "hmac-sha256",
    "run.previous_hash_key": "env:AUTOID_OLD_HASH_KEY",
    "run.server_timezone": "Europe/Oslo",
    "run.external_generator": [
        "/opt/gen-id/gen-id.py", "-r", "{pattern}", "-e", "{exclusion_file}", "-a",
    ],
    "run.external_generator_env": ["GEN_ID_HOME"],
    "email.smtp_host": "smtp.example.org",
    "email.username": "autoid",
    "email.password": "env:AUTOID_SMTP_PASSWORD",
    "email.sender": "autoid@example.org",
    "email.recipients": ["pacs-ops@example.org"],
    "email.report_url_base": "https://pacs-ops.example.org/autoid/",
    "email.tls_ca_file": "/etc/ssl/certs/site-ca.pem",
    "monitoring.textfile": "/var/lib/node_exporter/textfile_collector/autoid.prom",
    "monitoring.ping_url": "env:AUTOID_PING_URL",
    "lease.installation": "gatekeeper-1",
    "lease.delete": True,
    "cache.dir": "/var/lib/autoid/state",
}  # fmt: skip
HELP: dict[str, str] = {
    "redcap": "the REDCap API: where, how long to wait, how hard to push",
    "redcap.url": "the API address (ends in /api/), for every database",
    "redcap.verify": "TLS certificate check: true, or a CA bundle path; never off",
    "redcap.timeout_s": "per read, and (plus 1 s) for a whole request",
    "redcap.read_retries": "retries of a failed read (writes are never retried)",
    "redcap.chunk_size": "rows per import request",
    "redcap.max_answer_mb": "a larger answer fails closed",
    "redcap.read_chunk_records": "records per export request (table reads)",
    "redcap.max_requests_per_minute": "in any 60 s, per command (REDCap bans at 600)",
    "redcap.urls": "optional: an API address per database, instead of url",
    **{f"redcap.urls.{db}": f"the {db} database's API address" for db in DATABASES},
    "redcap.tokens": "references only: env:NAME or file:PATH (a file of mode 0600)",
    "redcap.tokens.projects": "the Projects database's token",
    "redcap.tokens.incoming": "the Incoming database's token",
    "redcap.tokens.autoid": "the AutoID database's token",
    "redcap.tokens.transfers": "default: the incoming token",
    "run": "the job",
    "run.lookback_days": "days of Incoming each run reconciles",
    "run.hash": "sha512 (the legacy scheme) or hmac-sha256, which needs hash_key",
    "run.hash_key": "the HMAC secret, by reference",
    "run.lock_file": "one run at a time; relative paths are relative to this file",
    "run.reports_dir": "run folders, report.html, summary.json, index.html",
    "run.capacity_warn_at": "report a naming pattern from this fraction used",
    "run.server_timezone": "REDCap's clock; default: this machine's",
    "run.external_generator": "a site's own ID generator (argv); default: the built-in one",
    "run.cell_timeout_s": "a notebook cell running longer fails the run",
    "run.external_generator_env": "variables passed to it besides PATH, LANG, LC_*, HOME, TMPDIR",
    "run.previous_hash": "a rotation: the old scheme, still looked up",
    "run.previous_hash_key": "and its key, by reference",
    "run.max_catchup_days": "how far back a run reaches after runs stopped",
    "run.forecast_weeks": "how far back the exhaustion forecast looks",
    "run.forecast_warn_days": "a forecast date this close is an anomaly",
    "email": "optional: mail each run's summary (autoid run --email), docs/operations.md",
    "email.smtp_host": "the SMTP server",
    "email.smtp_port": "default: 587 for starttls, 465 for tls, 25 for none",
    "email.security": "starttls, tls or none",
    "email.username": "SMTP login, if the server wants one",
    "email.password": "by reference: env:NAME or file:PATH",
    "email.sender": "the From address",
    "email.recipients": "who gets the mail",
    "email.send": "always, on-change or on-attention",
    "email.attach_report": "attach report.html",
    "email.report_url_base": "link to the report under this URL instead",
    "email.timeout_s": "per SMTP step",
    "email.subject_prefix": "the subject's first word",
    "email.attach_max_bytes": "a larger report is linked, not attached",
    "email.tls_ca_file": "an extra CA bundle for a site-internal SMTP certificate",
    "email.repeat_failure_hours": "remind of a failure that persists at most this often",
    "monitoring": "optional: metrics and pings, docs/operations.md",
    "monitoring.textfile": "node_exporter textfile collector file; default: none",
    "monitoring.ping_url": "Healthchecks-style URL (or env:/file: reference); default: none",
    "monitoring.ping_timeout_s": "each ping waits at most this long",
    "lease": "optional: the REDCap lease between installations, docs/run.md",
    "lease.enabled": "false: no lease (one installation only)",
    "lease.expiry_s": "a ticket not given back is dead after this",
    "lease.wait_s": "an earlier ticket waits this long for a later one",
    "lease.clock_skew_s": "how far apart the machines' clocks may be",
    "lease.installation": "shown to other installations; default: the host name",
    "lease.delete": "may the AutoID token delete records? default: find out",
    "cache": "optional: the local copy of AutoID and Projects, docs/run.md",
    "cache.enabled": "false: read AutoID and Projects whole every run",
    "cache.dir": "default: autoid-state beside reports_dir",
    "cache.full_read_hours": "a whole read at least this often",
    "cache.overlap_minutes": "changes are read from the last read's start minus this",
}


def defaults() -> dict[str, Any]:
    """``table.key`` → the default the settings classes hold (keys without one are left out)."""
    found: dict[str, Any] = {}
    for table, cls in (
        ("redcap", RedcapSettings), ("run", RunSettings), ("cache", CacheSettings),
        ("lease", LeaseSettings), ("monitoring", MonitoringSettings), ("email", EmailSettings),
    ):  # fmt: skip
        for field in fields(cls):
            if field.default is not MISSING and field.default not in (None, "", ()):
                found[f"{table}.{field.name}"] = field.default
    found["redcap.max_answer_mb"] = found.pop("redcap.max_answer_bytes") // 10**6
    found.pop("cache.dir")  # beside reports_dir, not beside this file: an example instead
    return found


def template(version: str = "") -> str:
    """The whole commented ``autoid.toml``."""
    shown = defaults()
    lines = [
        f"# autoid.toml — written by `autoid init`{f' (autoid-kit {version})' if version else ''}.",
        "# Every key the kit reads is here. A line '# key = value' shows the key's default (or an",
        "# example where there is none): remove the '# ' to change it. Relative paths are",
        "# relative to this file. Secrets are never written here, only where to find them:",
        "# env:NAME (an environment variable) or file:PATH (a file of mode 0600).",
        "# Check it with: autoid check --config <this file>",
    ]
    for table in TABLES:
        off = "# " if table in OPTIONAL_TABLES else ""
        lines += ["", f"{off}[{table}]  # {HELP[table]}"]
        for key in KNOWN_KEYS[table]:
            if table == "redcap" and key in ("urls", "tokens"):
                continue  # sub-tables, written as their own
            name = f"{table}.{key}"
            if name in REQUIRED:
                setting = f"{off}{key} = {_toml(REQUIRED[name])}"
            else:
                setting = f"# {key} = {_toml(shown[name] if name in shown else EXAMPLES[name])}"
            if len(setting) + len(HELP[name]) + 4 <= LINE:
                lines.append(f"{setting}  # {HELP[name]}")
            else:  # the words on a line of their own, above
                lines += [f"# ({key}: {HELP[name]})", setting]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    """A TOML value for the simple types the settings hold."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    return json.dumps(value, ensure_ascii=False)  # strings and lists: JSON's are TOML's
