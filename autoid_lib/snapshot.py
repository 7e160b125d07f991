"""What the run reads from REDCap, as plain values: the planning core's input.

The gateway builds these from REDCap answers; the planner, the tests and the benchmarks build
them directly. Nothing here does I/O. Patient IDs live only in ``IncomingStudy.patient_id`` and
never leave memory: no ``repr`` shows them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

# AutoID records the kit keeps for itself (the hash scheme's fingerprint) carry a project name
# with this prefix. No auto-ID project may be named so; readers of patient rows skip them.
KIT_PROJECT_PREFIX = "autoid-kit:"
LEASE_PROJECT = "[autoid-kit:lease]"  # the REDCap lease's tickets (autoid_lib.lease)
CLOCK_PROJECT = "[autoid-kit:clock]"  # the clock's probe record (autoid_lib.server_clock)
MARK_PROJECT = KIT_PROJECT_PREFIX + "copy-mark"  # the local copy's mark (redcap.copy_mark)


def is_kit_project_name(name: str) -> bool:
    """Whether a project name is one of the kit's own (never an auto-ID project's), ignoring
    case as the planner matches project names."""
    name = name.strip().casefold()
    reserved = (LEASE_PROJECT.casefold(), CLOCK_PROJECT.casefold())
    return name.startswith(KIT_PROJECT_PREFIX) or name in reserved


@dataclass(frozen=True)
class ProjectRecord:
    """One record of the Projects database, as far as auto-ID cares."""

    record_id: str
    name: str
    use_autoid: bool
    ae_title: str
    pattern: str


@dataclass(frozen=True)
class ExistingTransfer:
    """One ``transfers`` instance of a study."""

    instance: int
    project_name: str
    name: str
    requested_date: str = ""
    transfer_date: str = ""  # filled in by the forwarder once sent
    error_codes: tuple[str, ...] = ()  # transfer_error checkbox codes set by the forwarder

    @property
    def is_request(self) -> bool:
        """A transfer is pending or done as soon as it names a project."""
        return bool(self.project_name.strip())


@dataclass(frozen=True)
class IncomingStudy:
    """One arrived study, collapsed from REDCap's flat rows."""

    uid: str
    ae_title: str
    patient_id: str = field(repr=False)
    study_date: str = ""
    transfers: tuple[ExistingTransfer, ...] = ()
    accession_number: str = field(default="", repr=False)

    @property
    def transfer_requests(self) -> tuple[ExistingTransfer, ...]:
        return tuple(t for t in self.transfers if t.is_request)

    @property
    def next_instance(self) -> int:
        return max((t.instance for t in self.transfers), default=0) + 1


@dataclass(frozen=True)
class AutoIdRow:
    """One record of the AutoID database: a project's pseudonym for one patient hash."""

    record_id: str
    project_name: str
    hash: str = field(repr=False)
    value: str
    method: str = "1"

    @property
    def is_kit_record(self) -> bool:
        """A record the kit keeps for itself, not a patient's ID."""
        return is_kit_project_name(self.project_name)


@dataclass(frozen=True)
class Snapshot:
    """Everything one run reads, taken before anything is written."""

    projects: tuple[ProjectRecord, ...]
    studies: tuple[IncomingStudy, ...]
    autoid_rows: tuple[AutoIdRow, ...]
    window_begin: datetime
    window_end: datetime


def with_transfers(
    studies: tuple[IncomingStudy, ...], fresh: Mapping[str, Sequence[ExistingTransfer]]
) -> tuple[IncomingStudy, ...]:
    """``studies`` with the transfer instances of those in ``fresh`` as REDCap holds them now
    (read again under the lease: another installation may have requested them meanwhile)."""
    return tuple(
        replace(s, transfers=tuple(sorted(fresh[s.uid], key=lambda t: t.instance)))
        if s.uid in fresh
        else s
        for s in studies
    )
