"""A new site, as it was tried against a real REDCap 15.7.6: the commands an operator types.

REDCap in Europe/Paris (its clock filters ``dateRangeBegin``), the demo's hard cases, the
sandbox as strict as REDCap (tests/test_sandbox_fidelity.py). ``autoid check``, a dry run,
three live runs minutes apart with studies arriving between them, and the audit: each exits 0,
every study is served once under its patient's one ID, a run with nothing new writes no data,
and no live lease ticket is left. At the real site every run after the first failed at
``lease`` (its ticket could not be deleted).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

from autoid_lib.lease import LEASE_PROJECT

PARIS = "Europe/Paris"


def autoid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autoid_lib.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def summaries(reports: Path, mode: str) -> list[dict]:
    found = sorted(reports.glob(f"*-{mode}/summary.json"))
    return [json.loads(path.read_text()) for path in found]


def test_a_new_site_checks_runs_three_times_and_audits_against_a_strict_redcap(
    sandbox_factory, tmp_path
):
    sb = sandbox_factory(seed="demo", timezone=PARIS)
    config = sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    config.write_text(config.read_text().replace("[run]", f'[run]\nserver_timezone = "{PARIS}"'))
    assert autoid("check", "--config", str(config), cwd=tmp_path).returncode == 0
    dry = autoid("run", "--config", str(config), "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr  # its report asks for attention
    ae = next(
        row["project_autoid_aetitle"]
        for row in sb.rows("projects")
        if row["project_use_autoid"] == "1" and row["project_name"] == "ABCTrial"
    )
    for run in range(3):
        live = autoid("run", "--config", str(config), cwd=tmp_path)
        assert live.returncode == 0, live.stdout + live.stderr
        sb.add_rows(
            "incoming",
            [
                {
                    "study_instance_uid": f"1.2.826.0.4242.{run}",
                    "study_aetitle_addressed": ae,
                    "study_patient_id": f"NEWSITE^{run}",
                    "study_date": "20261207",
                }
            ],
        )
        sb.advance(timedelta(minutes=3))
    last = autoid("run", "--config", str(config), cwd=tmp_path)  # serves the last study only
    assert last.returncode == 0, last.stdout + last.stderr
    sb.reset_counts()
    quiet = autoid("run", "--config", str(config), cwd=tmp_path)  # nothing new
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    writes = sb.request_counts()
    assert writes[("incoming", "record", "import")] == 0
    assert writes[("autoid", "record", "import")] <= 1  # the lease ticket at most, no ID
    audit = autoid("audit", "--config", str(config), cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr

    live_runs = summaries(tmp_path / "reports", "live")
    assert len(live_runs) == 5 and all(s["status"] != "failed" for s in live_runs)
    assert [s["transfers_created"] for s in live_runs[1:]] == [1, 1, 1, 0]
    rows = sb.rows("autoid")
    assert not [r for r in rows if r["autoid_project_name"] == LEASE_PROJECT]
    by_patient: dict[tuple[str, str], set[str]] = defaultdict(set)
    for row in rows:
        if row["autoid_hash"] and row["autoid_value"]:
            by_patient[(row["autoid_project_name"], row["autoid_hash"])].add(row["autoid_value"])
    assert all(len(values) == 1 for values in by_patient.values())
    requests = Counter(
        r["study_instance_uid"] for r in sb.rows("incoming") if r.get("transfer_project_name")
    )
    assert requests and max(requests.values()) == 1  # the demo seeds none twice
