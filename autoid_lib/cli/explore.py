"""``autoid explore``: open the installed ``explore.ipynb`` in JupyterLab, from this environment.

The notebook lives in the checkout's ``notebooks/`` and ships inside the package
(``autoid_lib.notebooks``). The command copies it into a working folder (the installed file may
sit in a read-only ``/opt/...``; an existing copy is opened as it is, never overwritten), sets
its ``config_path`` when ``--config`` is given, and starts JupyterLab on loopback with the
Python of the same environment, so the kernel imports this kit. JupyterLab comes with the
``jupyter`` extra; without it the command says which install adds it (exit 2).
``--print-path [NOTEBOOK]`` prints only where an installed notebook is, for scripts and
schedulers (``populate_autoid.ipynb`` for papermill); options after ``--`` go to JupyterLab.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

from autoid_lib.package_data import NOTEBOOKS, notebook_path
from autoid_lib.status import ExitStatus

NOTEBOOK = "explore.ipynb"
EXTRA_INSTALL = "pip install 'autoid-kit[jupyter]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--print-path",
        nargs="?",
        const=NOTEBOOK,
        choices=NOTEBOOKS,
        metavar="NOTEBOOK",
        help="print only where an installed notebook is (default: explore.ipynb; "
        "populate_autoid.ipynb is the run notebook for papermill and schedulers)",
    )
    parser.add_argument(
        "--dir",
        default=".",
        metavar="DIR",
        help="the working folder for the copy (default: the current folder)",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="the autoid.toml the copy reads (its config_path)"
    )
    parser.add_argument("--port", type=int, default=0, metavar="N", help="JupyterLab's port")
    parser.add_argument(
        "--no-browser", action="store_true", help="start JupyterLab without opening a browser"
    )
    parser.add_argument(
        "lab_options",
        nargs="*",
        metavar="-- JUPYTERLAB-OPTION",
        help="options after -- go to JupyterLab as they are (e.g. -- --allow-root)",
    )


def run(args: argparse.Namespace) -> int:
    if args.print_path:
        print(notebook_path(args.print_path))
        return ExitStatus.OK
    installed = notebook_path(NOTEBOOK)
    if importlib.util.find_spec("jupyterlab") is None:
        print(
            f"autoid explore: JupyterLab is not installed in this environment ({sys.prefix}); "
            f"install the jupyter extra: {sys.executable} -m {EXTRA_INSTALL}",
            file=sys.stderr,
        )
        return ExitStatus.CONFIG
    folder = Path(args.dir).resolve()
    copy = working_copy(installed, folder, args.config)
    command = lab_command(copy, port=args.port, browser=not args.no_browser)
    command[-1:-1] = args.lab_options
    print(f"autoid explore: opening {copy} in JupyterLab (Ctrl-C stops it)", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)  # JupyterLab takes over this process: its signals, its exit
    return ExitStatus.FAILED  # not reached


def working_copy(installed: Path, folder: Path, config: str | None) -> Path:
    """``folder/explore.ipynb``: a fresh copy of the installed notebook, or the copy already
    there (the user's, kept as it is). ``config`` fills a fresh copy's ``config_path``."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / NOTEBOOK
    if copy.exists():
        print(f"autoid explore: {copy} exists; opening it as it is", file=sys.stderr)
        return copy
    if config is None:
        shutil.copyfile(installed, copy)
        return copy
    notebook = json.loads(installed.read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", ()):
            path = json.dumps(str(Path(config).resolve()))  # a JSON string is a Python literal
            cell["source"] = [f"config_path: str = {path}  # the kit TOML config"]
    copy.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return copy


def lab_command(copy: Path, *, port: int, browser: bool) -> list[str]:
    """JupyterLab from this environment's Python, on loopback only, rooted at the copy's
    folder and opening the copy."""
    command = [sys.executable, "-m", "jupyterlab", "--ServerApp.ip=127.0.0.1"]
    command += [f"--ServerApp.root_dir={copy.parent}"]
    if port:
        command += [f"--ServerApp.port={port}"]
    if not browser:
        command += ["--no-browser"]
    return [*command, str(copy)]
