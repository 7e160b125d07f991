"""A large site on the sandbox: what a run and the audit cost in requests, bytes, time and memory.

The sandbox holds ``--autoid`` AutoID rows (one project) and ``--studies`` Incoming studies,
all old except a 14-day window of ``--window`` studies, ``--new`` of them of new patients and
the rest of patients with an ID. It prints, per case: requests, bytes REDCap sent, the largest
single answer (bytes and records), wall time and the peak RSS of the process doing the work
(a child process, so the sandbox's own memory is not counted). Data answers hold at most
``read_chunk_records`` records; the names-only exports that list them are not chunked. Cases:
a first run (serves the window), a second run after 10 new studies, and the audit over all
history.

    .venv/bin/python benchmarks/bench_large_site.py                 # 20,000 / 100,000
    .venv/bin/python benchmarks/bench_large_site.py --autoid 100000 --studies 500000
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

from autoid_lib.hashing import sha512_hex
from autoid_lib.sandbox import Sandbox

PROJECT = {
    "record_id": "1",
    "project_name": "KNEE",
    "project_use_autoid": "1",
    "project_autoid_aetitle": "KNEE_AE",
    "project_patient_naming": r"K\d{7}",
}
BATCH = 20_000
# the columns of a names-only export (REDCap adds the repeat columns on Incoming)
NAME_COLUMNS = {"record_id", "study_instance_uid", "redcap_repeat_instrument",
                "redcap_repeat_instance"}  # fmt: skip


class Meter:
    """Counts what the sandbox answers: bytes, the largest answer, records in it."""

    def __init__(self, sb: Sandbox):
        self.lock = threading.Lock()
        self.reset()
        answer = sb.app.handle

        def metered(body: bytes):
            status, ctype, data = answer(body)
            records, names_only = 0, False
            if data[:1] == b"[":
                try:
                    rows = json.loads(data)
                    records = len({next(iter(r.values()), "") for r in rows})
                    names_only = all(set(r) <= NAME_COLUMNS for r in rows)
                except (ValueError, AttributeError, TypeError):
                    records = 0
            with self.lock:
                self.requests += 1
                self.bytes += len(data)
                self.largest = max(self.largest, len(data))
                if names_only:
                    self.most_names = max(self.most_names, records)
                else:
                    self.most_records = max(self.most_records, records)
            return status, ctype, data

        sb.app.handle = metered

    def reset(self) -> None:
        self.requests = self.bytes = self.largest = self.most_records = self.most_names = 0


def seed(sb: Sandbox, n_autoid: int, n_studies: int, n_window: int, n_new: int) -> None:
    sb.add_rows("projects", [PROJECT])
    for start in range(0, n_autoid, BATCH):
        sb.add_rows(
            "autoid",
            [
                {
                    "record_id": str(i + 1),
                    "autoid_project_name": "KNEE",
                    "autoid_hash": sha512_hex(f"P{i}"),
                    "autoid_value": f"K{i:07d}",
                    "autoid_method": "1",
                }
                for i in range(start, min(start + BATCH, n_autoid))
            ],
        )
    sb.set_now(datetime.now() - timedelta(days=400))  # history, outside every window
    old = n_studies - n_window
    for start in range(0, old, BATCH):
        sb.add_rows("incoming", studies(start, min(BATCH, old - start), n_autoid))
    sb.set_now(None)
    known = n_window - n_new
    sb.add_rows("incoming", studies(old, known, n_autoid))
    sb.add_rows("incoming", studies(old + known, n_new, n_autoid, new_from=n_autoid))


def studies(first: int, n: int, n_autoid: int, new_from: int | None = None) -> list[dict]:
    return [
        {
            "study_instance_uid": f"1.2.826.0.1.{i}",
            "study_aetitle_addressed": "KNEE_AE",
            "study_patient_id": f"P{new_from + i if new_from is not None else i % n_autoid}",
            "study_date": "20261127",
        }
        for i in range(first, first + n)
    ]


def _child(job: str, config: str, answer) -> None:
    import resource

    logging.disable(logging.ERROR)
    from autoid_lib.config import load_settings

    settings = load_settings(config)
    clock = time.perf_counter()
    if job == "run":
        from autoid_lib.run import run_autoid

        result = run_autoid(settings)
        outcome = result.status if result.error is None else f"{result.error.type}"
        requests = result.api_requests
    else:
        from autoid_lib.audit.checks import AuditSettings, audit
        from autoid_lib.audit.job import read_history
        from autoid_lib.redcap import RedcapGateway

        end = datetime.now().replace(microsecond=0)
        begin = end - timedelta(days=settings.run.lookback_days)
        gateway = RedcapGateway(settings.redcap)
        snapshot, in_window = read_history(gateway, begin, end)
        report = audit(
            snapshot,
            AuditSettings(settings.run.hasher(), begin, settings.run.lookback_days, in_window),
        )
        outcome, requests = report.status, gateway.requests
    elapsed = time.perf_counter() - clock
    answer.put((outcome, requests, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


def measure(job: str, config: Path, meter: Meter) -> dict:
    context = multiprocessing.get_context("spawn")
    answer = context.Queue()
    meter.reset()
    process = context.Process(target=_child, args=(job, str(config), answer))
    process.start()
    process.join()
    if answer.empty():  # the child failed (its traceback is on stderr)
        return {"outcome": f"crashed ({process.exitcode})", "requests": 0, "bytes": meter.bytes,
                "largest": meter.largest, "most_records": meter.most_records,
                "most_names": meter.most_names, "seconds": 0.0, "rss_mb": 0.0}  # fmt: skip
    outcome, requests, elapsed, rss_kb = answer.get()
    return {
        "outcome": outcome,
        "requests": requests,
        "bytes": meter.bytes,
        "largest": meter.largest,
        "most_records": meter.most_records,
        "most_names": meter.most_names,
        "seconds": elapsed,
        "rss_mb": rss_kb / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autoid", type=int, default=20_000)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=2_000)
    parser.add_argument("--new", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autoid-bench-") as folder:
        clock = time.perf_counter()
        sb = Sandbox(seed="empty", db_path=Path(folder) / "sandbox.sqlite").start()
        try:
            seed(sb, args.autoid, args.studies, args.window, args.new)
            seeded = time.perf_counter() - clock
            meter = Meter(sb)
            config = sb.write_kit_files(folder)
            # the sandbox is one Python process: give its whole-table names exports time
            config.write_text(config.read_text().replace("timeout_s = 10", "timeout_s = 120"))
            rows = [("first run", measure("run", config, meter))]
            sb.add_rows("incoming", studies(10**9, 10, args.autoid, new_from=0))
            rows.append(("second run, 10 new studies", measure("run", config, meter)))
            rows.append(("audit, all history", measure("audit", config, meter)))
        finally:
            sb.stop()
    print(
        f"{args.autoid:,} AutoID rows, {args.studies:,} Incoming studies, a 14-day window of "
        f"{args.window:,} studies ({args.new:,} new patients); seeded in {seeded:.0f} s\n"
    )
    print("| case | outcome | requests | MB from REDCap | largest answer MB | most records in "
          "a data answer / a names-only answer | wall s | peak RSS MB |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['outcome']} | {r['requests']} | {r['bytes'] / 1e6:.1f} | "
            f"{r['largest'] / 1e6:.2f} | {r['most_records']:,} / {r['most_names']:,} | "
            f"{r['seconds']:.1f} | "
            f"{r['rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
