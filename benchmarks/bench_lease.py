"""REDCap requests per run with the lease, counted by the sandbox; prints a markdown table.

Each case is one ``run_autoid`` against a fresh sandbox, set up as the case says; the sandbox
counts every API request by kind. A run whose plan writes nothing takes no lease and writes
nothing: 3 requests with a warm local copy and small tables (docs/run.md, "Quiet runs"). A run
that writes adds its ticket, the check of REDCap's clock on that ticket (docs/run.md, "REDCap's
clock"), AutoID and the planned studies' transfers read again, its writes and their re-reads,
the copy's mark and the release; one more read when two runs meet.

Then the long write: 10,000 new transfer requests (5,000 studies of known patients, 5,000 of new
ones) with the sandbox's import cost at REDCap 15.7.6's measured 8 ms a row, lease on: the write
time against the ticket's life, and how many times the run renewed its ticket (docs/run.md,
"Renewal"). About 2 minutes a case.

    .venv/bin/python benchmarks/bench_lease.py [--no-long-writes]
"""

from __future__ import annotations

import logging
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from autoid_lib.config import load_settings
from autoid_lib.hashing import sha512_hex
from autoid_lib.lease import LIVE, lease_settings, ticket_fields
from autoid_lib.run import run_autoid
from autoid_lib.sandbox import Sandbox

PROJECT = {
    "record_id": "1",
    "project_name": "KNEE",
    "project_use_autoid": "1",
    "project_autoid_aetitle": "KNEE_AE",
    "project_patient_naming": r"K\d{4}",
}


def studies(first: int, n: int, patient_of=lambda i: f"P{i}") -> list[dict]:
    return [
        {
            "study_instance_uid": f"1.2.{i}",
            "study_aetitle_addressed": "KNEE_AE",
            "study_patient_id": patient_of(i),
            "study_date": "20261127",
        }
        for i in range(first, first + n)
    ]


def plant(sb: Sandbox, started: datetime) -> None:
    fields = ticket_fields(
        run_id="x", installation="other", host="other-host", pid=1, started=started, expiry_s=600
    )
    sb.add_rows("autoid", [{"record_id": "9999", **fields, "autoid_hash": LIVE}])


def plant_killed_run(sb: Sandbox, recorded: bool) -> None:
    """A live ticket as a SIGKILLed run of this installation on this machine leaves it; with
    ``recorded`` its LeaseState entry says it last sent a request an hour ago."""
    import socket
    import subprocess

    from autoid_lib.redcap.lease import LeaseState, node_id, state_path

    settings = load_settings(Path(sb.store.get_meta("bench_config")))
    label = lease_settings(settings.lease, timeout_s=settings.redcap.timeout_s).installation
    gone = subprocess.Popen(["true"])
    gone.wait()
    fields = ticket_fields(
        run_id="killed",
        installation=label,
        host=socket.gethostname(),
        pid=gone.pid,
        started=datetime.now(UTC) - timedelta(minutes=5),
        expiry_s=1800,
        node=node_id(),
    )
    sb.add_rows("autoid", [{"record_id": "9998", **fields}])
    if recorded:
        sent = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
        LeaseState(state_path(settings.run.lock_file)).note_run(
            "killed", record="9998", pid=gone.pid, node=node_id(), sent=sent
        )


def case(name: str, setup, lease: dict | None = None, dry: bool = False, runs: int = 1) -> tuple:
    with tempfile.TemporaryDirectory(prefix="autoid-bench-") as folder:
        sb = Sandbox(seed="empty").start()
        try:
            sb.add_rows("projects", [PROJECT])
            config = sb.write_kit_files(Path(folder))
            sb.store.set_meta("bench_config", str(config))
            table = {"wait_s": 0.1, **(lease or {})}
            text = "".join(f"{k} = {_toml(v)}\n" for k, v in table.items())
            config.write_text(config.read_text() + "[lease]\n" + text)
            token = setup(sb) if setup else None
            if isinstance(token, str):
                (Path(folder) / "tokens" / "autoid.token").write_text(token)
            settings = load_settings(config)
            for _ in range(runs - 1):
                run_autoid(settings)
            sb.reset_counts()
            result = run_autoid(settings, dry_run=dry)
            kinds = sb.request_counts()
            outcome = result.error.type if result.error else "ok"
            outcome = ", ".join([outcome, *(a.kind for a in result.run_anomalies)])
            return (name, sum(kinds.values()), _kinds(kinds), outcome)
        finally:
            sb.stop()


def _toml(value) -> str:
    return str(value).lower() if isinstance(value, bool) else repr(value)


def _kinds(counts) -> str:
    short = {"export": "read", "import": "write", "delete": "delete"}
    parts = sorted(
        f"{db} {short.get(action, action)} ×{n}" for (db, _, action), n in counts.items()
    )
    return ", ".join(parts)


