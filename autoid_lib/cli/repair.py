"""``autoid repair``: repair what the legacy job left in AutoID (``repair.job.repair``).

Dry by default: reads all history, plans, and records ``repair.html``, ``worksheet.csv`` and
``summary.json`` in ``reports/<time>-repair/``. ``--apply`` writes (retires rows, creates rows);
``--resend`` also requests every study sent under a wrong ID again under the right one.

Exit statuses: 0 the repair ran (its report may ask for attention), 1 it failed (the report and
stderr name the step), 2 bad configuration or command line, 3 a run holds the lock.
"""

from __future__ import annotations

import argparse
import sys

from autoid_lib.cli import options
from autoid_lib.status import ExitStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.config(parser)
    parser.add_argument(
        "--apply", action="store_true", help="write the repair (default: a dry run, no writes)"
    )
    parser.add_argument(
        "--resend",
        action="store_true",
        help="with --apply: request every study sent under a wrong ID again under the right one",
    )
    options.reports_dir(parser)
    options.quiet(parser)


def run(args: argparse.Namespace) -> int:
    from autoid_lib.cli.run import configure_logging
    from autoid_lib.config import load_settings
    from autoid_lib.errors import ConfigError, LockHeld
    from autoid_lib.repair.job import REPORT_FILE, repair

    configure_logging(args.quiet)
    if args.resend and not args.apply:
        print("autoid repair: --resend needs --apply", file=sys.stderr)
        return ExitStatus.CONFIG
    try:
        settings = load_settings(args.config)
        outcome = repair(
            settings, apply=args.apply, resend=args.resend, reports_dir=args.reports_dir
        )
    except ConfigError as error:
        print(f"autoid repair: {error}", file=sys.stderr)
        return ExitStatus.CONFIG
    except LockHeld as error:
        print(f"autoid repair: {error}", file=sys.stderr)
        return ExitStatus.LOCKED
    except OSError as error:
        print(f"autoid repair: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return ExitStatus.FAILED
    summary = outcome.summary
    if not args.quiet:
        print(f"autoid repair: {summary['mode']}, {summary['status']}: {summary['headline']}")
    if outcome.ending.error:
        print(f"autoid repair: failed at {outcome.ending.error}", file=sys.stderr)
    print(outcome.folder / REPORT_FILE)
    return ExitStatus.FAILED if summary["status"] == "failed" else ExitStatus.OK
