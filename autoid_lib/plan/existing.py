"""What earlier runs left, indexed per project for the planner: the names existing transfer
requests sent patients under, and the patients' AutoID rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from autoid_lib.hashing import normalise_patient_id
from autoid_lib.plan.model import name_key
from autoid_lib.snapshot import AutoIdRow, IncomingStudy


@dataclass
class SentNames:
    """The names existing transfer requests sent one project's studies under, both ways.

    Patients are normalised IDs; '' stands for studies without one (an owner nobody knows).
    """

    patients_of: dict[str, set[str]] = field(default_factory=dict)  # name -> patients
    names_of: dict[str, set[str]] = field(default_factory=dict)  # patient -> names


def sent_names(
    studies: Iterable[IncomingStudy], superseded: Collection[tuple[str, int]] = frozenset()
) -> dict[str, SentNames]:
    """Per project (name key), the pseudonyms existing transfer requests carry (any study);
    requests superseded by a retired row (``autoid_lib.retired``) are history, not names."""
    sent: dict[str, SentNames] = defaultdict(SentNames)
    for study in studies:
        patient = normalise_patient_id(study.patient_id)
        for transfer in study.transfer_requests:
            name = transfer.name.strip()
            if name and (study.uid, transfer.instance) not in superseded:
                index = sent[name_key(transfer.project_name)]
                index.patients_of.setdefault(name, set()).add(patient)
                index.names_of.setdefault(patient, set()).add(name)
    return sent


def rows_by_project(rows: Iterable[AutoIdRow]) -> dict[str, list[AutoIdRow]]:
    """Patient rows by project name key; the kit's own records (retired rows among them) are
    not patients' live IDs."""
    grouped: dict[str, list[AutoIdRow]] = defaultdict(list)
    for row in rows:
        if not row.is_kit_record:
            grouped[name_key(row.project_name)].append(row)
    return grouped
