"""``autoid explore``: a working copy of the installed notebook opened in JupyterLab, started on
loopback from this environment; without JupyterLab, the extra to install."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from autoid_lib.cli.explore import working_copy
from autoid_lib.package_data import notebook_path

INSTALLED = notebook_path("explore.ipynb")
WITHOUT_JUPYTERLAB = """
import sys
sys.modules["jupyterlab"] = None  # this environment as if the jupyter extra were not installed
from autoid_lib.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def config_path_of(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    (parameters,) = [c for c in cells if "parameters" in c["metadata"].get("tags", ())]
    return "".join(parameters["source"])


def test_without_jupyterlab_it_names_the_extra_and_copies_nothing(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_JUPYTERLAB, "explore", "--dir", str(tmp_path / "work")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert "pip install 'autoid-kit[jupyter]'" in done.stderr
    assert sys.executable in done.stderr  # the pip of this environment, not some other
    assert not (tmp_path / "work").exists()


def test_the_working_copy_gets_the_config_and_an_existing_copy_is_kept(tmp_path):
    copy = working_copy(INSTALLED, tmp_path / "work", "site/autoid.toml")
    assert copy == tmp_path / "work" / "explore.ipynb"
    assert json.dumps(str(Path("site/autoid.toml").resolve())) in config_path_of(copy)
    installed = json.loads(INSTALLED.read_text())
    assert json.loads(copy.read_text())["cells"][2] == installed["cells"][2]  # the app cell

    copy.write_text(copy.read_text().replace("autoid.toml", "mine.toml"))
    assert working_copy(INSTALLED, tmp_path / "work", "other.toml") == copy
    assert "mine.toml" in config_path_of(copy)  # the user's copy, as they left it


@pytest.mark.slow
def test_explore_starts_jupyterlab_on_loopback_with_the_copy(tmp_path):
    pytest.importorskip("jupyterlab", reason="needs the jupyter extra")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = os.urandom(16).hex()
    config = tmp_path / "autoid.toml"
    env = {**os.environ, "JUPYTER_TOKEN": token, "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "autoid_lib.cli", "explore", "--dir", str(tmp_path / "w")]
    command += ["--config", str(config), "--port", str(port), "--no-browser"]
    command += ["--", "--allow-root"]  # the tests may run as root (CI does), JupyterLab refuses
    lab = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/contents/explore.ipynb"
        served = None
        for _ in range(120):
            try:
                served = requests.get(url, headers={"Authorization": f"token {token}"}, timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.5)
        assert served is not None and served.status_code == 200
        cells = served.json()["content"]["cells"]
        assert str(config) in "".join(cells[1]["source"])
        specs = requests.get(
            f"http://127.0.0.1:{port}/api/kernelspecs",
            headers={"Authorization": f"token {token}"},
            timeout=5,
        ).json()
        kernel = specs["kernelspecs"][specs["default"]]["spec"]["argv"][0]
        # the server is this environment's Python (explore became it), and jupyter_client
        # starts a "python" kernel as the server's own interpreter: the kernel imports this kit
        server = Path(f"/proc/{lab.pid}/cmdline").read_bytes().split(b"\0")
        assert server[:3] == [sys.executable.encode(), b"-m", b"jupyterlab"]
        assert kernel in ("python", sys.executable)
    finally:
        lab.terminate()
        _, err = lab.communicate(timeout=30)
    assert f"opening {tmp_path / 'w' / 'explore.ipynb'} in JupyterLab" in err
    assert "127.0.0.1" in err and "0.0.0.0" not in err
