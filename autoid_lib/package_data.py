"""Files shipped inside the package: the notebooks and the templates, found where it is installed.

The notebooks live in the checkout's top-level ``notebooks/`` and are installed as the package
``autoid_lib.notebooks`` (pyproject.toml maps the one to the other). Found through
``importlib.resources``, so a wheel installed into ``/opt/...`` or by ``pipx`` finds them
as an editable checkout does. papermill and nbconvert want file paths, so the package must be
installed unpacked (as pip always does), not imported from a zip.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

NOTEBOOKS = ("populate_autoid.ipynb", "audit.ipynb", "explore.ipynb")


def package_path(*parts: str, package: str = "autoid_lib") -> Path:
    """The file-system path of a file or folder inside ``package`` (``autoid_lib`` or one of
    its data packages)."""
    resource = files(package)
    for part in parts:
        resource = resource / part
    if not isinstance(resource, Path):
        raise RuntimeError(f"{package} is not installed as files ({resource}); reinstall with pip")
    return resource


def notebook_path(name: str) -> Path:
    """One of the shipped notebooks (``NOTEBOOKS``)."""
    if name not in NOTEBOOKS:
        raise ValueError(f"no shipped notebook {name!r}; there are {', '.join(NOTEBOOKS)}")
    return notebooks_dir() / name


def notebooks_dir() -> Path:
    """The folder of the shipped notebooks: ``notebooks/`` in a checkout installed with
    ``pip install -e``, ``site-packages/autoid_lib/notebooks/`` in an installed wheel."""
    return package_path(package="autoid_lib.notebooks")


def templates_dir() -> Path:
    """The folder of the HTML report and mail templates."""
    return package_path("templates")
