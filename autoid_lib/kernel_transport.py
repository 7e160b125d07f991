"""Notebook kernels the kit starts talk over Unix sockets in a private folder, never TCP.

By default a Jupyter kernel listens on loopback TCP: any local account can connect to its iopub
channel and read every message (study UIDs with pseudonyms under ``--detail full``). With
jupyter_client's ``ipc`` transport the channels are socket files; putting them and the
connection file (which holds the signing key) in a fresh 0700 folder leaves other users
nothing to open. The socket prefix is absolute and short: a relative one resolves differently
in kernel and client (and hangs), and a Unix socket path is limited to about 100 bytes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from traitlets.config import Config

_LONGEST_FOLDER = 60  # leaves room for "/k-NNNNN" well inside the ~100-byte socket path limit


@contextlib.contextmanager
def private_kernel_config() -> Iterator[Config]:
    """A kernel manager configuration for papermill (``config=``); the folder goes afterwards."""
    base = tempfile.gettempdir()
    if len(base) > _LONGEST_FOLDER:
        base = "/tmp"
    folder = Path(tempfile.mkdtemp(prefix="autoid-kernel-", dir=base))  # created 0700
    try:
        yield Config(
            {
                "KernelManager": {
                    "transport": "ipc",
                    "ip": str(folder / "k"),
                    "connection_file": str(folder / "kernel.json"),
                }
            }
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
