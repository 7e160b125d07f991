"""``autoid check``: is the configuration usable, and what would the run work on?

Validates the config, reaches each database with its own token (and says which is still in
Development status), probes the site's REDCap for what the kit needs — its version, the AutoID
token's delete right (a harmless delete of a name that cannot exist), REDCap's clock (measured
with the kit's probe record against ``[run] server_timezone``) — and lists the auto-ID projects
with their patterns, capacity and exhaustion forecast, so an operator can fix a setup before
the first run. It writes only the probe record (deleted again when the token may) and the
clock's confirmation in the local copy.
"""

from __future__ import annotations

import smtplib
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from autoid_lib.config import DATABASES, Settings, load_settings
from autoid_lib.errors import AutoIdError, ConfigError
from autoid_lib.forecast import Forecast, project_forecasts, seen_requests
from autoid_lib.hash_scheme import describe as describe_hash_scheme
from autoid_lib.lock import check_lock_file
from autoid_lib.plan import PlanSettings, plan
from autoid_lib.private_files import private_folder
from autoid_lib.records.history import recorded_capacity
from autoid_lib.records.last_success import read_last_success
from autoid_lib.redcap import clock as redcap_clock
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.redcap.lease import installations_seen
from autoid_lib.redcap.table_cache import LocalCopy
from autoid_lib.run import server_time
from autoid_lib.safe_text import printable
from autoid_lib.server_clock import (
    CLOCK_RECORD,
    Confirmation,
    confirmation_key,
    judge,
    zone_offset,
)
from autoid_lib.snapshot import Snapshot
from autoid_lib.status import ExitStatus
from autoid_lib.window import run_window


@dataclass
class CheckReport:
    checks: dict[str, str] = field(default_factory=dict)  # "REDCap autoid" -> "ok (...)" / error
    projects: list[str] = field(default_factory=list)  # one line per auto-ID project
    forecasts: dict[str, str] = field(default_factory=dict)  # project line -> its forecast
    warnings: list[str] = field(default_factory=list)  # project setups a run cannot serve
    leases: list[str] = field(default_factory=list)  # installations seen in the lease records
    ok: bool = True

    def lines(self) -> list[str]:
        out = [f"{name}: {state}" for name, state in self.checks.items()]
        out.append(f"auto-ID projects: {len(self.projects)}")
        for line in self.projects:
            out.append(f"  {line}")
            if line in self.forecasts:
                out.append(f"    {self.forecasts[line]}")
        out.extend(f"  ! {line}" for line in self.warnings)
        out.append(f"installations in the REDCap lease records: {len(self.leases)}")
        out.extend(f"  {line}" for line in self.leases)
        return out


def check_setup(settings: Settings) -> CheckReport:
    """Reach every database, then describe the auto-ID projects (reads only)."""
    report = CheckReport()
    folders = [("reports", settings.run.reports_dir)]
    if settings.cache.enabled:
        folders.append(("local copy", settings.cache.dir))
    for what, folder in folders:
        writable = _writable(folder)
        report.checks[f"{what} folder"] = (
            f"ok ({folder})" if writable else (f"FAILED: {folder} cannot be created or written")
        )
        report.ok &= writable
    try:  # the run's own check of its lock file (lock.run_lock), not a look-alike
        check_lock_file(settings.run.lock_file)
        report.checks["lock file"] = f"ok ({settings.run.lock_file})"
    except (ConfigError, OSError) as error:
        report.checks["lock file"] = f"FAILED: {error}"
        report.ok = False
    _check_outputs(settings, report)
    report.checks["local copy"] = (
        LocalCopy(settings.cache.dir).describe()
        if settings.cache.enabled
        else "off ([cache] enabled = false): every run reads AutoID and Projects whole"
    )
    report.warnings.extend(security_warnings(settings))
    gateway = RedcapGateway(settings.redcap)
    for database in DATABASES:
        try:
            info = gateway.project_info(database)
        except AutoIdError as error:
            report.checks[f"REDCap {database}"] = f"FAILED: {error}"
            report.ok = False
            continue
        title = str(info.get("project_title", ""))
        report.checks[f"REDCap {database}"] = f"ok ({title!r}, {_status(info)})"
        if not _in_production(info):
            report.warnings.append(
                f"REDCap {database} is in Development status: REDCap refuses imports that would "
                "make it hold more than 50 records (the kit adds AutoID records for every new "
                "patient); move the project to Production"
            )
    if not report.ok:
        return report
    _probe_site(settings, gateway, report)
    if not report.ok:
        return report
    try:
        records = gateway.project_records()
        rows, lease_rows = gateway.autoid_table()
    except AutoIdError as error:
        report.checks["REDCap projects/autoid"] = f"FAILED: {error}"
        report.ok = False
        return report
    hasher = settings.run.hasher()
    scheme = describe_hash_scheme(rows, hasher)
    report.checks["hash scheme"] = scheme
    if scheme.startswith("FAILED"):
        report.ok = False
        return report
    moment = server_time(datetime.now(UTC), settings.run.server_timezone)
    planned = plan(
        Snapshot(tuple(records), (), tuple(rows), moment, moment),
        PlanSettings(hasher, "", settings.run.capacity_warn_at),
    )
    try:
        forecasts = _forecasts(settings, gateway, records, rows, moment)
    except AutoIdError as error:
        report.checks["REDCap incoming (forecast)"] = f"FAILED: {error}"
        report.ok = False
        forecasts = {}
    for project in planned.projects:
        state = project.capacity.description if project.capacity else project.pattern_error
        pattern = f"pattern {project.pattern}"
        if not project.pattern.strip():  # not "empty pattern at position 0"
            pattern, state = "no pattern", "project_patient_naming is empty: no ID can be made"
        line = f"{project.name}: AE title {project.ae_title}, {pattern} — {state}"
        report.projects.append(line)
        if project.name in forecasts:
            report.forecasts[line] = forecasts[project.name].describe()
    for anomaly in planned.anomalies:
        if anomaly.kind in {"ambiguous_ae_title", "project_misconfigured", "autoid_name_variant"}:
            named = anomaly.project and anomaly.project not in anomaly.message
            report.warnings.append(
                f"{anomaly.project}: {anomaly.message}" if named else anomaly.message
            )
    report.leases = installations_seen(lease_rows, datetime.now(UTC))
    return report


