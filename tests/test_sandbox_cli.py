"""``autoid sandbox`` as a real subprocess, and the kit files it (and the handle) write."""

from __future__ import annotations

import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
import tomllib

from redcap import Project


class Output:
    """The child's stdout, read line by line in a thread so that a silent child fails the test
    instead of hanging it."""

    def __init__(self, proc: subprocess.Popen):
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._thread = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, marker: str, deadline_s: float = 20.0) -> list[str]:
        end = time.monotonic() + deadline_s
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if marker in line:
                return self.seen
        raise AssertionError(f"no {marker!r} from the sandbox; got {self.seen}")


def test_write_kit_files(sandbox, tmp_path):
    config_path = sandbox.write_kit_files(tmp_path / "kit", reports_dir=tmp_path / "out")
    kit = (tmp_path / "kit").resolve()
    assert config_path == kit / "autoid.toml"
    config = tomllib.loads(config_path.read_text())
    assert config["redcap"] == {
        "url": sandbox.url,
        "verify": True,
        "timeout_s": 10,
        "tokens": {db: f"file:{kit / 'tokens' / f'{db}.token'}" for db in sandbox.tokens},
    }
    assert config["run"] == {
        "lookback_days": 14,
        "hash": "sha512",
        "lock_file": str(kit / "autoid.lock"),
        "reports_dir": str((tmp_path / "out").resolve()),
    }
    for db, token in sandbox.tokens.items():
        token_file = kit / "tokens" / f"{db}.token"
        assert token_file.read_text() == token
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    env = (kit / "sandbox.env").read_text().splitlines()
    assert env[0] == f"export AUTOID_REDCAP_URL={sandbox.url}"
    assert f"export AUTOID_TOKEN_INCOMING={sandbox.tokens['incoming']}" in env


def test_cli_serves_until_terminated(tmp_path):
    env_file = tmp_path / "sandbox.env"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "autoid_lib.cli",
            "sandbox",
            "--port",
            "0",
            "--seed",
            "demo",
            "--env-file",
            str(env_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("AUTOID_")},
    )
    try:
        output = Output(proc)
        lines = output.until("Press Ctrl-C")
        url = next(line.split()[-1] for line in lines if "listening on" in line)
        tokens = {
            line.split()[1]: line.split()[2] for line in lines if line.strip().startswith("token")
        }
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/")
        token_file = tmp_path / "tokens" / "projects.token"
        assert token_file.read_text() == tokens["projects"]
        assert (tmp_path / "autoid.toml").exists()
        assert f"AUTOID_REDCAP_URL={url}" in env_file.read_text()
        rows = Project(url, tokens["projects"], timeout=10).export_records()
        assert len(rows) == 8
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    assert proc.returncode == 0, proc.stderr.read()
    assert output.until("sandbox stopped", deadline_s=5)