def main() -> None:
    logging.disable(logging.ERROR)  # the exit-3 cases log their refusal

    def new(n):
        def setup(sb):
            sb.add_rows("incoming", studies(0, n))

        return setup

    def later_ticket(sb):
        plant(sb, datetime.now(UTC) + timedelta(seconds=60))

    def earlier_ticket(sb):
        plant(sb, datetime.now(UTC) - timedelta(seconds=60))

    def no_delete(sb):
        sb.add_rows("incoming", studies(0, 50))
        return sb.add_token("autoid", delete=False)

    rows = [
        case("nothing new, lease off", None, {"enabled": False}),
        case("nothing new", None),
        case("dry run (no lease)", new(50), dry=True),
        case("50 new studies, 50 new patients, lease off", new(50), {"enabled": False}),
        case("50 new studies, 50 new patients", new(50)),
        case("500 new studies, 500 new patients", new(500)),
        case("another run holds the lease (exit 3)", earlier_ticket),
        case("a later ticket is live: wait, read again, exit 3", later_ticket),
        case("no delete right, first run (finds out)", no_delete),
    ]

    def no_delete_new(sb):
        return sb.add_token("autoid", delete=False)

    rows.append(case("no delete right, later runs", no_delete_new, runs=3))

    def known_patients(sb):
        sb.add_rows("incoming", studies(0, 50))
        settings = load_settings(Path(sb.store.get_meta("bench_config")))
        run_autoid(settings)
        sb.add_rows("incoming", studies(50, 50, patient_of=lambda i: f"P{i - 50}"))

    rows.insert(6, case("50 new studies, all of known patients", known_patients))

    def warm_new(sb):  # a site whose local copy is warm: an earlier run served 50 studies
        sb.add_rows("incoming", studies(0, 50))
        run_autoid(load_settings(Path(sb.store.get_meta("bench_config"))))
        sb.add_rows("incoming", studies(50, 50))

    rows[2:2] = [
        case("nothing new, warm copy (the second run)", new(50), runs=2),
        case("nothing new, warm copy, lease off", new(50), {"enabled": False}, runs=2),
    ]
    rows.insert(8, case("50 new studies of new patients, warm copy", warm_new))

    def killed(recorded: bool):
        def setup(sb):
            sb.add_rows("incoming", studies(0, 50))
            plant_killed_run(sb, recorded)

        return setup

    rows.append(case("a killed run of this installation left its ticket", killed(True)))
    rows.append(case("a killed run of this machine, not recorded: wait, read again", killed(False)))

    def refused_release(sb):
        sb.add_rows("incoming", studies(0, 50))
        sb.inject_fault("http500", database="autoid", content="record", action="delete")

    rows.append(case("50 new studies, the release fails", refused_release))

    print("| case | requests | by kind | outcome |")
    print("|---|---|---|---|")
    for name, total, kinds, outcome in rows:
        print(f"| {name} | {total} | {kinds} | {outcome} |")
    print()
    if "--no-long-writes" not in sys.argv:
        long_writes()


ROW_COST_S = 0.008  # REDCap 15.7.6, 2 vCPU: 15-19 s per 2,000 imported rows
WIDE = {**PROJECT, "project_patient_naming": r"K\d{5}"}


def long_writes() -> None:
    """10,000 new transfer requests at 8 ms an imported row, with the default ticket life and
    with a short one: write time vs ticket life, renewals."""
    print("| ticket life (expiry_s) | rows imported | write | whole run | renewals | "
          "requests (lease: ticket, renewals, release) | outcome |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for lease in ({}, {"expiry_s": 60, "clock_skew_s": 5}):
        print(long_write(lease), flush=True)


def long_write(lease: dict) -> str:
    with tempfile.TemporaryDirectory(prefix="autoid-bench-") as folder:
        sb = Sandbox(seed="empty", import_row_cost_s=ROW_COST_S).start()
        try:
            sb.add_rows("projects", [WIDE])
            known = [
                {
                    "record_id": str(i + 1),
                    "autoid_project_name": "KNEE",
                    "autoid_hash": sha512_hex(f"P{i}"),
                    "autoid_value": f"K{i:05d}",
                    "autoid_method": "1",
                }
                for i in range(5000)
            ]
            sb.add_rows("autoid", known)
            sb.add_rows("incoming", studies(0, 10000))  # P0…P4999 known, P5000… new
            config = sb.write_kit_files(Path(folder))
            text = "".join(f"{k} = {_toml(v)}\n" for k, v in lease.items())
            config.write_text(config.read_text() + "[lease]\n" + text)
            settings = load_settings(config)
            life = lease_settings(settings.lease, timeout_s=settings.redcap.timeout_s).expiry_s
            sb.reset_counts()
            result = run_autoid(settings)
            kinds = sb.request_counts()
            lease_requests = kinds[("autoid", "record", "delete")] + 1 + result.lease["renewals"]
            plan = result.plan
            rows = len(plan.autoid_writes) + len(plan.transfers) if plan else 0
            outcome = result.error.type if result.error else "ok"
            return (
                f"| {life:,.0f} s | {rows:,} | {result.timings.get('write', 0):.0f} s | "
                f"{result.duration_s:.0f} s | {result.lease['renewals']} | "
                f"{sum(kinds.values())} ({lease_requests}) | {outcome} |"
            )
        finally:
            sb.stop()


if __name__ == "__main__":
    main()