def _status(info: dict) -> str:
    return "production" if _in_production(info) else "development: at most 50 records"


def _in_production(info: dict) -> bool:
    return str(info.get("in_production", "")).strip() == "1"


def _probe_site(settings: Settings, gateway: RedcapGateway, report: CheckReport) -> None:
    """REDCap's version, the AutoID token's delete right (asked without harm) and REDCap's
    clock (measured with the kit's probe record; docs/run.md, "REDCap's clock")."""
    try:
        report.checks["REDCap version"] = gateway.redcap_version("autoid")
        deletes = redcap_clock.may_delete(gateway)
    except AutoIdError as error:
        report.checks["REDCap AutoID rights"] = f"FAILED: {error}"
        report.ok = False
        return
    report.checks["AutoID token may delete records"] = _delete_right(settings, deletes, report)
    try:
        measured = redcap_clock.probe(gateway, may_delete=deletes)
    except AutoIdError as error:
        report.checks["REDCap's clock"] = f"FAILED: {error}"
        report.ok = False
        return
    now = datetime.now(UTC)
    zone = settings.run.server_timezone
    verdict = judge(measured, zone, now, settings.cache.overlap_minutes)
    kept = "" if deletes else f" (probe record {CLOCK_RECORD} kept: no delete right)"
    if verdict.within:
        report.checks["REDCap's clock"] = f"ok: {verdict.message}{kept}"
        if verdict.ahead:
            report.warnings.append(f"REDCap's clock: {verdict.message}")
    else:
        report.checks["REDCap's clock"] = (
            f"FAILED: {verdict.message}{kept}; until it is fixed every run reads AutoID and "
            "Projects whole"
        )
        report.ok = False
    _keep_confirmation(settings, zone, now, verdict.within)


def _delete_right(settings: Settings, deletes: bool, report: CheckReport) -> str:
    """The delete right's line, and a warning when ``[lease] delete`` says otherwise."""
    setting = settings.lease.get("delete")
    if settings.lease.get("enabled") is False:  # no tickets: only check's probe record
        return "yes" if deletes else "no (check's probe record is kept and rewritten)"
    if deletes:
        if setting is False:
            report.warnings.append(
                "[lease] delete = false, but the AutoID token may delete records: remove the "
                "setting so that lease tickets are deleted after each run"
            )
        return "yes (lease tickets are deleted after each run)"
    if setting is not False:
        report.warnings.append(
            "the AutoID token lacks REDCap's 'Delete Records' right (with 'API Import/Update'): "
            "set [lease] delete = false, or grant the right; lease tickets are then kept and "
            "rewritten"
        )
    return "no ('Delete Records' right missing: lease tickets are kept and rewritten)"


def _keep_confirmation(settings: Settings, zone: str, now: datetime, within: bool) -> None:
    """A clock ``check`` confirmed lets runs that write nothing trust the local copy."""
    if not settings.cache.enabled:
        return
    copy = LocalCopy(settings.cache.dir)
    key = confirmation_key(settings.redcap.urls["autoid"], zone)
    try:
        if within:
            copy.save_clock(key, Confirmation(now, zone_offset(zone, now)))
        elif copy.path.exists():
            copy.save_clock(key, None)
    except Exception:  # a cache: the next run then reads whole, nothing worse
        return


