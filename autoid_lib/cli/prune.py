"""``autoid prune``: remove run reports older than N days and rebuild ``index.html``."""

from __future__ import annotations

import argparse
import sys

from autoid_lib.cli import options


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return days


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.reports_dir(parser, "the reports folder of autoid run", required=True)
    parser.add_argument(
        "--keep-days",
        required=True,
        type=_days,
        metavar="N",
        help="keep runs that started in the last N days (the newest run of each mode is kept)",
    )
    options.dry_run(parser, "list what would be removed, remove nothing")


def run(args: argparse.Namespace) -> int:
    import logging
    from datetime import UTC, datetime

    from autoid_lib.errors import AutoIdError, ConfigError
    from autoid_lib.records.prune import prune_reports
    from autoid_lib.status import ExitStatus

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        removed = prune_reports(
            args.reports_dir, args.keep_days, datetime.now(UTC), dry_run=args.dry_run
        )
    except ConfigError as error:
        print(f"autoid prune: {error}", file=sys.stderr)
        return ExitStatus.CONFIG
    except AutoIdError as error:
        print(f"autoid prune: {error}", file=sys.stderr)
        return ExitStatus.FAILED
    verb = "would remove" if args.dry_run else "removed"
    for path in removed:
        print(f"{verb} {path}")
    print(f"{verb} {len(removed)} run folder(s) older than {args.keep_days} days")
    return ExitStatus.OK
