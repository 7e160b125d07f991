"""Echo the kernel's run.log on the command's stderr as the lines are written.

The run's own work happens inside the notebook kernel, whose lines go to ``run.log``; without
this, a cron log sits on the notebook's start during a REDCap outage while the kernel retries.
``follow_log`` runs a small thread that reads new complete lines of ``run.log`` and passes
each to a logger of the parent, at its level, as one line (continuation lines of a
traceback stay in run.log). The parent's handler adds its own time stamp and escapes the text.
Error lines are not echoed: an error ends the run, and the command's outcome line names it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path

# run.log's line format (records.notebook_run._log_to_file): "<asctime> LEVEL name: message"
_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<message>.*)$"
)
_POLL_S = 0.2


def parse_log_line(line: str) -> tuple[int, str, str] | None:
    """``(level, logger name, message)`` of a run.log line; None for a continuation line."""
    match = _LINE.match(line)
    if not match:
        return None
    level = logging.getLevelName(match["level"])
    return (level if isinstance(level, int) else logging.INFO), match["name"], match["message"]


@contextlib.contextmanager
def follow_log(path: Path) -> Iterator[None]:
    """While the block runs (and once more at its end), echo ``path``'s new lines to the
    parent's logger of the same name (only the kit's ``autoid.*`` loggers)."""
    stop = threading.Event()
    follower = _Follower(path)
    thread = threading.Thread(target=follower.run, args=(stop,), name="run.log", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class _Follower:
    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(_POLL_S):
            self.read()
        self.read()

    def read(self) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:  # not written yet
            return
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for raw in lines:
            parsed = parse_log_line(raw.decode("utf-8", "replace"))
            if parsed is None or not parsed[1].startswith("autoid") or parsed[0] >= logging.ERROR:
                continue  # the run's error is the command's outcome line; its frames stay here
            level, name, message = parsed
            logging.getLogger(name).log(level, "%s", message)
