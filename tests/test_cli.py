import subprocess
import sys

from autoid_lib.cli.main import COMMANDS, build_parser


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
