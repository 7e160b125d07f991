"""A large site on the sandbox: what a run and the audit cost in requests, bytes, time and memory.

The sandbox holds ``--autoid`` AutoID rows (one project) and ``--studies`` Incoming studies,
all old except a 14-day window of ``--window`` studies, ``--new`` of them of new patients and
the rest of patients with an ID. Each case runs in a child process (so the sandbox's own memory
is not counted) and prints: requests and bytes REDCap sent, each split between the AutoID and
Projects databases and Incoming (which holds the transfers), the AutoID+Projects bytes as a
share of one full read of those two tables, the largest single answer (bytes) and the most
records in a data answer and in a names-only answer, wall time and the child's peak RSS.
Cases: the reference full read; a first run (serves the window); a second run after 10 new
studies; a third run with nothing new (the common case: most scheduled runs); a run after
the daily full re-read (``run_autoid(full_read=True)`` once the kit has the local cache, else an
ordinary run labelled "no cache yet"); the audit over all history.
The counts are the sandbox's own (``Sandbox.request_counts``/``answer_bytes``): what REDCap
saw. Then the issue's targets, each met or not.

    .venv/bin/python benchmarks/bench_large_site.py                 # 20,000 / 100,000
    .venv/bin/python benchmarks/bench_large_site.py --autoid 100000 --studies 500000
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
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
TABLES = ("autoid", "projects")  # what the kit's local cache keeps (issue 13, item 3)
GB = 2 * 1024  # the audit's memory target, MB


class Meter:
    """What the sandbox answers: the largest answer and the most records in one. Requests and
    bytes per database come from the sandbox's own counters."""

    def __init__(self, sb: Sandbox):
        self.sb = sb
        self.lock = threading.Lock()
        self.largest = self.most_records = self.most_names = 0
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
                except (ValueError, AttributeError, TypeError, StopIteration):
                    records = 0
            with self.lock:
                self.largest = max(self.largest, len(data))
                if names_only:
                    self.most_names = max(self.most_names, records)
                else:
                    self.most_records = max(self.most_records, records)
            return status, ctype, data

        sb.app.handle = metered  # type: ignore[method-assign]

    def reset(self) -> None:
        self.sb.reset_counts()
        self.largest = self.most_records = self.most_names = 0

    def totals(self) -> dict[str, int]:
        """Requests and bytes so far, split AutoID+Projects vs Incoming (and the rest)."""
        out = dict.fromkeys(("req_ap", "req_inc", "bytes_ap", "bytes_inc"), 0)
        for (database, *_), n in self.sb.request_counts().items():
            out["req_ap" if database in TABLES else "req_inc"] += n
        for (database, *_), n in self.sb.answer_bytes().items():
            out["bytes_ap" if database in TABLES else "bytes_inc"] += n
        return out


def seed(sb: Sandbox, n_autoid: int, n_studies: int, n_window: int, n_new: int) -> None:
    sb.set_now(datetime.now() - timedelta(days=400))  # history, outside every window
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
    from autoid_lib.redcap.gateway import RedcapGateway

    settings = load_settings(config)
    note = ""
    clock = time.perf_counter()
    if job == "reference":  # one full read of the tables the cache keeps
        gateway = RedcapGateway(settings.redcap)
        gateway.project_records()
        gateway.autoid_table()
        outcome = "ok"
    elif job in ("run", "run after full re-read"):
        from autoid_lib.run import run_autoid

        result = run_autoid(settings, full_read=job != "run")
        reads = "; ".join(f"{name}: {how}" for name, how in result.table_reads.items())
        note = reads.replace("|", "/")
        outcome = str(result.status) if result.error is None else f"{result.error.type}"
    else:
        from autoid_lib.audit.job import audit_history  # what autoid audit runs: streamed

        end = datetime.now().replace(microsecond=0)
        begin = end - timedelta(days=settings.run.lookback_days)
        gateway = RedcapGateway(settings.redcap)
        hasher = settings.run.hasher()
        report = audit_history(gateway, hasher, begin, end, settings.run.lookback_days)
        outcome = str(report.status)
    elapsed = time.perf_counter() - clock
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer.put((outcome, note, elapsed, rss_kb))


def measure(job: str, config: Path, meter: Meter) -> dict:
    context = multiprocessing.get_context("spawn")
    answer = context.Queue()
    meter.reset()
    process = context.Process(target=_child, args=(job, str(config), answer))
    process.start()
    process.join()
    if answer.empty():  # the child failed (its traceback is on stderr)
        outcome, note, elapsed, rss_kb = f"crashed ({process.exitcode})", "", 0.0, 0
    else:
        outcome, note, elapsed, rss_kb = answer.get()
    return {
        "outcome": outcome,
        "note": note,
        **meter.totals(),
        "largest": meter.largest,
        "most_records": meter.most_records,
        "most_names": meter.most_names,
        "seconds": elapsed,
        "rss_mb": rss_kb / 1024,
    }


