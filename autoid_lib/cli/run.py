"""``autoid run``: one recorded run — executed notebook, HTML report, summary.json, index.

Exit statuses (``autoid_lib.status.ExitStatus``, documented in docs/report.md): 0 the run
succeeded (its report may still ask for attention), 1 the run failed (the message names the
step; the report shows the error), 2 bad configuration or command line (nothing was done),
3 another run holds the lock (nothing was done, no report folder) or the REDCap lease (a run
folder whose status is ``yielded``: nothing written, not a failure).

``--email`` checks the config's ``[email]`` table before anything else (a missing table or a bad
setting is exit 2) and mails the run's summary once summary.json is written
(``autoid_lib.mail.send.notify``); the mail's outcome is summary.json's ``email`` entry and never
changes the exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from autoid_lib.cli import options
from autoid_lib.config import MAX_LOOKBACK_DAYS
from autoid_lib.safe_text import printable
from autoid_lib.status import ExitStatus

if TYPE_CHECKING:
    from autoid_lib.records.notebook_run import RunRecord


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.config(parser)
    options.dry_run(parser, "plan and report, write nothing to REDCap")
    parser.add_argument(
        "--lookback-days",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="days of Incoming to reconcile (default: the config's [run] lookback_days)",
    )
    parser.add_argument(
        "--full-read",
        action="store_true",
        help="read the AutoID and Projects tables whole, not only what changed since the "
        "local copy ([cache]); the copy is rebuilt from it",
    )
    options.reports_dir(
        parser, "reports folder for this run (default: the config's [run] reports_dir)"
    )
    parser.add_argument(
        "--projects",
        type=_project_list,
        default=(),
        metavar="A,B",
        help="only these auto-ID projects (comma-separated names; default: all)",
    )
    options.detail(
        parser, "full adds study-level rows and study UIDs to the report (default: summary)"
    )
    parser.add_argument(
        "--now",
        type=_iso_time,
        metavar="ISO",
        help="the run's clock, for reproducible windows (e.g. 2026-11-28T06:30:00Z)",
    )
    options.email(parser, "run")
    options.quiet(parser, "on stderr only the outcome line, warnings (REDCap retries) and errors")
    options.progress(parser)


def run(args: argparse.Namespace) -> int:
    from autoid_lib.config import load_settings
    from autoid_lib.errors import ConfigError, LockHeld
    from autoid_lib.records.recorded_run import record_run

    configure_logging(args.quiet)
    try:
        settings = load_settings(args.config)
        record = record_run(
            settings,
            email=args.email,
            dry_run=args.dry_run,
            full_read=args.full_read,
            lookback_days=args.lookback_days,
            projects=args.projects,
            detail=args.detail,
            now=args.now,
            reports_dir=args.reports_dir,
            progress=options.show_progress(args),
        )
    except ConfigError as error:
        say(f"autoid run: {error}")
        return ExitStatus.CONFIG
    except LockHeld as error:
        say(f"autoid run: {error}")
        return ExitStatus.LOCKED
    except OSError as error:  # the lock file or the report folder cannot be written
        say(f"autoid run: cannot record the run: {error.strerror}: {error.filename}")
        return ExitStatus.FAILED
    return print_outcome("autoid run", record, quiet=args.quiet)


def print_outcome(command: str, record: RunRecord, *, quiet: bool) -> ExitStatus:
    """The report path on stdout (the one line scripts read), how it ended on stderr: one
    time-stamped outcome line, also with ``--quiet`` (a cron log's one line per run)."""
    say(f"{command}: {record.message} (report: {record.report})")
    print(record.report)
    return record.exit_status


def say(text: str) -> None:
    """One line on stderr, time-stamped like the log lines, control characters escaped."""
    print(f"{_now_stamp()} {printable(text)}", file=sys.stderr, flush=True)


TIME_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def _now_stamp() -> str:
    return datetime.now().astimezone().strftime(TIME_FORMAT)


def configure_logging(quiet: bool) -> None:
    """The kit's lines on stderr, each time-stamped; papermill's own only when they warn.

    ``--quiet`` leaves warnings (a REDCap retry, as it happens) and errors.
    """
    from autoid_lib.cli.progress_line import ProgressLineHandler
    from autoid_lib.safe_text import PrintableFormatter

    handler = ProgressLineHandler(sys.stderr, terminal=sys.stderr.isatty())
    handler.setFormatter(PrintableFormatter("%(asctime)s %(name)s: %(message)s", TIME_FORMAT))
    for name, level in (("autoid", logging.WARNING if quiet else logging.INFO),
                        ("papermill", logging.WARNING)):  # fmt: skip
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (the config's value) or more")
    if value > MAX_LOOKBACK_DAYS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_LOOKBACK_DAYS} (ten years)")
    return value


def _project_list(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _iso_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
