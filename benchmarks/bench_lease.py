"""REDCap requests per run with the lease, counted by the sandbox; prints a markdown table.

Each case is one ``run_autoid`` against a fresh sandbox, set up as the case says; the sandbox
counts every API request by kind. Without the lease (``[lease] enabled = false``) a run makes
6 requests when nothing is new and at most 11 (docs/run.md: each table read is a names-only
export and one record-list chunk per read_chunk_records); the lease adds its ticket, the check
of REDCap's clock on that ticket (docs/run.md, "REDCap's clock") and its release, one more read
when two runs meet, and the second line of defence reads AutoID once
before the transfers (the verify step then reuses that read).

    .venv/bin/python benchmarks/bench_lease.py
"""

from __future__ import annotations

import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from autoid_lib.config import load_settings
from autoid_lib.lease import LIVE, ticket_fields
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

    print("| case | requests | by kind | outcome |")
    print("|---|---|---|---|")
    for name, total, kinds, outcome in rows:
        print(f"| {name} | {total} | {kinds} | {outcome} |")


if __name__ == "__main__":
    main()
