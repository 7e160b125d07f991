"""``autoid init [DIR]``: a new site's commented ``autoid.toml`` and, with ``--deploy DIR``, the
deploy files, from the installed package.

``DIR/autoid.toml`` lists every key the kit reads with its default and what it is for
(``config_template``); the tokens are ``env:AUTOID_TOKEN_…`` references, never values.
``--deploy DIR`` writes the systemd units and timers, the cron lines, the logrotate file and
the Prometheus rules (``deploy/`` in the checkout, shipped as package data). Nothing is
overwritten: if any file to write exists, nothing is written (exit 2). Files are written
0600 in 0700 folders, like everything the kit writes. The last line printed is the next
command: ``autoid check --config …``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from autoid_lib.status import ExitStatus

CONFIG_NAME = "autoid.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "dir",
        nargs="?",
        default=".",
        metavar="DIR",
        help=f"the folder for {CONFIG_NAME} (default: the current folder)",
    )
    parser.add_argument(
        "--deploy",
        metavar="DIR",
        help="also write the deploy files (systemd, cron, logrotate, Prometheus rules) here",
    )


def run(args: argparse.Namespace) -> int:
    from autoid_lib.cli.main import installed_version
    from autoid_lib.config_template import TOKEN_VARIABLE, template
    from autoid_lib.package_data import deploy_files
    from autoid_lib.private_files import private_umask, write_private

    config = Path(args.dir).expanduser().resolve() / CONFIG_NAME
    writes: dict[Path, str] = {config: template(installed_version())}
    if args.deploy:
        folder = Path(args.deploy).expanduser().resolve()
        for source in deploy_files():
            writes[folder / source.name] = source.read_text(encoding="utf-8")
    existing = [path for path in writes if path.exists() or path.is_symlink()]
    if existing:
        print(
            f"autoid init: {existing[0]} exists; nothing was written "
            "(move it away, or choose another folder)",
            file=sys.stderr,
        )
        return ExitStatus.CONFIG
    with private_umask():
        for path, text in writes.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private(path, text)
            print(f"autoid init: wrote {path}")
    variables = ", ".join(TOKEN_VARIABLE.format(db) for db in ("PROJECTS", "INCOMING", "AUTOID"))
    print(
        f"autoid init: next, set [redcap] url in {config.name} and the tokens it names "
        f"({variables}, or file: references), then run:"
    )
    print(f"autoid check --config {shlex.quote(str(config))}")
    return ExitStatus.OK
