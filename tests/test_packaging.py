"""The build's package list: explicit in pyproject.toml (a mapped folder cannot be found), so
kept here equal to what is on disk."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_wheel_lists_every_package_and_the_mapped_data_folders():
    setuptools = pyproject()["tool"]["setuptools"]
    mapped = setuptools["package-dir"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "autoid_lib").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == on_disk | set(mapped)
    for package, folder in mapped.items():
        assert (ROOT / folder / "__init__.py").is_file(), package


def test_every_file_in_the_mapped_folders_is_shipped_as_package_data():
    """A file added to deploy/ or notebooks/ that no package-data pattern names would be in a
    checkout but missing from the wheel."""
    setuptools = pyproject()["tool"]["setuptools"]
    for package, folder in setuptools["package-dir"].items():
        patterns = setuptools["package-data"][package]
        for path in (ROOT / folder).iterdir():
            if path.is_file() and path.suffix != ".py":
                assert any(path.match(pattern) for pattern in patterns), path
