import subprocess
import sys
from importlib import metadata
from pathlib import Path

import nbformat
import pytest

import autoid_lib
from autoid_lib.cli.main import COMMANDS, build_parser
from autoid_lib.package_data import NOTEBOOKS, notebook_path, templates_dir


def test_every_command_is_listed_in_help():
    help_text = build_parser().format_help()
    for name in COMMANDS:
        assert name in help_text


def test_console_script_runs_as_a_module():
    done = subprocess.run(
        [sys.executable, "-m", "autoid_lib.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert "gen-id" in done.stdout


def test_version_is_the_installed_distributions():
    done = subprocess.run(
        [sys.executable, "-m", "autoid_lib.cli", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"autoid {metadata.version('autoid-kit')}"
    assert metadata.version("autoid-kit") == autoid_lib.__version__  # one source of the number


def test_explore_prints_the_installed_notebooks_path():
    done = subprocess.run(
        [sys.executable, "-m", "autoid_lib.cli", "explore", "--print-path"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == ""
    path = Path(done.stdout.strip())
    assert path.is_absolute() and path.name == "explore.ipynb"
    # the tests run from an editable checkout: its top-level notebooks/ (.ci/wheel-smoke checks
    # the installed wheel's)
    assert path.parent == Path(__file__).resolve().parent.parent / "notebooks"
    assert "explore_app" in nbformat.read(path, as_version=4).cells[-1].source


def test_every_shipped_notebook_and_the_templates_are_found():
    for name in NOTEBOOKS:
        assert nbformat.read(notebook_path(name), as_version=4).cells
    assert (templates_dir() / "report" / "index.html.j2").is_file()
    with pytest.raises(ValueError, match=r"explore\.ipynb"):
        notebook_path("nope.ipynb")


def command_helps() -> dict[str, str]:
    """``autoid --help`` and every ``autoid COMMAND --help``, as printed."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    return {"": parser.format_help(), **{n: p.format_help() for n, p in subparsers.items()}}


def test_help_is_plain_words_without_markup():
    for name, text in command_helps().items():
        assert "`" not in text and ":func:" not in text and "::" not in text, name


def test_the_reports_folder_has_one_name_and_the_old_one_still_works():
    folder_commands = {"run", "audit", "demo", "prune", "repair"}
    for name, text in command_helps().items():
        if name in folder_commands:
            assert "--reports-dir DIR, --output-dir DIR" in text, name
        assert "--output-dir" not in text or name in folder_commands, name
    parser = build_parser()
    for flag in ("--reports-dir", "--output-dir"):
        args = parser.parse_args(["run", "--config", "c.toml", flag, "/tmp/r"])
        assert args.reports_dir == "/tmp/r"
        args = parser.parse_args(["prune", "--keep-days", "3", flag, "/tmp/r"])
        assert args.reports_dir == "/tmp/r"


def test_print_path_names_the_run_notebook_for_papermill():
    done = subprocess.run(
        [sys.executable, "-m", "autoid_lib.cli", "explore", "--print-path", NOTEBOOKS[0]],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and done.stderr == ""
    assert NOTEBOOKS[0] == "populate_autoid.ipynb"
    assert Path(done.stdout.strip()) == notebook_path("populate_autoid.ipynb")
