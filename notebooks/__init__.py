"""The shipped notebooks, installed as ``autoid_lib.notebooks`` (pyproject.toml's package-dir).

This folder holds no code: the file makes it a package so that an editable install, a plain
``pip install .`` and the wheel all find the notebooks through ``importlib.resources``.
"""
