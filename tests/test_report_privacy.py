"""No patient ID, patient name, patient hash or API token in any file a run writes.

Three recorded runs on the demo seed into one reports folder — a live run at detail = full, a run
whose notebook cell raises with a patient ID in the exception, and a run that fails on REDCap —
then every file under the reports folder (run.ipynb, report.html, summary.json, run.log,
index.html) and everything printed are searched.

Identifiers shorter than 6 characters are left out of the search: the demo seed's patient IDs
are 11 digits and its names ``FAMILY^GIVEN``, so nothing real is that short, while a 1–5
character string (a stray ``A``) would match base64 images and timestamps by accident.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import nbformat
import pytest

from autoid_lib.cli import run as run_cli
from autoid_lib.config import load_settings
from autoid_lib.records.notebook_run import NOTEBOOK, execute_run
from autoid_lib.sandbox import seed_patient_identifiers
from autoid_lib.status import ExitStatus

MIN_LENGTH = 6


def searched_identifiers() -> set[str]:
    found = {value.strip() for value in seed_patient_identifiers()}
    return {value for value in found if len(value) >= MIN_LENGTH}


def leaks(text: str, needles: set[str]) -> set[str]:
    return {needle for needle in needles if needle in text}


def notebook_that_raises(tmp_path: Path) -> Path:
    """The real notebook with its projects cell replaced by one that fails on a patient ID.

    The ID comes from the environment at run time (code never holds patient data): it ends
    up in a KeyError and in the ValueError raised while handling it.
    """
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("autoid", {}).get("step") == "projects table":
            cell.source = (
                "import os\n"
                "patient = os.environ['AUTOID_TEST_PATIENT']\n"
                "try:\n    {}[patient]\n"
                "except KeyError:\n    raise ValueError('no AutoID row for ' + patient)"
            )
    path = tmp_path / "raising.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_no_patient_identifier_or_token_in_any_output(demo_sandbox, tmp_path, capsys, monkeypatch):
    identifiers = searched_identifiers()
    assert len(identifiers) > 100  # the search covers the seed, not an empty set
    hashes = {hashlib.sha512(i.encode()).hexdigest() for i in identifiers}
    tokens = set(demo_sandbox.tokens.values())
    reports = tmp_path / "reports"
    config = demo_sandbox.write_kit_files(tmp_path / "kit", reports_dir=reports)
    settings = load_settings(config)

    # 1. live, full detail: study UIDs and pseudonyms shown, patient data never
    live = execute_run(settings, detail="full", progress=False)
    assert live.exit_status == ExitStatus.OK
    # 2. a notebook cell raises, quoting a patient ID in its exception and traceback
    monkeypatch.setenv("AUTOID_TEST_PATIENT", sorted(i for i in identifiers if i.isdigit())[0])
    raising = execute_run(
        settings, detail="full", progress=False, notebook=notebook_that_raises(tmp_path)
    )
    monkeypatch.delenv("AUTOID_TEST_PATIENT")
    assert raising.exit_status == ExitStatus.FAILED
    assert raising.summary["error"]["step"] == "projects table"
    assert "ValueError" in raising.report.read_text()  # the error shows, its text does not
    # 3. REDCap fails on the AutoID read (through the CLI, progress on)
    config.write_text(
        config.read_text().replace("timeout_s = 10", "timeout_s = 10\nread_retries = 0")
    )
    demo_sandbox.inject_fault("oom", database="autoid", action="export", times=None)
    parser = argparse.ArgumentParser()
    run_cli.add_arguments(parser)
    status = run_cli.run(parser.parse_args(["--config", str(config), "--detail", "full"]))
    assert status == ExitStatus.FAILED

    files = [p for p in reports.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"run.ipynb", "report.html", "summary.json", "run.log", "index.html"} <= names
    assert len([p for p in files if p.name == "report.html"]) == 3
    printed = capsys.readouterr()
    outputs = {str(p): p.read_text(encoding="utf-8", errors="replace") for p in files}
    outputs["stdout"], outputs["stderr"] = printed.out, printed.err
    for where, text in outputs.items():
        assert not leaks(text, identifiers), f"patient identifier in {where}"
        assert not leaks(text, hashes), f"patient hash in {where}"
        assert not leaks(text, tokens), f"API token in {where}"
    # the search would have found them: pseudonyms and study UIDs are in the full report
    assert "<th>study UID</th>" in live.report.read_text()
