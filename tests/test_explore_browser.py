"""The explore notebook in a real JupyterLab, driven by headless Chromium through Selenium.

What only a browser shows: that typing a patient ID sends it to the kernel once and never
back (the websocket frames Chromium saw), that the field is empty after the lookup, and that
the answers render as meant (text columns left-aligned, the pattern caret in a fixed-width
block). Needs Debian's ``chromium`` and ``chromium-driver`` and the ``browser`` extra
(``pip install -e '.[browser]'``); skipped without them. Run: ``pytest -m browser``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import requests
from headless import MARKS, chrome
from scenarios import PATIENTS, PID, autoid, clean_history, study, transfer

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "explore.ipynb"

pytestmark = MARKS
webdriver = pytest.importorskip("selenium.webdriver", reason="needs the browser extra")
pytest.importorskip("jupyterlab", reason="needs the browser extra")

TAB = ".jupyter-widget-tab"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_lab(sandbox, tmp_path):
    """JupyterLab on loopback serving a copy of explore.ipynb set to a sandbox's config."""
    clean_history(sandbox)
    sandbox.add_rows(
        "incoming",
        [
            study("4.1", "ALPHA", PID[0]),
            study("4.2", "ALPHA", PID[7]),
            transfer("4.2", 1, "Alpha", "A007"),
        ],
    )
    sandbox.add_rows("autoid", [autoid(5, "Alpha", PID[7], "A007")])
    config = sandbox.write_kit_files(tmp_path / "kit")
    root = tmp_path / "lab"
    root.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(c for c in nb.cells if c.cell_type == "code")
    parameters.source = f"config_path: str = {str(config)!r}"
    nbformat.write(nb, root / "explore.ipynb")
    settings = tmp_path / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)  # no "Jupyter news?" pop-up over the widgets
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    token, port = secrets.token_hex(16), _free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "lab-workspaces"),
    }
    log = (tmp_path / "jupyter.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
         "--ip=127.0.0.1", f"--port={port}", f"--ServerApp.root_dir={root}",
         f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.get(f"{base}/api/status", params={"token": token}, timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        yield f"{base}/lab/tree/explore.ipynb?token={token}", tmp_path / "jupyter.log"
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def browser(tmp_path):
    def log_frames(options):
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})

    extra = ("--window-size=1400,1400", f"--user-data-dir={tmp_path / 'chromium'}")
    driver = chrome(webdriver, *extra, configure=log_frames)
    try:
        yield driver
    finally:
        driver.quit()


def _frames(driver) -> list[tuple[str, str]]:
    """The websocket frames Chromium sent and received since the last call, as text."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] in ("Network.webSocketFrameSent", "Network.webSocketFrameReceived"):
            response = message["params"]["response"]
            data = response["payloadData"]
            if response.get("opcode") == 2:  # Jupyter's binary kernel protocol
                data = base64.b64decode(data).decode("utf-8", "replace")
            found.append((message["method"].removeprefix("Network.webSocketFrame"), data))
    return found


def test_explore_in_jupyterlab_never_echoes_the_patient_id(jupyter_lab, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    url, server_log = jupyter_lab
    wait = WebDriverWait(browser, 60)
    browser.get(url)
    wait.until(lambda d: d.execute_script(
        "const p = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        "const k = p && p.sessionContext && p.sessionContext.session"
        " && p.sessionContext.session.kernel; return !!k && k.status === 'idle';"
    ))  # fmt: skip
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"{TAB} .lm-TabBar-tab"))
    tabs = {t.text: t for t in browser.find_elements(By.CSS_SELECTOR, f"{TAB} .lm-TabBar-tab")}
    assert list(tabs) == ["Project", "Study", "Patient", "Pattern", "Dry run"]

    def shown(css: str):
        root = browser.find_element(By.CSS_SELECTOR, TAB)
        return [e for e in root.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()]

    def first(css: str):
        return wait.until(lambda _: shown(css))[0]

    def output_text() -> str:  # an empty Output has no height: not displayed
        return "\n".join(e.text for e in shown(".widget-output"))

    def press_and_read(expected: str) -> str:
        first("button.jupyter-button").click()
        wait.until(lambda _: expected in output_text())
        return output_text()

    tabs["Patient"].click()
    _frames(browser)
    field = first("input[type=password]")
    field.send_keys(PID[7])
    answer = press_and_read("known in Alpha as A007")
    frames = _frames(browser)
    assert sum(PID[7] in data for way, data in frames if way == "Sent") == 1  # to the kernel
    assert [data for way, data in frames if way == "Received" and PID[7] in data] == []
    assert field.get_attribute("value") == ""
    assert PID[7] not in answer

    tabs["Project"].click()
    Select(first("select")).select_by_visible_text("Alpha")
    answer = press_and_read("Recent runs")
    assert "Forecast:" in answer and "Alpha (AE title ALPHA)" in answer
    cell = first(".widget-output td")
    assert cell.value_of_css_property("text-align") == "left"  # the project column

    tabs["Pattern"].click()
    first("input[type=text]").send_keys("A[0-9")
    press_and_read("Pattern error")
    (block,) = shown(".widget-output pre")
    assert block.text.splitlines()[-1] == " ^"  # under the "[" at position 1

    identifiers = [PID[7], PATIENTS[PID[7]]]
    assert [v for v in identifiers if v in server_log.read_text()] == []
