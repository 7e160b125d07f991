"""End-to-end time of ``execute_run`` (what ``autoid run`` does) on sandbox data; prints markdown.

Each case starts a sandbox with the demo seed (``n_studies`` studies over 20 days), runs one
live recorded run into a temporary reports folder and splits the wall time into kernel start,
REDCap (read + write + verify), planning, the rest of the notebook, and the HTML export.
Targets: a 10,000-study report under 5 MB, the whole run under 30 s.

    .venv/bin/python benchmarks/bench_run.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from autoid_lib.config import load_settings
from autoid_lib.records.notebook_run import execute_run
from autoid_lib.sandbox import Sandbox

CASES = [("demo", 300, "full"), ("10,000 studies", 10_000, "summary"),
         ("10,000 studies", 10_000, "full")]  # fmt: skip


def bench(n_studies: int, detail: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="autoid-bench-") as folder:
        clock = time.perf_counter()
        sandbox = Sandbox(seed="demo", n_studies=n_studies).start()
        seeded = time.perf_counter() - clock
        try:
            settings = load_settings(
                sandbox.write_kit_files(folder, reports_dir=Path(folder) / "reports")
            )
            clock = time.perf_counter()
            record = execute_run(settings, detail=detail, progress=False)
            total = time.perf_counter() - clock
        finally:
            sandbox.stop()
        s = record.summary
        t = s["timings_s"]
        redcap = sum(t.get(k, 0.0) for k in ("read", "write", "verify"))
        return {
            "status": s["status"],
            "in_window": s["studies_in_window"],
            "transfers": s["transfers_created"],
            "requests": s["api_requests"],
            "seed_s": seeded,
            "total_s": total,
            "kernel_s": t["kernel"],
            "redcap_s": redcap,
            "plan_s": t.get("plan", 0.0),
            "cells_s": t["notebook"] - t["kernel"] - redcap - t.get("plan", 0.0),
            "export_s": t["export"],
            "html_kb": record.report.stat().st_size / 1024,
            "ipynb_kb": record.notebook.stat().st_size / 1024,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the demo data")
    args = parser.parse_args()
    print(
        "| data | detail | studies in window | transfers | API requests | whole run s "
        "| kernel start s | REDCap s | planning s | other cells s | HTML export s "
        "| report.html KB | run.ipynb KB |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, detail in CASES[:1] if args.quick else CASES:
        r = bench(n, detail)
        print(
            f"| {name} | {detail} | {r['in_window']:,} | {r['transfers']:,} | {r['requests']} "
            f"| {r['total_s']:.1f} | {r['kernel_s']:.1f} | {r['redcap_s']:.2f} "
            f"| {r['plan_s']:.2f} | {r['cells_s']:.1f} | {r['export_s']:.2f} "
            f"| {r['html_kb']:,.0f} | {r['ipynb_kb']:,.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
