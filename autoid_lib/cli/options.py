"""Options several commands share, defined once: the same name, metavar and words everywhere.

The reports folder is ``--reports-dir`` in every command (``args.reports_dir``); ``--output-dir``,
its older spelling in ``autoid run`` and ``autoid audit``, is still accepted. Help texts are plain
words: they are printed by ``--help``, which shows no markup.
"""

from __future__ import annotations

import argparse

from autoid_lib.vocab import Detail

REPORTS_DIR_FLAGS = ("--reports-dir", "--output-dir")


def config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the kit's TOML config")


def reports_dir(
    parser: argparse.ArgumentParser,
    help: str = "reports folder (default: the config's [run] reports_dir)",
    *,
    required: bool = False,
) -> None:
    parser.add_argument(
        *REPORTS_DIR_FLAGS, dest="reports_dir", required=required, metavar="DIR", help=help
    )


def detail(parser: argparse.ArgumentParser, help: str, default: Detail = Detail.SUMMARY) -> None:
    parser.add_argument(
        "--detail", choices=[d.value for d in Detail], default=default.value, help=help
    )


def email(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--email",
        action="store_true",
        help=f"mail the {what}'s summary as the config's [email] table says (docs/operations.md)",
    )


def dry_run(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--dry-run", action="store_true", help=help)


def quiet(parser: argparse.ArgumentParser, help: str = "no progress on stderr") -> None:
    parser.add_argument("--quiet", action="store_true", help=help)


def progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action="store_true",
        help="show the notebook's cell progress bar (default: only when stderr is a terminal)",
    )


def show_progress(args: argparse.Namespace) -> bool:
    """The progress bar: asked for, or stderr is a terminal; never in a cron log or --quiet."""
    import sys

    if getattr(args, "quiet", False):
        return False
    return bool(getattr(args, "progress", False)) or sys.stderr.isatty()
