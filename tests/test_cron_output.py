"""What ``autoid run`` writes on stderr when cron runs it: time-stamped kit lines, nothing else.

Runs the real command as a subprocess, stderr into a file (no terminal), against the sandbox.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from stamped import STAMP


def autoid_run(config: Path, tmp_path: Path, *options: str) -> tuple[int, list[str], str]:
    """(exit status, stderr lines, stdout) of ``autoid run`` with stderr in a file."""
    err = tmp_path / "stderr.txt"
    with err.open("w") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "autoid_lib.cli", "run", "--config", str(config), *options],
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
            timeout=300,
        )
    return done.returncode, err.read_text().splitlines(), done.stdout


def test_a_cron_run_writes_only_time_stamped_kit_lines(demo_sandbox, tmp_path):
    config = demo_sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    status, lines, stdout = autoid_run(config, tmp_path)
    assert status == 0
    assert lines, "a run says what it did"
    for line in lines:
        assert STAMP.match(line), f"not time-stamped: {line!r}"
        assert re.match(STAMP.pattern + r"autoid[ .]", line), f"not a kit line: {line!r}"
    text = "\n".join(lines)
    assert "Executing" not in text and "%|" not in text  # papermill's progress bar
    assert "Kernel is running over TCP" not in text and "IPKernelApp" not in text
    assert any("autoid.run: read " in line for line in lines)  # one line per step
    assert any("autoid.run: plan: " in line for line in lines)
    assert lines[-1].endswith(f"(report: {stdout.strip()})")


def test_quiet_prints_only_the_outcome_line(demo_sandbox, tmp_path):
    config = demo_sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    status, lines, _ = autoid_run(config, tmp_path, "--quiet")
    assert status == 0
    assert len(lines) == 1 and STAMP.match(lines[0]) and "autoid run: " in lines[0]


def test_redcap_retries_show_on_stderr_as_they_happen(demo_sandbox, tmp_path):
    config = demo_sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    demo_sandbox.inject_fault("http500", database="projects", action="export", times=2)
    status, lines, _ = autoid_run(config, tmp_path, "--quiet")
    assert status == 0  # the third try worked
    retries = [line for line in lines if "retrying in" in line]
    assert len(retries) == 2, lines
    for line in retries:
        assert STAMP.match(line) and "autoid.redcap" in line and "projects:" in line
    assert STAMP.match(lines[-1]) and "autoid run: " in lines[-1]
