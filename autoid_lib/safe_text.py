"""Text from a server, made safe to print or log: no control characters reach a terminal.

A REDCap error message or a Projects value can hold ANSI escape sequences or CR/LF, which
would recolour a terminal, hide what came before, or forge a line in ``run.log``. Every
control character (C0, DEL, C1, and the Unicode line/paragraph separators) is shown as an
escape such as ``\\x1b`` instead.
"""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: object) -> str:
    """``text`` with every control character escaped (tabs too: they can forge columns)."""
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), str(text))


class PrintableFormatter(logging.Formatter):
    """A log formatter whose lines cannot be forged: control characters in a message are
    escaped, and every line after the first (a traceback, a multi-line message) is indented, so
    nothing a server sends can start a line that looks like the kit's own."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n    ".join(printable(line) for line in super().format(record).split("\n"))
