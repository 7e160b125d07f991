"""What people see, in headless Chromium: the run report, the index and the mail fit a phone.

At 400 px wide (a phone) and at 1,300 px (a desktop), none of the three pages is wider than
the window: wide tables scroll inside their own box, text wraps. Measured in the browser
(``scrollWidth`` against ``clientWidth``), on the pages a real run with the demo's hard cases
and a failed run write. Needs Debian's ``chromium`` and ``chromium-driver`` and the
``browser`` extra; skipped without them. Run: ``pytest -m browser``.
"""

from __future__ import annotations

import pytest
from headless import MARKS, chrome

from autoid_lib.config import load_settings
from autoid_lib.mail.compose import compose_message
from autoid_lib.mail.settings import email_settings_from_config
from autoid_lib.records.notebook_run import execute_run

pytestmark = MARKS
webdriver = pytest.importorskip("selenium.webdriver", reason="needs the browser extra")


@pytest.fixture(scope="module")
def browser():
    driver = chrome(webdriver)
    yield driver
    driver.quit()


@pytest.fixture
def pages(sandbox_factory, tmp_path):
    """report.html, index.html and the mail's HTML part of a demo run and of a failed run."""
    sb = sandbox_factory(seed="demo")
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    mail = email_settings_from_config(
        {"smtp_host": "localhost", "sender": "a@b.c", "recipients": ["x@y.z"]}
    )
    found = {}
    for name in ("run", "failed"):
        if name == "failed":
            sb.inject_fault("http500", database="autoid", times=None)
        record = execute_run(settings, progress=False)
        message = compose_message(record.summary, mail, record.report)
        html_part = tmp_path / f"mail-{name}.html"
        html_part.write_text(message.get_body(("html",)).get_content())
        found[f"report ({name})"] = record.report
        found[f"mail ({name})"] = html_part
    found["index"] = tmp_path / "reports" / "index.html"
    return found


@pytest.mark.parametrize("width", [400, 1300])
def test_no_page_is_wider_than_a_phone_or_a_desktop_window(browser, pages, width):
    browser.set_window_size(width, 900)
    wider = {}
    for name, path in pages.items():
        browser.get(path.as_uri())
        page, window = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        )
        if page > window:
            wider[name] = (page, window)
    assert wider == {}
