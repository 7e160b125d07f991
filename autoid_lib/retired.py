"""Retired AutoID rows: IDs a patient no longer goes under, kept so nobody ever gets them again.

``autoid repair`` retires a row by renaming its ``autoid_project_name`` to
``autoid-kit:retired:<project>``: no REDCap design change, and the kit's reserved prefix can never
be an auto-ID project's name. The row keeps its hash and value, so it still says "this patient
no longer goes under this ID in this project":

- the value is never handed out again in that project (the planner counts it as used);
- nobody is served under a retired value unless a live row still gives it to that patient;
- a transfer request sent under a retired (patient, value) pair is *superseded*: it is history
  (the research PACS got that copy, and the repair listed it for deletion), not a name the
  patient goes under.

Pure: rows and studies in, sets out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from autoid_lib.hashing import PatientHasher, normalise_hash, normalise_patient_id
from autoid_lib.snapshot import KIT_PROJECT_PREFIX, AutoIdRow, IncomingStudy

RETIRED_PREFIX = KIT_PROJECT_PREFIX + "retired:"

# project name key -> retired value -> the hashes it was retired for
Retired = dict[str, dict[str, set[str]]]


def name_key(name: str) -> str:
    """Project names as REDCap's filters compare them: without padding, ignoring case."""
    return name.strip().casefold()


def retired_name(project_name: str) -> str:
    """The ``autoid_project_name`` a retired row of ``project_name`` carries."""
    return RETIRED_PREFIX + project_name.strip()


def retired_from(row: AutoIdRow) -> str | None:
    """The project a retired row was retired from, or None for any other row."""
    name = row.project_name.strip()
    if not name.startswith(RETIRED_PREFIX):
        return None
    return name[len(RETIRED_PREFIX) :].strip()


def retired_by_project(rows: Iterable[AutoIdRow]) -> Retired:
    """Every retired (hash, value) pair, by project name key and value."""
    retired: Retired = defaultdict(lambda: defaultdict(set))
    for row in rows:
        project = retired_from(row)
        value = row.value.strip()
        if project and value:
            retired[name_key(project)][value].add(normalise_hash(row.hash))
    return {key: dict(values) for key, values in retired.items()}


def superseded_requests(
    studies: Iterable[IncomingStudy], retired: Retired, hasher: PatientHasher
) -> frozenset[tuple[str, int]]:
    """(study UID, instance) of every request sent under a pair that has been retired.

    Only requests under a retired value are hashed, so a site without retired rows pays nothing.
    """
    found: set[tuple[str, int]] = set()
    for study in studies:
        keys: set[str] | None = None
        for transfer in study.transfer_requests:
            hashes = retired.get(name_key(transfer.project_name), {}).get(transfer.name.strip())
            if not hashes:
                continue
            if keys is None:
                normalised = normalise_patient_id(study.patient_id)
                keys = set(hasher.lookup_keys(study.patient_id, normalised))
            if keys & hashes:
                found.add((study.uid, transfer.instance))
    return frozenset(found)