def table(rows: list[tuple[str, dict]], reference: int) -> list[str]:
    lines = [
        "| case | outcome | requests: AutoID+Projects / Incoming | MB sent: AutoID+Projects / "
        "Incoming | AutoID+Projects vs a full read | largest answer MB | most records in a data "
        "answer / a names-only answer | wall s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        label = name
        share = f"{100 * r['bytes_ap'] / reference:.1f} %" if reference else "-"
        lines.append(
            f"| {label} | {r['outcome']} | {r['req_ap']} / {r['req_inc']} | "
            f"{r['bytes_ap'] / 1e6:.2f} / {r['bytes_inc'] / 1e6:.2f} | {share} | "
            f"{r['largest'] / 1e6:.2f} | {r['most_records']:,} / {r['most_names']:,} | "
            f"{r['seconds']:.1f} | {r['rss_mb']:.0f} |"
        )
    lines.append("")
    lines += [f"- {name}: {r['note']}" for name, r in rows if r["note"]]
    return lines


def targets(cases: dict[str, dict], reference: int, chunk: int) -> list[str]:
    """The issue's "Done when" targets, each met or not (numbers from the table)."""
    second, audit_ = cases["second run, 10 new studies"], cases["audit, all history"]
    share = second["bytes_ap"] / reference if reference else 1.0
    requests = second["req_ap"] + second["req_inc"]
    most = max(r["most_records"] for r in cases.values())
    checks = [
        (f"second run: AutoID+Projects send under 5 % of a full read ({100 * share:.1f} %)",
         share < 0.05),
        (f"second run: at most 7 requests ({requests})", requests <= 7),
        (f"no data answer holds more than read_chunk_records = {chunk:,} records ({most:,})",
         most <= chunk),
        (f"audit: peak RSS under 2 GB ({audit_['rss_mb']:.0f} MB)", audit_["rss_mb"] < GB),
    ]  # fmt: skip
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def machine() -> str:
    cpus = os.cpu_count()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {cpus} CPUs, {memory:.0f} GiB RAM, "
        f"Python {platform.python_version()}, {datetime.now():%Y-%m-%d}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autoid", type=int, default=20_000)
    parser.add_argument("--studies", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=2_000)
    parser.add_argument("--new", type=int, default=200)
    args = parser.parse_args()
    from autoid_lib.config import load_settings

    with tempfile.TemporaryDirectory(prefix="autoid-bench-") as folder:
        clock = time.perf_counter()
        sb = Sandbox(seed="empty", db_path=Path(folder) / "sandbox.sqlite").start()
        try:
            seed(sb, args.autoid, args.studies, args.window, args.new)
            seeded = time.perf_counter() - clock
            meter = Meter(sb)
            config = sb.write_kit_files(folder)
            # a names-only export of all history is tens of MB from a one-process sandbox
            config.write_text(config.read_text().replace("timeout_s = 10", "timeout_s = 120"))
            redcap = load_settings(config).redcap
            rows = [
                (
                    "reference: one full read of AutoID + Projects",
                    measure("reference", config, meter),
                )
            ]
            rows.append(("first run", measure("run", config, meter)))
            sb.add_rows("incoming", studies(10**9, 10, args.autoid, new_from=0))
            rows.append(("second run, 10 new studies", measure("run", config, meter)))
            rows.append(("third run, nothing new", measure("run", config, meter)))
            sb.add_rows("incoming", studies(10**9 + 10, 10, args.autoid, new_from=0))
            full = "run after the daily full re-read, 10 new studies"
            rows.append((full, measure("run after full re-read", config, meter)))
            rows.append(("audit, all history", measure("audit", config, meter)))
        finally:
            sb.stop()
        total = time.perf_counter() - clock
    reference = rows[0][1]["bytes_ap"]
    print(
        f"{args.autoid:,} AutoID rows, {args.studies:,} Incoming studies, a 14-day window of "
        f"{args.window:,} studies ({args.new:,} new patients); seeded in {seeded:.0f} s, "
        f"{total:.0f} s in all\n{machine()}; read_chunk_records = {redcap.read_chunk_records:,}, "
        f"max_requests_per_minute = {redcap.max_requests_per_minute}\n"
    )
    print("\n".join(table(rows, reference)))
    print("\nTargets (issue 13):")
    print("\n".join(targets(dict(rows), reference, redcap.read_chunk_records)))


if __name__ == "__main__":
    main()
