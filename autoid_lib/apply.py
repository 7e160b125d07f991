"""Apply a plan, then check that REDCap holds what was planned.

Order matters for recovery: AutoID rows first, then transfer requests. A run interrupted after
the AutoID import leaves IDs that the next run finds and reuses; one interrupted during the
transfer import leaves studies that the next run sees as transferred. Either way the next run
completes the work without a duplicate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from autoid_lib.hashing import normalise_hash
from autoid_lib.plan import Plan
from autoid_lib.redcap import RedcapGateway


@dataclass(frozen=True)
class Applied:
    autoid_records: tuple[str, ...]
    transfer_studies: int


def apply_plan(plan: Plan, gateway: RedcapGateway) -> Applied:
    """Write exactly what the plan says: new AutoID rows, then transfer requests."""
    records = gateway.create_autoid_rows(plan.autoid_writes) if plan.autoid_writes else []
    studies = gateway.create_transfers(plan.transfers) if plan.transfers else 0
    return Applied(tuple(records), studies)


def verify_plan(plan: Plan, gateway: RedcapGateway) -> list[str]:
    """Re-read what the plan wrote; every difference is one sentence (no patient data)."""
    problems: list[str] = []
    if plan.autoid_writes:
        values_by_hash = defaultdict(set)
        hashes_by_value = defaultdict(set)
        for row in gateway.autoid_rows():
            hash_, value = normalise_hash(row.hash), row.value.strip()
            if hash_ and value:  # an incomplete row is nobody's ID (the plan reports it)
                values_by_hash[(row.project_name, hash_)].add(value)
                hashes_by_value[(row.project_name, value)].add(hash_)
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
