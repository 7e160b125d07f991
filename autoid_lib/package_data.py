"""Files shipped inside the package: notebooks, deploy files, templates, found where installed.

The notebooks and the deploy files live in the checkout's top-level ``notebooks/`` and
``deploy/`` and are installed as the packages ``autoid_lib.notebooks`` and ``autoid_lib.deploy``
(pyproject.toml maps the one to the other). Found through
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


def deploy_files() -> list[Path]:
    """The deploy files (systemd units and timers, cron lines, logrotate, Prometheus rules):
    ``deploy/`` in a checkout, ``autoid_lib/deploy/`` installed."""
    folder = package_path(package="autoid_lib.deploy")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".py"))


def templates_dir() -> Path:
    """The folder of the HTML report and mail templates."""
    return package_path("templates")
