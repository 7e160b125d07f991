"""One run at a time: an exclusive, non-blocking lock on a file.

``autoid run`` takes the lock and then starts the notebook's kernel, which runs the job in a
child process. The child must not wait for its own parent's lock, so the parent names the lock
it holds in ``AUTOID_LOCK_HELD_BY`` and a *direct child* may proceed under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from autoid_lib.errors import LockHeld

INHERITED = "AUTOID_LOCK_HELD_BY"


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock for the block; raise ``LockHeld`` at once if another run has it."""
    path = Path(path)
    if _held_by_parent(path):
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(str(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def environment_for_child(path: str | Path) -> dict[str, str]:
    """Environment entries that let a direct child run under the lock this process holds."""
    return {INHERITED: f"{os.getpid()}:{Path(path).resolve()}"}


def _held_by_parent(path: Path) -> bool:
    pid, _, held = os.environ.get(INHERITED, "").partition(":")
    return pid == str(os.getppid()) and held == str(path.resolve())
