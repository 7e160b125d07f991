"""Apply a plan, then check that REDCap holds what was planned.

Order matters for recovery: AutoID rows first, then transfer requests. A run interrupted after
the AutoID import leaves IDs that the next run finds and reuses; one interrupted during the
transfer import leaves studies that the next run sees as transferred. Either way the next run
completes the work without a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from autoid_lib.errors import ConcurrentWriter
from autoid_lib.plan import Plan
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.redcap.second_look import foreign_rows, id_index
from autoid_lib.snapshot import AutoIdRow


@dataclass(frozen=True)
class Applied:
    autoid_records: tuple[str, ...]
    transfer_studies: int
    autoid_rows: tuple[AutoIdRow, ...] | None = None  # re-read just before the transfers


AutoIdNow = Callable[[], Iterable[AutoIdRow]]


def apply_plan(
    plan: Plan,
    gateway: RedcapGateway,
    read_rows: tuple[AutoIdRow, ...] | None = None,
    autoid_now: AutoIdNow | None = None,
) -> Applied:
    """Write exactly what the plan says: new AutoID rows, then transfer requests. Given the
    AutoID rows the plan was made from, re-read AutoID before the transfers (``autoid_now``,
    by default the whole table) and stop if another writer touched this run's patients
    (``second_look``)."""
    records = gateway.create_autoid_rows(plan.autoid_writes) if plan.autoid_writes else []
    now = None
    if plan.transfers and read_rows is not None:
        now = tuple((autoid_now or gateway.autoid_rows)())
        problems = foreign_rows(plan.new_ids, plan.transfers, read_rows, now)
        if problems:
            shown = "; ".join(problems[:3]) + (
                f" (+{len(problems) - 3} more)" * (len(problems) > 3)
            )
            raise ConcurrentWriter(
                f"another writer changed AutoID during this run: {shown}; no transfer request "
                "was written — stop the other installation, then run again"
            )
    studies = gateway.create_transfers(plan.transfers) if plan.transfers else 0
    return Applied(tuple(records), studies, now)


def verify_plan(
    plan: Plan,
    gateway: RedcapGateway,
    autoid_rows: tuple[AutoIdRow, ...] | None = None,
    autoid_now: AutoIdNow | None = None,
) -> list[str]:
    """Re-read what the plan wrote (AutoID through ``autoid_now`` only if ``autoid_rows``,
    read after the AutoID import, is not given); every difference is one sentence (no
    patient data)."""
    problems: list[str] = []
    if plan.autoid_writes:
        rows = (autoid_now or gateway.autoid_rows)() if autoid_rows is None else autoid_rows
        values_by_hash, hashes_by_value = id_index(rows)
        for new in plan.autoid_writes:
            stored = values_by_hash.get((new.project_name, new.hash), set())
            if stored != {new.value}:
                problems.append(
                    f"{new.project_name}: ID {new.value} was written, but AutoID holds "
                    f"{len(stored)} ID(s) for that patient"
                )
            elif len(hashes_by_value[(new.project_name, new.value)]) != 1:
                problems.append(
                    f"{new.project_name}: ID {new.value} is stored for several patients"
                )
    if plan.transfers:
        held = gateway.transfers_of(sorted({t.study_uid for t in plan.transfers}))
        for transfer in plan.transfers:
            requests = [t for t in held.get(transfer.study_uid, []) if t.is_request]
            found = [(t.project_name, t.name) for t in requests]
            if found != [(transfer.project_name, transfer.pseudonym)]:
                problems.append(
                    f"{transfer.project_name}: study …{transfer.study_uid[-8:]} should hold one "
                    f"transfer request under {transfer.pseudonym}, REDCap holds {len(found)}"
                )
    return problems
