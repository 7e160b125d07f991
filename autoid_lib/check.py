"""``autoid check``: is the configuration usable, and what would the run work on?

Validates the config, reaches each database with its own token, and lists the auto-ID projects
with their patterns and capacity, so an operator can fix a setup before the first run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime

from autoid_lib.cli import ExitStatus
from autoid_lib.config import DATABASES, Settings, load_settings
from autoid_lib.errors import AutoIdError, ConfigError
from autoid_lib.plan import PlanSettings, plan
from autoid_lib.redcap import RedcapGateway
from autoid_lib.run import server_time
from autoid_lib.snapshot import Snapshot


@dataclass
class CheckReport:
    databases: dict[str, str] = field(default_factory=dict)  # database -> "ok: title" / error
    projects: list[str] = field(default_factory=list)  # one line per auto-ID project
    ok: bool = True

    def lines(self) -> list[str]:
        out = [f"REDCap {db}: {state}" for db, state in self.databases.items()]
        out.append(f"auto-ID projects: {len(self.projects)}")
        out.extend(f"  {line}" for line in self.projects)
        return out


def check_setup(settings: Settings) -> CheckReport:
    """Reach every database, then describe the auto-ID projects (reads only)."""
    report = CheckReport()
    gateway = RedcapGateway(settings.redcap)
    for database in DATABASES:
        try:
            report.databases[database] = f"ok ({gateway.project_title(database)!r})"
        except AutoIdError as error:
            report.databases[database] = f"FAILED: {error}"
            report.ok = False
    if not report.ok:
        return report
    try:
        records = gateway.project_records()
        rows = gateway.autoid_rows()
    except AutoIdError as error:
        report.databases["projects/autoid"] = f"FAILED: {error}"
        report.ok = False
        return report
    moment = server_time(datetime.now(UTC), settings.run.server_timezone)
    planned = plan(
        Snapshot(tuple(records), (), tuple(rows), moment, moment),
        PlanSettings(settings.run.hasher(), "", settings.run.capacity_warn_at),
    )
    for project in planned.projects:
        state = project.capacity.description if project.capacity else project.pattern_error
        report.projects.append(
            f"{project.name}: AE title {project.ae_title}, pattern {project.pattern} — {state}"
        )
    for anomaly in planned.anomalies:
        if anomaly.kind in {"ambiguous_ae_title", "project_misconfigured"}:
            report.projects.append(f"! {anomaly.message}")
    return report


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="the kit's TOML config file")


def run(args) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"autoid check: {error}", file=sys.stderr)
        return ExitStatus.CONFIG
    report = check_setup(settings)
    print(f"config: {settings.path}")
    print("\n".join(report.lines()))
    return ExitStatus.OK if report.ok else ExitStatus.FAILED
