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
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Unicode
from traitlets.config import Config

_LONGEST_FOLDER = 60  # leaves room for "/k-NNNNN" well inside the ~100-byte socket path limit


class PrivateKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel writes its own stderr to a file, not to the run's.

    What a kernel prints on its own (ipykernel's shutdown races, library warnings) is not the
    kit's to show on a cron job's stderr, but it is kept: the kit's lines already go to run.log.
    """

    stderr_file = Unicode("", config=True, help="file the kernel's stderr is appended to")

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw) -> None:
        if not self.stderr_file:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        descriptor = os.open(self.stderr_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            await super()._async_launch_kernel(kernel_cmd, stderr=descriptor, **kw)
        finally:
            os.close(descriptor)  # the kernel holds its own copy


@contextlib.contextmanager
def private_kernel_config(stderr_file: Path | None = None) -> Iterator[Config]:
    """A kernel manager configuration for papermill (``config=``); the folder goes afterwards.

    ``stderr_file`` receives what the kernel process itself prints (default: inherited).
    """
    base = tempfile.gettempdir()
    if len(base) > _LONGEST_FOLDER:
        base = "/tmp"
    folder = Path(tempfile.mkdtemp(prefix="autoid-kernel-", dir=base))  # created 0700
    try:
        yield Config(
            {
                "NotebookClient": {"kernel_manager_class": PrivateKernelManager},
                "PrivateKernelManager": {"stderr_file": str(stderr_file or "")},
                "KernelManager": {
                    "transport": "ipc",
                    "ip": str(folder / "k"),
                    "connection_file": str(folder / "kernel.json"),
                },
            }
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
