"""index.html as a status page and the links between reports (issue 11): current state, last
success, failure streak, environment and verification lines, a distinct <title> per report,
previous / next / index / run.log / summary.json links. Real notebook runs against the sandbox."""

from __future__ import annotations

import re

import pytest
from scenarios import clean_history, plant_problems

from autoid_lib import __version__
from autoid_lib.config import load_settings
from autoid_lib.records.notebook_run import execute_run


def links(page: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', page)


@pytest.mark.slow
def test_reports_link_each_other_and_the_index_says_the_state(sandbox, tmp_path):
    clean_history(sandbox)
    plant_problems(sandbox)
    config = sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    settings = load_settings(config)
    dry = execute_run(settings, dry_run=True, progress=False)
    live = execute_run(settings, progress=False)
    tokens = list(sandbox.tokens.values())
    sandbox.stop()  # REDCap unreachable: two failed runs in a row
    failed = [execute_run(settings, progress=False) for _ in range(2)]
    folders = [dry.path, live.path, *(r.path for r in failed)]

    titles = [re.search(r"<title>(.*?)</title>", p.joinpath("report.html").read_text())[1]
              for p in folders]  # fmt: skip
    assert titles[0].startswith("Auto-ID dry run · Needs attention · ")
    assert titles[1].startswith("Auto-ID live run · Needs attention · ")
    assert titles[2].startswith("Auto-ID live run · FAILED · ")
    assert titles[0].endswith(" UTC")

    middle = links(live.report.read_text())
    assert f"../{dry.path.name}/report.html" in middle  # previous
    assert f"../{failed[0].path.name}/report.html" in middle  # next, filled in later
    assert f"../index.html#{live.path.name}" in middle
    assert "run.log" in middle and "summary.json" in middle
    assert "next →</span>" in failed[1].report.read_text()  # the newest has no next yet

    index = (tmp_path / "reports" / "index.html").read_text()
    assert "<script" not in index and "http" not in "".join(links(index))
    state = index[: index.index("<table")]
    assert "FAILED" in state and "Failing: 2 runs in a row" in state
    assert f'href="{live.path.name}/report.html"' in state  # the last success
    assert "Re-read after writing" in state and "match" in state
    assert f"kit {__version__}" in state and "REDCap 127.0.0.1" in state
    for folder in folders:
        assert f'id="{folder.name}"' in index
        assert f'href="{folder.name}/summary.json"' in index
    assert f'href="{live.path.name}/run.log"' in index
    assert live.summary["verified"]["matched"] is True
    pages = index + "".join(p.joinpath("report.html").read_text() for p in folders)
    assert [t for t in tokens if t in pages] == []
