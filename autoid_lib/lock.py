"""One run at a time: an exclusive, non-blocking lock on a file.

``autoid run`` takes the lock and then starts the notebook's kernel, which runs the job in a
child process. The child must not wait for its own parent's lock, so the parent names the lock
it holds in ``AUTOID_LOCK_HELD_BY`` and a *direct child* may proceed under it.

The lock file lives in a private folder: in a folder others can write to (``/var/lock``) another
user could plant a symlink (the run would truncate its target) or hold the lock for ever. So the
folder is created 0700, a folder writable by group or others is refused, the file is opened
without following a symlink and must be a regular file of this user, not writable by others.
A refused lock is a ``ConfigError``; ``LockHeld`` says how long the holder has had the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from autoid_lib.errors import ConfigError, LockHeld
from autoid_lib.private_files import private_folder

INHERITED = "AUTOID_LOCK_HELD_BY"


@contextlib.contextmanager
def run_lock(path: str | Path) -> Iterator[None]:
    """Hold the lock for the block; raise ``LockHeld`` at once if another run has it."""
    path = Path(path)
    if _held_by_parent(path):
        yield
        return
    fd = _open_private(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # the holder rewrote the file when it took the lock: its mtime is when
            held_for = max(0.0, time.time() - os.fstat(fd).st_mtime)
            raise LockHeld(str(path), held_for) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def check_lock_file(path: str | Path) -> None:
    """What a run checks before it takes the lock, without taking it: the folder private to
    this user, the file a regular file of this user (``autoid check`` runs the very same
    checks, so it never approves what a run refuses). Raises ``ConfigError`` like the run."""
    os.close(_open_private(Path(path)))


def _open_private(path: Path) -> int:
    folder = private_folder(path.parent)
    info = os.stat(folder)
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or info.st_uid not in (os.geteuid(), 0):
        raise ConfigError(
            f"lock folder {folder} can be written by other users; set [run] lock_file to a "
            "file in a private folder (e.g. /var/lib/autoid/autoid.lock)"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        if os.path.islink(path):
            raise ConfigError(f"lock file {path} is a symbolic link; refused") from None
        raise
    info = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(info.st_mode):
        problem = "is not a regular file"
    elif info.st_uid != os.geteuid():
        problem = "belongs to another user"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = "can be written by other users"
    if problem:
        os.close(fd)
        raise ConfigError(f"lock file {path} {problem}; refused (remove it, the run recreates it)")
    return fd


def environment_for_child(path: str | Path) -> dict[str, str]:
    """Environment entries that let a direct child run under the lock this process holds."""
    return {INHERITED: f"{os.getpid()}:{Path(path).resolve()}"}


def _held_by_parent(path: Path) -> bool:
    pid, _, held = os.environ.get(INHERITED, "").partition(":")
    return pid == str(os.getppid()) and held == str(path.resolve())
