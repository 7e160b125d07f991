"""The ``autoid`` command: one subcommand per job, each a thin wrapper over the library.

Subcommand modules expose ``add_arguments(parser)`` and ``run(args) -> int``; only the module
of the command being run is imported, so ``autoid gen-id`` does not pay for pandas or PyCap.
Known errors become one-line messages and a documented exit status (``status.ExitStatus``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": (
        "autoid_lib.cli.init",
        "write a commented autoid.toml for a new site (and, with --deploy, the deploy files)",
    ),
    "run": ("autoid_lib.cli.run", "run the job once as a recorded notebook: report, summary.json"),
    "check": ("autoid_lib.check", "validate the config, reach each database, list projects"),
    "audit": ("autoid_lib.cli.audit", "check all Incoming/AutoID history; write an audit report"),
    "repair": (
        "autoid_lib.cli.repair",
        "repair what the legacy job left in AutoID (dry by default; --apply, --resend)",
    ),
    "demo": (
        "autoid_lib.cli.demo",
        "run the job on a seeded local sandbox and print the report path",
    ),
    "sandbox": ("autoid_lib.sandbox.cli", "serve a local REDCap-compatible sandbox"),
    "gen-id": ("autoid_lib.cli.gen_id", "generate IDs from a pattern (drop-in for gen-id.py)"),
    "prune": ("autoid_lib.cli.prune", "remove run reports older than N days, rebuild index.html"),
    "explore": (
        "autoid_lib.cli.explore",
        "open a copy of the explore notebook in JupyterLab (ask REDCap questions)",
    ),
}


def installed_version() -> str:
    """The installed distribution's version (what ``pip show autoid-kit`` says)."""
    try:
        return metadata.version("autoid-kit")
    except metadata.PackageNotFoundError:  # imported from a checkout that was never installed
        return "unknown (not installed)"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or one whose only fully built subcommand is ``only`` ("" for none)."""
    parser = argparse.ArgumentParser(
        prog="autoid", description="The autoid command: one subcommand per job."
    )
    parser.add_argument("--version", action="version", version=f"autoid {installed_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = importlib.import_module(module_name)
            module.add_arguments(command)
            command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from autoid_lib.wall_clock import mark_command_start

    mark_command_start()  # the whole command's wall time, shown next to the run's own
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    # no command given (--help, --version) or an unknown one: no command module is needed
    args = build_parser(only=chosen if chosen in COMMANDS else "").parse_args(argv)
    return int(args._run(args))


if __name__ == "__main__":
    sys.exit(main())
