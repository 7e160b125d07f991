"""A local REDCap-compatible API server for the demo and the tests.

``Sandbox`` (in ``server``) is the handle; the modules are its parts: ``schema`` (the three
databases as data), ``store`` (SQLite state), ``protocol`` (wire formats), ``flat`` (flat
rows both ways), ``logic`` (filterLogic), ``faults`` (scripted failures), ``api`` (the WSGI
app), ``seed`` (demo data), ``cli`` (``autoid sandbox``). Imports are lazy so that loading
the CLI stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import CREATOR_RIGHTS, RIGHTS
    from .seed import build_demo, seed_patient_identifiers
    from .server import Sandbox

__all__ = ["CREATOR_RIGHTS", "RIGHTS", "Sandbox", "build_demo", "seed_patient_identifiers"]


def __getattr__(name: str) -> Any:
    if name == "Sandbox":
        from .server import Sandbox

        return Sandbox
    if name in {"CREATOR_RIGHTS", "RIGHTS"}:
        from . import api

        return getattr(api, name)
    if name in {"build_demo", "seed_patient_identifiers"}:
        from . import seed

        return getattr(seed, name)
    raise AttributeError(name)
