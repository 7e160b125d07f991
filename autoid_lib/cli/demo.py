"""``autoid demo``: one recorded live run against the seeded local sandbox; prints the report path.

Starts ``Sandbox(seed="demo")`` on a free loopback port, writes its token files and a kit config
into a temporary folder, runs the job exactly as ``autoid run`` does (``execute_run``) with the
reports in the repository's ``reports/`` (or ``--reports-dir``), then stops the sandbox and
removes the temporary folder. The demo data is fictional. Exit statuses as ``autoid run``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from autoid_lib.cli import options
from autoid_lib.records.folders import SUMMARY_FILE
from autoid_lib.status import ExitStatus
from autoid_lib.vocab import Detail

_REPO = Path(__file__).resolve().parents[2]


def default_reports_dir() -> Path:
    """The checkout's ``reports/`` when running from one, else ``./reports``."""
    if (_REPO / "autoid_lib").is_dir() and (_REPO / "pyproject.toml").is_file():
        return _REPO / "reports"
    return Path.cwd() / "reports"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.reports_dir(
        parser, "where the run folder goes (default: the checkout's reports/, else ./reports)"
    )
    options.detail(parser, "report detail (default: full; the demo data is fictional)", Detail.FULL)
    options.dry_run(parser, "plan and report only")
    options.quiet(parser)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from autoid_lib.cli.run import configure_logging
    from autoid_lib.config import load_settings
    from autoid_lib.errors import ConfigError, LockHeld
    from autoid_lib.records.notebook_run import execute_run
    from autoid_lib.sandbox import Sandbox

    configure_logging(args.quiet)
    reports_dir = (Path(args.reports_dir) if args.reports_dir else default_reports_dir()).resolve()
    with (
        tempfile.TemporaryDirectory(prefix="autoid-demo-") as folder,
        Sandbox(seed="demo", host="127.0.0.1", port=0) as sandbox,
    ):
        if not args.quiet:
            print(f"autoid demo: sandbox with the demo seed at {sandbox.url}", file=sys.stderr)
        try:
            settings = load_settings(sandbox.write_kit_files(folder, reports_dir=reports_dir))
            record = execute_run(
                settings, dry_run=args.dry_run, detail=args.detail, progress=not args.quiet
            )
        except ConfigError as error:
            print(f"autoid demo: {error}", file=sys.stderr)
            return ExitStatus.CONFIG
        except LockHeld as error:
            print(f"autoid demo: {error}", file=sys.stderr)
            return ExitStatus.LOCKED
    print(f"autoid demo: {record.message}", file=sys.stderr)
    print(f"autoid demo: summary {record.path / SUMMARY_FILE}", file=sys.stderr)
    print(record.report)
    return record.exit_status
