"""``autoid audit``: the full-history audit (``audit.job.execute_audit``) from the command line.

``--email`` works as for ``autoid run`` (``records.recorded_run.email_hook``): the config's
``[email]`` table is checked before anything runs (missing or bad: exit 2), and the audit's
summary is mailed once summary.json is written; the mail's outcome is summary.json's ``email``
entry and never changes the exit status. ``on-change`` compares with the previous audit.

Exit statuses: 0 the audit ran (its report may list findings), 1 it failed (REDCap or notebook
error; the report says where), 2 bad configuration or command line.
"""

from __future__ import annotations

import argparse

from autoid_lib.cli import options
from autoid_lib.status import ExitStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.config(parser)
    options.reports_dir(parser)
    options.detail(
        parser, "full lists every row of each finding, with study UIDs (default: summary)"
    )
    options.email(parser, "audit")
    options.quiet(parser)
    options.progress(parser)


def run(args: argparse.Namespace) -> int:
    from autoid_lib.audit.job import execute_audit
    from autoid_lib.cli.run import configure_logging, print_outcome, say
    from autoid_lib.config import load_settings
    from autoid_lib.errors import ConfigError
    from autoid_lib.records.recorded_run import command_monitor, email_hook

    configure_logging(args.quiet)
    try:
        settings = load_settings(args.config)
        notify = email_hook(settings) if args.email else None
        monitor = command_monitor(settings, args.reports_dir, pings=False)  # metrics only
        record = execute_audit(
            settings,
            output_dir=args.reports_dir,
            detail=args.detail,
            progress=options.show_progress(args),
            notify=notify,
        )
    except ConfigError as error:
        say(f"autoid audit: {error}")
        return ExitStatus.CONFIG
    monitor.finished(record.exit_status == ExitStatus.OK)
    return print_outcome("autoid audit", record, quiet=args.quiet)
