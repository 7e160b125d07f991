"""Two installations, one REDCap: never two writers, whatever runs together or gets killed.

Each installation has its own config, token files, lock file and reports folder, as on two
machines; both run ``autoid run`` (a real notebook kernel) against one sandbox while new
studies arrive, and either run is SIGKILLed at a random moment or while its ticket is in
REDCap (mostly with its notebook kernel, as systemd stops a unit; sometimes `autoid run` alone,
whose kernel then lives on for a moment: the lease, not the lock file, keeps it apart); each
reads AutoID through its own local copy once the table outgrows one read chunk. Both run on
this machine, so each also recognises a killed run's ticket by its process, the other
installation's too (docs/run.md, "A run that was killed"); across machines such a ticket blocks
the other installation until it expires (``test_lease.py``).

After every round: no patient with two IDs in a project, no ID for two patients, no study with
two transfer requests; after a final clean run every servable study is served once.

``make test`` runs a short version; ``.ci/run`` runs the long one (``-m installations``).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from scenarios import project

from autoid_lib.hashing import sha512_hex
from autoid_lib.lease import LEASE_PROJECT
from autoid_lib.snapshot import is_kit_project_name

AUTOID = str(Path(sys.executable).with_name("autoid"))
PROJECTS = {"KNEE": ("KNEE_AE", r"K\d{3}"), "HIP": ("HIP_AE", r"H\d{3}")}
LEASE = {"expiry_s": 8, "wait_s": 0.5, "clock_skew_s": 0}
# AutoID outgrows one read chunk after the first round, so runs read it through their local
# copy (the record list and the changes: docs/run.md, "Reading what changed")
READ_CHUNK = 8


def installation(sb, folder: Path, label: str) -> Path:
    config = sb.write_kit_files(folder, reports_dir=folder / "reports")
    text = config.read_text().replace(
        "timeout_s = 10", f"timeout_s = 2\nread_chunk_records = {READ_CHUNK}"
    )
    table = "".join(
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n"
        for k, v in {**LEASE, "installation": label}.items()
    )
    config.write_text(text + "[lease]\n" + table)
    return config


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [AUTOID, "run", "--config", str(config), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group (the kernel has a session of its own)
    )


def kill(run: subprocess.Popen, *, kernel: bool) -> None:
    """SIGKILL ``autoid run``'s process group; with ``kernel`` its notebook kernel too (a
    session of its own), as systemd stops a unit's control group. Without, the kernel lives on
    for about a second, still sending, as after `kill -9` of the autoid process alone."""
    if kernel:
        for child in children(run.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def live_tickets(sb) -> list[dict]:
    rows = sb.rows("autoid", filter_logic=f"[autoid_project_name] = '{LEASE_PROJECT}'")
    return [r for r in rows if r["autoid_hash"] == "live"]


def assert_invariants(sb) -> None:
    rows = [
        (r["autoid_project_name"], r["autoid_hash"], r["autoid_value"])
        for r in sb.rows("autoid")
        if not is_kit_project_name(r["autoid_project_name"])  # tickets, each copy's mark
    ]
    assert max(Counter((p, h) for p, h, _ in rows).values(), default=1) == 1, "two IDs"
    assert max(Counter((p, v) for p, _, v in rows).values(), default=1) == 1, "shared ID"
    requests = Counter(
        r["study_instance_uid"]
        for r in sb.rows("incoming")
        if r.get("redcap_repeat_instrument") == "transfers" and r["transfer_project_name"]
    )
    assert max(requests.values(), default=1) == 1, "a study got two transfer requests"


def add_studies(sb, rng: random.Random, round_no: int, patients: list[str]) -> None:
    rows = []
    for k in range(rng.randint(10, 30)):
        project = rng.choice(sorted(PROJECTS))
        if patients and rng.random() < 0.3:
            patient = rng.choice(patients)  # a known patient: reuse, never a second ID
        else:
            patient = f"PAT-{round_no}-{k}"
            patients.append(patient)
        rows.append(
            {
                "study_instance_uid": f"1.2.826.{round_no}.{k}",
                "study_aetitle_addressed": PROJECTS[project][0],
                "study_patient_id": patient,
                "study_date": "20261127",
            }
        )
    sb.add_rows("incoming", rows)


def play(sb, tmp_path: Path, rounds: int, seed: int) -> dict[str, Counter]:
    sb.add_rows(
        "projects",
        [
            project(str(i), name, ae, pattern)
            for i, (name, (ae, pattern)) in enumerate(sorted(PROJECTS.items()), start=1)
        ],
    )
    configs = [installation(sb, tmp_path / name, name) for name in ("A", "B")]
    rng = random.Random(seed)
    patients: list[str] = []
    outcomes = {name: Counter() for name in ("A", "B")}
    for round_no in range(rounds):
        add_studies(sb, rng, round_no, patients)
        runs = [start(config) for config in configs]
        victim = None if round_no == 0 else rng.choice([None, 0, 1, 0, 1])  # 0: both finish
        how = rng.choice(["random", "holding"])
        kernel = rng.random() < 0.7  # mostly the whole unit; sometimes autoid alone
        if victim is not None and how == "random":
            time.sleep(rng.uniform(0.5, 5.0))
            kill(runs[victim], kernel=kernel)
        elif victim is not None:  # the moment its ticket is in REDCap
            deadline = time.monotonic() + 15
            label = "AB"[victim]
            while time.monotonic() < deadline and runs[victim].poll() is None:
                if any(f"installation={label};" in t["autoid_value"] for t in live_tickets(sb)):
                    time.sleep(rng.uniform(0, 0.3))
                    kill(runs[victim], kernel=kernel)
                    break
                time.sleep(0.02)
        for name, run in zip("AB", runs, strict=True):
            _, err = run.communicate(timeout=120)
            assert run.returncode in (0, 1, 3, -signal.SIGKILL), err
            outcomes[name][run.returncode] += 1
            assert "Traceback" not in err, err
        assert_invariants(sb)
    return outcomes


def final_check(sb, tmp_path: Path) -> None:
    time.sleep(LEASE["expiry_s"])  # a killed holder's ticket blocks no longer than this
    final = subprocess.run(
        [AUTOID, "run", "--config", str(tmp_path / "A" / "autoid.toml"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 0, final.stderr
    assert_invariants(sb)
    ids = {
        (r["autoid_project_name"], r["autoid_hash"]): r["autoid_value"] for r in sb.rows("autoid")
    }
    held = {
        r["study_instance_uid"]: (r["transfer_project_name"], r["transfer_name"])
        for r in sb.rows("incoming")
        if r.get("redcap_repeat_instrument") == "transfers" and r["transfer_project_name"]
    }
    by_ae = {ae: name for name, (ae, _) in PROJECTS.items()}
    for study in sb.rows("incoming", fields=["study_instance_uid", "study_aetitle_addressed",
                                             "study_patient_id"]):  # fmt: skip
        if study.get("redcap_repeat_instrument"):
            continue
        project = by_ae[study["study_aetitle_addressed"]]
        expected = ids[(project, sha512_hex(study["study_patient_id"]))]
        assert held[study["study_instance_uid"]] == (project, expected)
    assert live_tickets(sb) == []


def reads_of_changes(tmp_path: Path) -> int:
    """How many recorded runs of either installation read AutoID through the local copy."""
    import json

    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("[AB]/reports/*/summary.json")]
    reads = [(s.get("table_reads") or {}).get("autoid", "") for s in summaries]
    return sum(read.startswith("changes since") for read in reads)


@pytest.mark.slow
def test_two_installations_short(sandbox, tmp_path):
    outcomes = play(sandbox, tmp_path, rounds=3, seed=14)
    final_check(sandbox, tmp_path)
    assert sum(sum(c.values()) for c in outcomes.values()) == 6
    assert reads_of_changes(tmp_path) >= 1


@pytest.mark.installations
def test_two_installations_long(sandbox, tmp_path):
    outcomes = play(sandbox, tmp_path, rounds=16, seed=1414)
    final_check(sandbox, tmp_path)
    print(outcomes, "runs that read changes only:", reads_of_changes(tmp_path))
    assert reads_of_changes(tmp_path) >= 8
