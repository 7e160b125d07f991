"""Run every benchmark in turn and print their tables (``make bench``).

Each benchmark is its own script so it can be run alone; this runner only sequences them.
Pass ``--quick`` to skip the largest inputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = (
    "bench_idgen.py", "bench_plan.py", "bench_run.py", "bench_lease.py", "bench_forecast.py",
    "bench_large_site.py",
)  # fmt: skip
QUICK_FLAG = {"bench_plan.py": "--quick", "bench_run.py": "--quick"}


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    here = Path(__file__).resolve().parent
    failed = 0
    for name in BENCHMARKS:
        print(f"\n## {name}\n", flush=True)
        args = [sys.executable, str(here / name)]
        if quick and name in QUICK_FLAG:
            args.append(QUICK_FLAG[name])
        failed += subprocess.run(args, check=False).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
