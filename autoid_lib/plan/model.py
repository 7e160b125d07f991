"""What a plan is made of: its settings, its writes, each study's outcome, the anomalies and
the projects' states, and the stable words (actions, skip reasons) reports and summary.json use.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from autoid_lib.hashing import PatientHasher
from autoid_lib.ids import generate as idgen
from autoid_lib.snapshot import IncomingStudy

# What happens to a study.
TRANSFER = "create transfer"
ALREADY_TRANSFERRED = "already transferred"
SKIPPED = "skipped"

# Why a study is skipped: stable strings, shown in reports and counted in summary.json.
EMPTY_PATIENT_ID = "empty patient ID"
AMBIGUOUS_AE_TITLE = "ambiguous AE title"
INVALID_PATTERN = "invalid pattern"
ID_SPACE_EXHAUSTED = "ID space exhausted"
AUTOID_CONFLICT = "AutoID conflict"
AUTOID_NAME_VARIANT = "AutoID rows under a variant project name"
PROJECT_MISCONFIGURED = "project misconfigured"

# Where a served study's pseudonym came from: a stored or already-sent name, or a new one.
KNOWN_ID_SOURCES = ("reused", "adopted")

# A study addressed to an AE title several projects share names all of them, joined by this.
SHARED_AE_TITLE_JOIN = " / "

IdGenerator = Callable[[str, Collection[str], int], list[str]]


@dataclass(frozen=True)
class PlanSettings:
    """What the planner needs besides the snapshot; ``requested_at`` is REDCap server time."""

    hasher: PatientHasher
    requested_at: str  # "YYYY-MM-DD HH:MM", written into transfer_requested_date
    capacity_warn_at: float = 0.8
    projects: frozenset[str] | None = None  # plan only these projects (by name)
    generate_ids: IdGenerator | None = None  # default: the built-in engine
    rng: random.Random | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NewAutoId:
    """An AutoID row to create: the project's new pseudonym for one patient hash."""

    project_name: str
    hash: str = field(repr=False)
    value: str


@dataclass(frozen=True)
class TransferRequest:
    """A ``transfers`` instance to create on one study."""

    study_uid: str
    instance: int
    project_name: str
    pseudonym: str
    requested_date: str


@dataclass(frozen=True)
class StudyOutcome:
    """What the run does with one study addressed to an auto-ID AE title, and why."""

    study_uid: str
    study_date: str
    ae_title: str
    project_name: str
    action: str
    reason: str = ""
    pseudonym: str = ""
    id_source: str = ""  # "new" | "reused" | "adopted" | ""

    @property
    def projects(self) -> tuple[str, ...]:
        """The project(s) the study was addressed to (several for a shared AE title)."""
        return tuple(self.project_name.split(SHARED_AE_TITLE_JOIN))


@dataclass(frozen=True)
class Anomaly:
    """Something a human should look at, with what to do about it."""

    kind: str
    project: str
    message: str
    action: str
    count: int = 1


@dataclass(frozen=True)
class ProjectState:
    """An auto-ID project as the run saw it, with its capacity after the plan."""

    name: str
    ae_title: str
    pattern: str
    pattern_error: str = ""
    capacity: idgen.Capacity | None = None


@dataclass(frozen=True)
class Plan:
    new_ids: tuple[NewAutoId, ...]
    transfers: tuple[TransferRequest, ...]
    studies: tuple[StudyOutcome, ...]
    anomalies: tuple[Anomaly, ...]
    projects: tuple[ProjectState, ...]
    studies_in_window: int
    kit_rows: tuple[NewAutoId, ...] = ()  # the kit's own AutoID records (the hash scheme)

    @property
    def autoid_writes(self) -> tuple[NewAutoId, ...]:
        """Every AutoID row to import: patients' new rows, then the kit's records."""
        return self.new_ids + self.kit_rows

    @property
    def is_empty(self) -> bool:
        return not self.autoid_writes and not self.transfers

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.studies if s.action == SKIPPED))

    def describe(self) -> str:
        """The plan's writes and skips in one plain phrase, as the report's status line shows it."""
        reused = {
            (s.project_name, s.pseudonym) for s in self.studies if s.id_source in KNOWN_ID_SOURCES
        }
        created = sum((n.project_name, n.value) not in reused for n in self.new_ids)
        text = (
            f"{len(self.transfers)} transfer request(s), {created} new ID(s), "
            f"{len(reused)} known ID(s) reused"
        )
        skipped = self.skipped_by_reason()
        if skipped:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
            text += f"; {sum(skipped.values())} study(ies) skipped ({detail})"
        return text


def outcome(
    study: IncomingStudy, project: str, action: str, reason: str = "", **ids: str
) -> StudyOutcome:
    return StudyOutcome(
        study_uid=study.uid,
        study_date=study.study_date,
        ae_title=study.ae_title.strip(),
        project_name=project,
        action=action,
        reason=reason,
        **ids,
    )


def name_key(name: str) -> str:
    """Project names as REDCap's filters compare them: without padding, ignoring case."""
    return name.strip().casefold()
