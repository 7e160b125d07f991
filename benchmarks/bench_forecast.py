"""What the exhaustion forecast costs a run: REDCap requests and time on the 100,000-study plan.

Prints two markdown tables: the requests a dry run against the demo sandbox makes (the
forecast adds none: the same three exports as before), and the time of ``project_forecasts``
next to the time of ``plan`` for 1k/10k/100k incoming studies (10 projects, 100k AutoID rows,
every fifth study already transferred with a request date).

    .venv/bin/python benchmarks/bench_forecast.py
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_plan import NOW, build

from autoid_lib.config import load_settings
from autoid_lib.forecast import project_forecasts
from autoid_lib.hashing import PatientHasher
from autoid_lib.plan import PlanSettings, plan
from autoid_lib.run import run_autoid
from autoid_lib.sandbox import Sandbox


def requests_table() -> None:
    with Sandbox(seed="demo").start() as sb, tempfile.TemporaryDirectory() as folder:
        settings = load_settings(sb.write_kit_files(folder))
        sb.reset_counts()
        result = run_autoid(settings, dry_run=True)
        counts = sb.request_counts()
    print("| dry run on the demo seed | requests |")
    print("|---|---|")
    for (database, content, action), n in sorted(counts.items()):
        print(f"| {database} {content} {action} | {n} |")
    print(
        f"| **total** (forecasts for {len(result.forecasts)} projects) | {sum(counts.values())} |"
    )


def timing_table() -> None:
    print("\n| incoming studies | plan | forecast | forecast / plan |")
    print("|---|---|---|---|")
    settings = PlanSettings(PatientHasher(), "2026-11-28 08:00", rng=random.Random(1))
    for n_studies in (1_000, 10_000, 100_000):
        snapshot = build(n_studies, 100_000)
        dated = tuple(
            replace(
                s,
                transfers=tuple(
                    replace(t, requested_date=f"{NOW - timedelta(hours=i % 300):%Y-%m-%d %H:%M}")
                    for t in s.transfers
                ),
            )
            for i, s in enumerate(snapshot.studies)
        )
        snapshot = replace(snapshot, studies=dated, window_begin=NOW - timedelta(days=14))
        clock = time.perf_counter()
        planned = plan(snapshot, settings)
        plan_s = time.perf_counter() - clock
        clock = time.perf_counter()
        requests = [
            (t.project_name, t.name, t.requested_date)
            for s in snapshot.studies
            for t in s.transfer_requests
        ] + [(t.project_name, t.pseudonym, t.requested_date) for t in planned.transfers]
        project_forecasts(
            planned.projects,
            requests,
            (),
            now=NOW.replace(tzinfo=UTC),
            window_begin=snapshot.window_begin,
            window_end=NOW,
            window_days=56.0,
        )
        forecast_s = time.perf_counter() - clock
        print(
            f"| {n_studies:,} | {plan_s:.2f} s | {forecast_s * 1000:.0f} ms | "
            f"{forecast_s / plan_s:.1%} |"
        )


if __name__ == "__main__":
    print(f"autoid forecast benchmark, {datetime.now(UTC):%Y-%m-%d}\n")
    requests_table()
    timing_table()
