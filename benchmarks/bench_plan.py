"""Planning time for growing inputs: does the pure core stay linear?

Prints a markdown table: plan time for 1k/10k/100k incoming studies against 10k/100k/1M AutoID
rows (10 projects, half the studies from known patients). Target: linear growth, 100k studies
x 1M rows under 10 s on the project's 2-core machine.

    .venv/bin/python benchmarks/bench_plan.py [--quick]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime

from autoid_lib.hashing import PatientHasher, sha512_hex
from autoid_lib.plan import PlanSettings, plan
from autoid_lib.snapshot import AutoIdRow, ExistingTransfer, IncomingStudy, ProjectRecord, Snapshot

PROJECTS = 10
NOW = datetime(2026, 11, 28, 8, 0)


def build(n_studies: int, n_rows: int) -> Snapshot:
    rng = random.Random(n_studies * 7 + n_rows)
    projects = tuple(
        ProjectRecord(str(p), f"PRJ{p}", True, f"AE{p}", rf"P{p}_\d{{7}}") for p in range(PROJECTS)
    )
    per_project = n_rows // PROJECTS
    rows = tuple(
        AutoIdRow(
            str(i),
            f"PRJ{i % PROJECTS}",
            sha512_hex(f"KNOWN{i}"),
            f"P{i % PROJECTS}_{i // PROJECTS:07d}",
        )
        for i in range(per_project * PROJECTS)
    )
    studies = []
    for i in range(n_studies):
        known = i % 2 == 0
        patient = f"KNOWN{rng.randrange(len(rows))}" if known else f"NEW{i // 3}"
        project = int(patient[5:]) % PROJECTS if known else i % PROJECTS
        done = (ExistingTransfer(1, f"PRJ{project}", "x"),) if i % 5 == 0 else ()
        studies.append(IncomingStudy(f"1.2.{i}", f"AE{project}", patient, "20261120", done))
    return Snapshot(projects, tuple(studies), rows, NOW, NOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the 1M-row column")
    args = parser.parse_args()
    row_counts = [10_000, 100_000] if args.quick else [10_000, 100_000, 1_000_000]
    settings = PlanSettings(PatientHasher(), "2026-11-28 08:00", rng=random.Random(1))
    print("| studies \\ AutoID rows | " + " | ".join(f"{r:,}" for r in row_counts) + " |")
    print("|---|" + "---|" * len(row_counts))
    for n_studies in (1_000, 10_000, 100_000):
        cells = []
        for n_rows in row_counts:
            snapshot = build(n_studies, n_rows)
            start = time.perf_counter()
            result = plan(snapshot, settings)
            elapsed = time.perf_counter() - start
            cells.append(f"{elapsed:.2f} s ({len(result.transfers):,} transfers)")
        print(f"| {n_studies:,} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
