"""The planning core: what one run must write, computed purely from what it read.

``plan(snapshot, settings)`` takes the Projects, Incoming and AutoID reads plus the run's
settings (hash scheme, the request time, an ID generator) and returns a ``Plan``: the AutoID rows
and transfer requests to create, what happens to every study addressed to an auto-ID project,
and the anomalies a human should look at. It never imports PyCap, reads the environment or
looks at the clock, so every rule below has a test that needs no server:

- one patient (one hash) gets one ID per project, also across several studies in one run;
- new IDs fullmatch the project's pattern and avoid every value the project already uses;
- empty patient IDs, ambiguous AE titles, invalid or exhausted patterns and AutoID conflicts
  skip the study with a reason, and nothing is written for it;
- a study with any transfer request gets nothing more.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from autoid_lib.errors import PatternError
from autoid_lib.hashing import PatientHasher, normalise_patient_id
from autoid_lib.ids import generate as idgen
from autoid_lib.ids.space import compile_pattern
from autoid_lib.snapshot import AutoIdRow, IncomingStudy, ProjectRecord, Snapshot

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
PROJECT_MISCONFIGURED = "project misconfigured"

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
    id_source: str = ""  # "new" | "reused" | ""

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

    @property
    def is_empty(self) -> bool:
        return not self.new_ids and not self.transfers

    def skipped_by_reason(self) -> dict[str, int]:
        return dict(Counter(s.reason for s in self.studies if s.action == SKIPPED))

    def describe(self) -> str:
        """The plan's writes and skips in one plain phrase, as the report's status line shows it."""
        reused = {(s.project_name, s.pseudonym) for s in self.studies if s.id_source == "reused"}
        text = (
            f"{len(self.transfers)} transfer request(s), {len(self.new_ids)} new ID(s), "
            f"{len(reused)} known ID(s) reused"
        )
        skipped = self.skipped_by_reason()
        if skipped:
            detail = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
            text += f"; {sum(skipped.values())} study(ies) skipped ({detail})"
        return text


def plan(snapshot: Snapshot, settings: PlanSettings) -> Plan:
    """Decide every write of one run from what it read."""
    anomalies: list[Anomaly] = []
    projects, unserved_ae_titles = _auto_id_projects(snapshot.projects, anomalies)
    by_ae_title = _projects_by_ae_title(projects, anomalies)
    rows_by_project = _rows_by_project(snapshot.autoid_rows)
    sent_names = _sent_names(snapshot.studies)
    _check_project_filter(settings.projects, projects, anomalies)

    studies_by_project: dict[str, list[IncomingStudy]] = defaultdict(list)
    outcomes: list[StudyOutcome] = []
    for study in snapshot.studies:
        ae_title = study.ae_title.strip()
        candidates = by_ae_title.get(ae_title, [])
        if len(candidates) == 1:
            if settings.projects is None or candidates[0].name in settings.projects:
                studies_by_project[candidates[0].name].append(study)
            continue
        if candidates:
            label = SHARED_AE_TITLE_JOIN.join(p.name for p in candidates)
            reason = AMBIGUOUS_AE_TITLE
        elif ae_title in unserved_ae_titles:
            label, reason = unserved_ae_titles[ae_title], PROJECT_MISCONFIGURED
        else:
            continue  # not addressed to an auto-ID project
        if study.transfer_requests:
            outcomes.append(_outcome(study, label, ALREADY_TRANSFERRED))
        else:
            outcomes.append(_outcome(study, label, SKIPPED, reason))

    states = []
    new_ids: list[NewAutoId] = []
    transfers: list[TransferRequest] = []
    for project in projects:
        if settings.projects is not None and project.name not in settings.projects:
            continue
        planner = _ProjectPlanner(project, rows_by_project.get(project.name, ()), settings)
        for pseudonym in sent_names.get(project.name, ()):
            planner.reserve(pseudonym)  # sent to the PACS under this name, whatever AutoID says
        planner.plan_studies(studies_by_project.get(project.name, ()))
        states.append(planner.state())
        outcomes.extend(planner.outcomes)
        new_ids.extend(planner.new_ids)
        transfers.extend(planner.transfers)
        anomalies.extend(planner.anomalies)

    return Plan(
        new_ids=tuple(new_ids),
        transfers=tuple(transfers),
        studies=tuple(outcomes),
        anomalies=tuple(anomalies),
        projects=tuple(states),
        studies_in_window=len(snapshot.studies),
    )


def _outcome(study: IncomingStudy, project: str, action: str, reason: str = "", **ids):
    return StudyOutcome(
        study_uid=study.uid,
        study_date=study.study_date,
        ae_title=study.ae_title.strip(),
        project_name=project,
        action=action,
        reason=reason,
        **ids,
    )


def _auto_id_projects(records: Iterable[ProjectRecord], anomalies: list[Anomaly]):
    """Projects with auto-ID on that can be served, and the AE titles of those that cannot.

    A project without a name, or sharing its name with another auto-ID project (AutoID rows
    and transfers are keyed by name), is reported, not guessed; its studies are skipped.
    """
    candidates, unserved = [], {}
    for record in records:
        if not record.use_autoid:
            continue
        if not record.name.strip() or not record.ae_title.strip():
            missing = "project_name" if not record.name.strip() else "project_autoid_aetitle"
            label = record.name.strip() or f"record {record.record_id}"
            anomalies.append(
                Anomaly(
                    "project_misconfigured",
                    label,
                    f"auto-ID is on but {missing} is empty; its studies cannot be served",
                    f"Fill in {missing} in the Projects database or switch auto-ID off.",
                )
            )
            if record.ae_title.strip():
                unserved[record.ae_title.strip()] = label
            continue
        candidates.append(record)
    names = Counter(p.name.strip() for p in candidates)
    for name in sorted(n for n, count in names.items() if count > 1):
        anomalies.append(
            Anomaly(
                "project_misconfigured",
                name,
                f"{names[name]} auto-ID projects are named {name}; AutoID rows and transfers "
                "are keyed by name, so none of them is served",
                "Give each project its own project_name in the Projects database.",
            )
        )
    for record in candidates:
        if names[record.name.strip()] > 1:
            unserved[record.ae_title.strip()] = record.name.strip()
    served = [p for p in candidates if names[p.name.strip()] == 1]
    return served, {ae: label for ae, label in unserved.items()
                    if ae not in {p.ae_title.strip() for p in served}}  # fmt: skip


def _check_project_filter(wanted, projects: list[ProjectRecord], anomalies: list[Anomaly]):
    """A --projects name that is no servable auto-ID project is a typo worth reporting."""
    unknown = sorted(set(wanted or ()) - {p.name for p in projects})
    if unknown:
        anomalies.append(
            Anomaly(
                "unknown_project_filter",
                ", ".join(unknown),
                f"the run was limited to project(s) that are not auto-ID projects: "
                f"{', '.join(unknown)}; nothing was planned for them",
                "Check the names given with --projects against project_name in Projects.",
                len(unknown),
            )
        )


def _projects_by_ae_title(projects: list[ProjectRecord], anomalies: list[Anomaly]):
    by_ae_title: dict[str, list[ProjectRecord]] = defaultdict(list)
    for project in projects:
        by_ae_title[project.ae_title.strip()].append(project)
    for ae_title, sharing in by_ae_title.items():
        if len(sharing) > 1:
            names = ", ".join(p.name for p in sharing)
            anomalies.append(
                Anomaly(
                    "ambiguous_ae_title",
                    names,
                    f"AE title {ae_title} is used by {len(sharing)} auto-ID projects ({names}); "
                    "its studies are skipped",
                    "Give each auto-ID project its own AE title in the Projects database.",
                )
            )
    return by_ae_title


def _sent_names(studies: Iterable[IncomingStudy]) -> dict[str, set[str]]:
    """Per project, the pseudonyms existing transfer requests carry (on any study)."""
    sent: dict[str, set[str]] = defaultdict(set)
    for study in studies:
        for transfer in study.transfer_requests:
            if transfer.name:
                sent[transfer.project_name].add(transfer.name)
    return sent


def _rows_by_project(rows: Iterable[AutoIdRow]) -> dict[str, list[AutoIdRow]]:
    grouped: dict[str, list[AutoIdRow]] = defaultdict(list)
    for row in rows:
        grouped[row.project_name.strip()].append(row)
    return grouped


class _ProjectPlanner:
    """Plans one project: looks patients up, assigns new IDs, lists transfers."""

    def __init__(self, project: ProjectRecord, rows, settings: PlanSettings):
        self.project = project
        self.settings = settings
        self.outcomes: list[StudyOutcome] = []
        self.new_ids: list[NewAutoId] = []
        self.transfers: list[TransferRequest] = []
        self.anomalies: list[Anomaly] = []
        self.pattern_error = ""
        self.pattern = None
        try:
            self.pattern = compile_pattern(project.pattern)
        except PatternError as error:
            self.pattern_error = str(error)
            self._anomaly(
                "invalid_pattern",
                f"naming pattern cannot generate IDs: {error}",
                "Fix project_patient_naming in the Projects database (see docs/patterns.md).",
            )
        self._index_rows(rows)

    def _anomaly(self, kind: str, message: str, action: str, count: int = 1) -> None:
        self.anomalies.append(Anomaly(kind, self.project.name, message, action, count))

    def _index_rows(self, rows) -> None:
        """Index the project's AutoID rows both ways; conflicts are kept aside, not merged.

        Plain dicts, with sets only for the rare conflicts: a million rows index in a second.
        """
        self.value_of: dict[str, str] = {}  # hash -> value (the first one seen)
        self.hash_of: dict[str, str] = {}  # value -> hash (the first one seen)
        self.split: dict[str, set[str]] = {}  # hash -> its several values
        self.shared: dict[str, set[str]] = {}  # value -> its several hashes
        self.reserved: set[str] = set()  # values in use without a complete row
        incomplete = 0
        for row in rows:
            hash_, value = row.hash.strip(), row.value.strip()
            if not hash_ or not value:
                incomplete += 1
                if value:
                    self.reserved.add(value)  # nobody else may get it, whoever it belongs to
                continue
            first_value = self.value_of.setdefault(hash_, value)
            if first_value != value:
                self.split.setdefault(hash_, {first_value}).add(value)
            first_hash = self.hash_of.setdefault(value, hash_)
            if first_hash != hash_:
                self.shared.setdefault(value, {first_hash}).add(hash_)
        self.in_use: set[str] = set(self.hash_of) | self.reserved
        self.used_in_pattern = 0
        if self.pattern is not None:
            self.used_in_pattern = sum(map(self.pattern.contains, self.in_use))
        self._report_row_problems(incomplete)

    def _report_row_problems(self, incomplete: int) -> None:
        if incomplete:
            self._anomaly(
                "autoid_incomplete_rows",
                f"{incomplete} AutoID row(s) lack a hash or a value and are ignored",
                "Complete or delete these rows in the AutoID database.",
                incomplete,
            )
        if self.split:
            self._anomaly(
                "autoid_conflict_hash",
                f"{len(self.split)} patient hash(es) have several IDs",
                "Decide which ID each patient keeps and delete the other AutoID rows; "
                "their studies are skipped until then.",
                len(self.split),
            )
        if self.shared:
            self._anomaly(
                "autoid_conflict_value",
                f"{len(self.shared)} ID(s) are stored for several patient hashes",
                "Two patients may share an ID: check these AutoID rows before more data "
                "arrives; their studies are skipped until then.",
                len(self.shared),
            )
        foreign = len(self.in_use) - self.used_in_pattern
        if self.pattern is not None and foreign:
            self._anomaly(
                "autoid_pattern_mismatch",
                f"{foreign} stored ID(s) do not match the current pattern "
                "(the pattern was changed?); they are kept for their patients",
                "Nothing to do if the pattern was changed on purpose.",
                foreign,
            )

    def reserve(self, value: str) -> None:
        """Count ``value`` as used (a transfer name, a new ID) so no other patient gets it."""
        if value and value not in self.in_use:
            self.in_use.add(value)
            if self.pattern is not None and self.pattern.contains(value):
                self.used_in_pattern += 1

    def _known_id(self, lookup_keys: tuple[str, ...]) -> tuple[str, bool]:
        """The patient's stored ID ('' if new) and whether the rows conflict."""
        values = set()
        for key in lookup_keys:
            if key in self.value_of:
                values |= self.split.get(key, {self.value_of[key]})
        if not values:
            return "", False
        if len(values) > 1:
            return "", True
        (value,) = values
        if not self.shared.get(value, {self.hash_of[value]}) <= set(lookup_keys):
            return "", True  # the same ID is stored for another patient too
        return value, False

    def plan_studies(self, studies: Iterable[IncomingStudy]) -> None:
        name = self.project.name
        new_patients: dict[str, list[IncomingStudy]] = {}
        known: list[tuple[IncomingStudy, str]] = []
        mismatched = empty = 0
        for study in studies:
            normalised = normalise_patient_id(study.patient_id)
            keys = (
                self.settings.hasher.lookup_keys(study.patient_id, normalised) if normalised else ()
            )
            value, conflict = self._known_id(keys) if keys else ("", False)
            if study.transfer_requests:
                requested = [(t.project_name, t.name) for t in study.transfer_requests]
                mismatched += bool(value) and requested != [(name, value)]
                self.outcomes.append(_outcome(study, name, ALREADY_TRANSFERRED))
            elif not normalised:
                empty += 1
                self.outcomes.append(_outcome(study, name, SKIPPED, EMPTY_PATIENT_ID))
            elif conflict:
                self.outcomes.append(_outcome(study, name, SKIPPED, AUTOID_CONFLICT))
            elif value:
                known.append((study, value))
            else:
                new_patients.setdefault(keys[0], []).append(study)
        if empty:
            self._anomaly(
                "empty_patient_id",
                f"{empty} study(ies) arrived without a patient ID and cannot get a pseudonym",
                "Have the sender fix PatientID and resend the study; nothing is written for "
                "it until then.",
                empty,
            )
        if mismatched:
            self._anomaly(
                "transfer_mismatch",
                f"{mismatched} study(ies) already have a transfer request that is not exactly "
                "one request to this project under the patient's ID",
                "Check these transfers in the Incoming database (run the audit notebook).",
                mismatched,
            )
        for study, value in known:
            self._transfer(study, value, "reused")
        self._assign_new_ids(new_patients)

    def _assign_new_ids(self, new_patients: dict[str, list[IncomingStudy]]) -> None:
        name = self.project.name
        if not new_patients:
            return
        order = sorted(
            new_patients, key=lambda h: min((s.study_date, s.uid) for s in new_patients[h])
        )
        if self.pattern is None:
            for patient in order:
                for study in new_patients[patient]:
                    self.outcomes.append(_outcome(study, name, SKIPPED, INVALID_PATTERN))
            return
        free = self.pattern.size - self.used_in_pattern
        served, unserved = order[:free], order[free:]
        values = self._generate(len(served)) if served else []
        for patient, value in zip(served, values, strict=True):
            self.new_ids.append(NewAutoId(name, patient, value))
            self.reserve(value)
            for study in new_patients[patient]:
                self._transfer(study, value, "new")
        for patient in unserved:
            for study in new_patients[patient]:
                self.outcomes.append(_outcome(study, name, SKIPPED, ID_SPACE_EXHAUSTED))
        if unserved:
            self._anomaly(
                "id_space_exhausted",
                f"no free ID left for {len(unserved)} new patient(s)",
                "Widen project_patient_naming (keep existing IDs matching) so new patients "
                "can be served.",
                len(unserved),
            )

    def _generate(self, count: int) -> list[str]:
        if self.settings.generate_ids is not None:
            return self.settings.generate_ids(self.project.pattern, self.in_use, count)
        return idgen.generate_ids(self.pattern, self.in_use, count=count, rng=self.settings.rng)

    def _transfer(self, study: IncomingStudy, value: str, source: str) -> None:
        self.transfers.append(
            TransferRequest(
                study_uid=study.uid,
                instance=study.next_instance,
                project_name=self.project.name,
                pseudonym=value,
                requested_date=self.settings.requested_at,
            )
        )
        self.outcomes.append(
            _outcome(study, self.project.name, TRANSFER, pseudonym=value, id_source=source)
        )

    def state(self) -> ProjectState:
        capacity = None
        if self.pattern is not None:
            capacity = idgen.Capacity(
                self.pattern.pattern,
                self.pattern.size,
                self.used_in_pattern,
                self.settings.capacity_warn_at,
            )
            reported = any(a.kind == "id_space_exhausted" for a in self.anomalies)
            if capacity.level == "exhausted" and not reported:
                self._anomaly(
                    "id_space_exhausted",
                    capacity.description,
                    "Widen project_patient_naming now (keep existing IDs matching): the next "
                    "new patient will be skipped.",
                )
            elif capacity.level == "warning":
                self._anomaly(
                    "capacity_warning",
                    capacity.description,
                    "Plan a wider project_patient_naming before the space runs out.",
                )
        return ProjectState(
            name=self.project.name,
            ae_title=self.project.ae_title.strip(),
            pattern=self.project.pattern,
            pattern_error=self.pattern_error,
            capacity=capacity,
        )
