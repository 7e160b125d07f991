"""``autoid explore``: where the installed ``explore.ipynb`` is, so a user can open that version.

The notebook lives in the checkout's ``notebooks/`` and ships inside the package
(``autoid_lib.notebooks``). ``--print-path`` prints only its path, for scripts
(``cp "$(autoid explore --print-path)" .``); without it the command also says how to open a
copy, since the installed file may sit in a read-only ``/opt/...``.
"""

from __future__ import annotations

import argparse
import sys

from autoid_lib.package_data import notebook_path
from autoid_lib.status import ExitStatus


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--print-path", action="store_true", help="print only the notebook's path and exit"
    )


def run(args: argparse.Namespace) -> int:
    path = notebook_path("explore.ipynb")
    print(path)
    if not args.print_path:
        print(
            "autoid explore: copy it next to your autoid.toml and open the copy, e.g.\n"
            f'  cp "{path}" . && jupyter lab explore.ipynb\n'
            "then set config_path in its first code cell and Run All (docs/explore-and-audit.md)",
            file=sys.stderr,
        )
    return ExitStatus.OK
