"""Files and folders the kit writes are private (0600 / 0700), whatever the umask says.

Reports at ``--detail full`` link study UIDs to pseudonyms; under the usual umask 022 they would
be world-readable. Replacements are written to a fresh file created exclusively (``O_EXCL``, so
never through a planted symlink) in the target's own folder, then renamed over the target, so a
reader never sees half a file either.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Whatever this process and its children (the kernel) create is 0600 / 0700."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_folder(path: str | os.PathLike) -> Path:
    """Create ``path`` and any missing parents as 0700; an existing folder is left as it is."""
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    return path


def write_private(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace ``path`` by ``data`` atomically, as a 0600 file; a symlink there is replaced."""
    path = Path(path)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as handle:  # mkstemp: O_EXCL, mode 0600
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(partial, path)  # rename replaces a symlink itself, never its target
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
