"""Files shipped inside the package: the notebooks and the templates, found where it is installed.

Through ``importlib.resources``, so a wheel installed into ``/opt/...`` or by ``pipx`` finds them
as an editable checkout does. papermill and nbconvert want file paths, so the package must be
installed unpacked (as pip always does), not imported from a zip.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

NOTEBOOKS = ("populate_autoid.ipynb", "audit.ipynb", "explore.ipynb")


def package_path(*parts: str) -> Path:
    """The file-system path of a file or folder inside ``autoid_lib``."""
    resource = files("autoid_lib")
    for part in parts:
        resource = resource / part
    if not isinstance(resource, Path):
        raise RuntimeError(f"autoid_lib is not installed as files ({resource}); reinstall with pip")
    return resource


def notebook_path(name: str) -> Path:
    """One of the shipped notebooks (``NOTEBOOKS``)."""
    if name not in NOTEBOOKS:
        raise ValueError(f"no shipped notebook {name!r}; there are {', '.join(NOTEBOOKS)}")
    return package_path("notebooks", name)


def templates_dir() -> Path:
    """The folder of the HTML report and mail templates."""
    return package_path("templates")