def _forecasts(
    settings: Settings, gateway: RedcapGateway, records, rows, moment: datetime
) -> dict[str, Forecast]:
    """The forecasts a run now would make (docs/run.md, "Forecast"), from the same data.

    The run's own window (it reaches back over an outage to the last successful run), one
    Incoming read, and the studies waiting there planned as the run would plan them (pure:
    nothing is written), so that IDs a catch-up is about to make count as the run counts
    them, both in the free IDs and at their studies' arrival; then the recorded runs.
    """
    run = settings.run
    window = run_window(
        moment, run.lookback_days, read_last_success(run.reports_dir), run.max_catchup_days
    )
    studies = gateway.incoming_studies(window.begin, None)  # open-ended, as the run reads
    planned = plan(
        Snapshot(tuple(records), tuple(studies), tuple(rows), window.begin, moment),
        PlanSettings(run.hasher(), f"{moment:%Y-%m-%d %H:%M}", run.capacity_warn_at),
    )
    utc_now = datetime.now(UTC)
    window_days = 7.0 * run.forecast_weeks
    return project_forecasts(
        planned.projects,
        seen_requests(studies, planned.transfers),
        recorded_capacity(run.reports_dir, utc_now, window_days),
        now=utc_now,
        window_begin=moment - timedelta(days=run.lookback_days),
        window_end=moment,
        window_days=window_days,
        reach_days=run.max_catchup_days,
        since=utc_now - (moment - window.begin) if window.extended else None,
    )


def security_warnings(settings: Settings) -> list[str]:
    """Settings that work but weaken what the kit protects; said loudly, never refused."""
    found = []
    if settings.run.hash == "sha512":
        found.append(
            "hash = 'sha512' can be reversed by hashing every possible national ID; new "
            "installations should use hash = 'hmac-sha256' with a hash_key"
        )
    if settings.redcap.verify is False:
        found.append("[redcap] verify = false: TLS certificates are NOT checked; tokens can leak")
    email = settings.email or {}
    if email.get("password") and email.get("security", "starttls") == "none":
        found.append("[email] sends its password without TLS (security = 'none')")
    return found


def _check_outputs(settings: Settings, report: CheckReport) -> None:
    """Where a run sends what it has to say, tried as the run would use it: the mail server
    (connect, TLS, login; nothing sent), the metrics file's folder. The ping is not called:
    it would tell the monitor a run started."""
    from autoid_lib.mail.send import describe_failure, probe_server
    from autoid_lib.mail.settings import email_settings_from_config
    from autoid_lib.monitoring import monitoring_settings

    if settings.email:
        mail = email_settings_from_config(settings.email)
        try:
            report.checks["mail server"] = f"ok ({probe_server(mail)}; nothing sent)"
        except (smtplib.SMTPException, OSError) as error:
            report.checks["mail server"] = f"FAILED: {describe_failure(error, mail)}"
            report.ok = False
    base = settings.path.parent if settings.path else Path.cwd()
    monitoring = monitoring_settings(settings.monitoring, base)
    if monitoring.textfile is not None:
        folder = monitoring.textfile.parent  # node_exporter's: never created or chmod-ed here
        writable = folder.is_dir() and _can_create_in(folder)
        state = "does not exist" if not folder.is_dir() else "cannot be written"
        report.checks["metrics folder"] = (
            f"ok ({folder})" if writable else f"FAILED: {folder} {state} (the run writes it there)"
        )
        report.ok &= writable
    if monitoring.ping_url is not None:
        report.checks["ping"] = (
            f"configured ({monitoring.ping_url.source}); not called by check, which would "
            "tell the monitor a run started"
        )


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in an existing ``folder``, leaving it as it is."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _writable(folder: Path) -> bool:
    """Whether the run could create files in ``folder`` (creating the folder if needed)."""
    try:
        private_folder(folder)
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def load_checked(path: str | Path) -> Settings:
    """The config with every table validated, ``[email]`` included (a run checks ``[email]``
    only with ``--email``; ``autoid check`` checks it whenever it is there)."""
    from autoid_lib.mail.settings import email_settings_from_config

    settings = load_settings(path)
    if settings.email:
        email_settings_from_config(settings.email)
    return settings


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="the kit's TOML config file")


def run(args) -> int:
    try:
        settings = load_checked(args.config)
    except ConfigError as error:
        print(f"autoid check: {error}", file=sys.stderr)
        return ExitStatus.CONFIG
    report = check_setup(settings)
    print(f"config: {settings.path}")
    print("\n".join(printable(line) for line in report.lines()))  # names come from REDCap
    return ExitStatus.OK if report.ok else ExitStatus.FAILED
