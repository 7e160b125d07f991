"""Where the last successful live run's window ended, kept beside the reports.

The run window reaches back to it after an outage (``autoid_lib.window``). It lives in its own
small file, not only in run folders, because retention may remove every folder of a long outage's
last success; a site that upgrades without the file is served by its newest successful live
run's ``summary.json``.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from autoid_lib.records.folders import read_summary, run_folders

log = logging.getLogger("autoid.run")

FILE_NAME = "last-success.json"
_TIME = "%Y-%m-%d %H:%M:%S"


def read_last_success(reports_dir: Path) -> datetime | None:
    """The window end (REDCap server time) of the last successful live run, if known."""
    try:
        data = json.loads((Path(reports_dir) / FILE_NAME).read_text(encoding="utf-8"))
        return datetime.strptime(data["window_end"], _TIME)
    except FileNotFoundError:
        return _from_run_folders(Path(reports_dir))
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s is unreadable; the window is not extended", FILE_NAME)
        return None


def _from_run_folders(reports_dir: Path) -> datetime | None:
    for folder, parsed in reversed(run_folders(reports_dir)):
        if parsed.mode != "live":
            continue
        summary = read_summary(folder)
        window = (summary or {}).get("window") or {}
        if summary and summary.get("status") in {"ok", "attention"} and window.get("end"):
            try:
                return datetime.strptime(str(window["end"]), _TIME)
            except ValueError:
                continue
    return None


def record_success(reports_dir: Path, window_end: datetime) -> None:
    """Remember a successful live run's window end (atomically, private to the user)."""
    folder = Path(reports_dir)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = folder / f".{FILE_NAME}.{os.getpid()}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump({"window_end": f"{window_end:{_TIME}}"}, out)
    os.replace(temporary, folder / FILE_NAME)
