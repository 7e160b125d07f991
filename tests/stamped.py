"""The commands' stderr lines start with a time stamp; tests read the text after it."""

from __future__ import annotations

import re

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ")


def unstamped(text: str) -> str:
    """``text`` with each line's time stamp removed; fails if a (non-indented) line has none."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("    ") or not line.strip():  # a continuation of the line before
            lines.append(line)
            continue
        assert STAMP.match(line), f"a stderr line without a time stamp: {line!r}"
        lines.append(STAMP.sub("", line, count=1))
    return "".join(lines)
