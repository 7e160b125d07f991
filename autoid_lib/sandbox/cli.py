"""``autoid sandbox``: serve the REDCap-compatible sandbox until Ctrl-C or SIGTERM.

It prints the API URL and each database's token (a local test server: showing its tokens is
the point), and with ``--env-file F`` writes ``export`` lines to F plus token files and a kit
config (``autoid.toml``) next to it, so scripts and the kit can point at it.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--seed", choices=("demo", "empty"), default="demo", help="initial data (default demo)"
    )
    parser.add_argument(
        "--db",
        metavar="FILE",
        default=None,
        help="SQLite file to keep state in (an existing file is reused, not re-seeded); "
        "default: in memory",
    )
    parser.add_argument(
        "--env-file",
        metavar="F",
        default=None,
        help="write export lines to F, and tokens/ plus autoid.toml next to it",
    )
    parser.add_argument(
        "--reports-dir", default=None, help="reports_dir for the written kit config"
    )


def run(args: argparse.Namespace) -> int:
    import signal
    import threading
    from pathlib import Path

    from .server import Sandbox

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    sandbox = Sandbox(seed=args.seed, db_path=args.db, port=args.port, host=args.host)
    try:
        sandbox.start()
        print(f"REDCap sandbox ({args.seed}) listening on {sandbox.url}", flush=True)
        for db, token in sandbox.tokens.items():
            print(f"  token {db:<9} {token}", flush=True)
        if args.env_file:
            env_file = Path(args.env_file).resolve()
            config = sandbox.write_kit_files(
                env_file.parent, reports_dir=args.reports_dir, env_file=env_file
            )
            print(f"  env file  {env_file}", flush=True)
            print(f"  config    {config}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    print("sandbox stopped", flush=True)
    return 0
