"""Debian's Chromium for the browser tests (``pytest -m browser``): where it is, the marks that
skip a test without it, and the flags this machine's closed network needs."""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)",
    ),
]
# without the background-networking flags Chromium's connections are refused many at a time
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chrome(webdriver, *extra: str, configure=None):
    """A headless Chromium driven by Selenium (``webdriver``: ``selenium.webdriver``)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, *extra):
        options.add_argument(flag)
    if configure is not None:
        configure(options)
    return webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
