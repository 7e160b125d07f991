"""The anomaly memory's file beside the reports: ``<reports_dir>/anomalies.json``.

Thin edge of ``autoid_lib.anomaly_memory``: read the previous state, let the pure core compare,
write the new state (atomically, 0600). Only a live run over all projects that did not fail
saves it: a dry run or a ``--projects`` run compares without saving, so it never makes the
next scheduled run's anomalies look old (and its mail quiet). Like last-success.json it lives
outside the run folders, so retention cannot make every anomaly new again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from autoid_lib.anomaly_memory import (
    Changes,
    Memory,
    memory_as_json,
    memory_from_json,
    remember,
)
from autoid_lib.private_files import private_folder, write_private

log = logging.getLogger("autoid.run")

FILE_NAME = "anomalies.json"


def read_memory(reports_dir: Path) -> Memory:
    """The recorded state; a missing file is no memory, an unreadable one is logged."""
    try:
        text = (Path(reports_dir) / FILE_NAME).read_text(encoding="utf-8")
    except FileNotFoundError:
        return Memory()
    except OSError as error:
        log.warning("%s unreadable (%s): every anomaly counts as new", FILE_NAME, error.strerror)
        return Memory()
    try:
        return memory_from_json(json.loads(text))
    except ValueError:
        log.warning("%s is not JSON: every anomaly counts as new", FILE_NAME)
        return Memory()


def remember_run(
    reports_dir: Path, anomalies: Sequence[Mapping[str, Any]], now: datetime, *, save: bool
) -> Changes:
    """Compare this run's anomalies with the recorded state; save the new state if ``save``."""
    memory, changes = remember(read_memory(reports_dir), anomalies, now)
    if save:
        try:
            private_folder(Path(reports_dir))
            text = json.dumps(memory_as_json(memory), indent=1, ensure_ascii=False) + "\n"
            write_private(Path(reports_dir) / FILE_NAME, text)
        except OSError as error:  # the run's work is done; the next run compares with older
            log.warning("%s not written: %s", FILE_NAME, error.strerror)
    return changes
