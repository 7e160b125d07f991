"""The kit as cron runs it: real processes, console entry points, a sandbox server process.

In-process tests cover the logic; this one shows the pieces hold together as separate programs:
``autoid sandbox`` serves, two ``autoid run`` started at once share the lock (one works, one
exits 3 at once), and the kernel of the working one runs under its parent's lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import requests

from autoid_lib.status import ExitStatus


def autoid(*args: str, **popen) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOID_")}
    return subprocess.Popen(
        [sys.executable, "-m", "autoid_lib.cli", *args], env=env, text=True, **popen
    )


def wait_for_sandbox(config: Path, deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if config.exists():
            url = tomllib.loads(config.read_text())["redcap"]["url"]
            try:
                requests.post(url, data={}, timeout=2)
                return
            except requests.ConnectionError:
                pass
        time.sleep(0.1)
    raise AssertionError("the sandbox did not come up")


@pytest.mark.slow
def test_two_cron_starts_at_once_one_runs_one_exits_3(tmp_path):
    sandbox = autoid(
        "sandbox", "--seed", "demo", "--env-file", str(tmp_path / "sandbox.env"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        config = tmp_path / "autoid.toml"
        wait_for_sandbox(config)
        runs = [
            autoid("run", "--config", str(config), "--quiet", "--output-dir", str(tmp_path / "r"),
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)
        ]  # fmt: skip
        outcomes = sorted((run.wait(timeout=120), *run.communicate()) for run in runs)
    finally:
        sandbox.send_signal(signal.SIGTERM)
        sandbox.wait(timeout=10)
    (worked, out, _), (locked, _, err) = outcomes
    assert (worked, locked) == (ExitStatus.OK, ExitStatus.LOCKED)
    assert "another run holds the lock" in err
    report = Path(out.strip())
    assert report.name == "report.html" and report.exists()
    summary = json.loads((report.parent / "summary.json").read_text())
    assert summary["mode"] == "live" and summary["transfers_created"] > 0
    # the first look (6: no local copy yet), the lease (ticket, REDCap's clock, AutoID and the
    # planned studies' transfers again), the writes and their re-reads (4), the copy's mark,
    # the release (docs/run.md)
    assert summary["api_requests"] <= 16
