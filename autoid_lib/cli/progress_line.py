"""A long read's progress as one line rewritten in place, when stderr is a terminal.

The gateway logs progress to ``autoid.progress`` (``redcap._Progress``); the kernel's lines
reach the command's logger through ``records.log_follow``. In a cron log each is an ordinary
time-stamped line. On a terminal this handler draws it over the previous one (carriage return,
erase to the end of line) and erases it before the next ordinary line, so a 100-chunk read is
one moving line, not a screenful.
"""

from __future__ import annotations

import logging
from typing import TextIO

PROGRESS_LOGGER = "autoid.progress"
_ERASE = "\r\x1b[K"


class ProgressLineHandler(logging.StreamHandler):
    """``StreamHandler`` whose ``autoid.progress`` lines stay on one line on a terminal."""

    def __init__(self, stream: TextIO, terminal: bool):
        super().__init__(stream)
        self.terminal = terminal
        self._drawn = False  # a progress line is on screen, without its newline

    def emit(self, record: logging.LogRecord) -> None:
        if not self.terminal:
            super().emit(record)
            return
        try:
            text = self.format(record)
            if record.name == PROGRESS_LOGGER:
                self.stream.write(_ERASE + text.split("\n", 1)[0])
                self._drawn = True
            else:
                self.stream.write((_ERASE if self._drawn else "") + text + self.terminator)
                self._drawn = False
            self.flush()
        except Exception:
            self.handleError(record)
