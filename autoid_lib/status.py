"""Exit statuses: how a run or audit ended, as a number a scheduler can act on.

A library value (the recorded run decides it), printed and returned by the command line.
"""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    """Exit statuses a scheduler can act on (documented in README.md)."""

    OK = 0  # the run succeeded (its report may still ask for attention)
    FAILED = 1  # the run failed; the message names the step, the report shows the error
    CONFIG = 2  # bad configuration or command line; nothing was done
    LOCKED = 3  # another run holds the lock or the REDCap lease (a yield); nothing was done
