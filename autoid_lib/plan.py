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
from dataclasses import dataclass, field, replace

from autoid_lib.errors import PatternError
from autoid_lib.hash_scheme import HASH_SCHEME_RECORD, fingerprint_to_record
from autoid_lib.hashing import PatientHasher, normalise_hash, normalise_patient_id
from autoid_lib.ids import generate as idgen
from autoid_lib.ids.space import compile_pattern
from autoid_lib.retired import retired_by_project, superseded_requests
from autoid_lib.snapshot import (
    KIT_PROJECT_PREFIX,
    AutoIdRow,
    IncomingStudy,
    ProjectRecord,
    Snapshot,
    is_kit_project_name,
)

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


def plan(snapshot: Snapshot, settings: PlanSettings) -> Plan:
    """Decide every write of one run from what it read."""
    fingerprint = fingerprint_to_record(snapshot.autoid_rows, settings.hasher)
    anomalies: list[Anomaly] = []
    routes, projects = _route_ae_titles(snapshot.projects, anomalies)
    rows_by_project = _rows_by_project(snapshot.autoid_rows)
    retired = retired_by_project(snapshot.autoid_rows)
    superseded = superseded_requests(snapshot.studies, retired, settings.hasher)
    sent = _sent_names(snapshot.studies, superseded)
    _check_project_filter(settings.projects, projects, anomalies)

    studies_by_project: dict[str, list[IncomingStudy]] = defaultdict(list)
    outcomes: list[StudyOutcome] = []
    for study in snapshot.studies:
        route = routes.get(study.ae_title.strip())
        if route is None:
            continue  # not addressed to an auto-ID project
        if route.project is not None:
            if settings.projects is None or route.project.name in settings.projects:
                studies_by_project[route.project.name].append(study)
        elif study.transfer_requests:
            outcomes.append(_outcome(study, route.label, ALREADY_TRANSFERRED))
        else:
            outcomes.append(_outcome(study, route.label, SKIPPED, route.reason))

    states = []
    new_ids: list[NewAutoId] = []
    transfers: list[TransferRequest] = []
    for project in projects:
        if settings.projects is not None and project.name not in settings.projects:
            continue
        key = _name_key(project.name)
        planner = _ProjectPlanner(
            project,
            rows_by_project.get(key, ()),
            sent.get(key, _SentNames()),
            settings,
            retired=frozenset(retired.get(key, ())),
            superseded=superseded,
        )
        planner.plan_studies(studies_by_project.get(project.name, ()))
        states.append(planner.state())
        outcomes.extend(planner.outcomes)
        new_ids.extend(planner.new_ids)
        transfers.extend(planner.transfers)
        anomalies.extend(planner.anomalies)

    kit_rows: tuple[NewAutoId, ...] = ()
    if fingerprint is not None:
        kit_rows = (NewAutoId(HASH_SCHEME_RECORD, fingerprint, fingerprint),)
    return Plan(
        new_ids=tuple(new_ids),
        transfers=tuple(transfers),
        studies=tuple(outcomes),
        anomalies=tuple(_skipped_counts(anomalies, outcomes)),
        projects=tuple(states),
        studies_in_window=len(snapshot.studies),
        kit_rows=kit_rows,
    )


def _outcome(
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


def _name_key(name: str) -> str:
    """Project names as REDCap's filters compare them: without padding, ignoring case."""
    return name.strip().casefold()


@dataclass(frozen=True)
class _Route:
    """Where studies to one AE title go: a served project, or skipped with a reason."""

    project: ProjectRecord | None
    label: str
    reason: str = ""


def _route_ae_titles(
    records: Iterable[ProjectRecord], anomalies: list[Anomaly]
) -> tuple[dict[str, _Route], list[ProjectRecord]]:
    """Each auto-ID AE title's route, and the projects that can be served.

    Every auto-ID record claims its AE title, servable or not: a title claimed twice is
    ambiguous even when one claimant is misconfigured (a guess could send a patient's studies
    into the wrong project). A project without a name, with a reserved name, or sharing its name
    (ignoring case: REDCap's filters do) with another auto-ID project is reported, not guessed.
    """
    auto = [r for r in records if r.use_autoid]
    names = Counter(_name_key(r.name) for r in auto if r.name.strip())
    servable, claims = [], defaultdict(list)
    for record in auto:
        name, ae_title = record.name.strip(), record.ae_title.strip()
        label = name or f"record {record.record_id}"
        if not name or not ae_title:
            missing = "project_name" if not name else "project_autoid_aetitle"
            _misconfigured(
                anomalies,
                label,
                f"auto-ID is on but {missing} is empty; its studies cannot be served",
                f"Fill in {missing} in the Projects database or switch auto-ID off.",
            )
        elif is_kit_project_name(name):
            _misconfigured(
                anomalies,
                label,
                f"project names starting with {KIT_PROJECT_PREFIX} "
                "are reserved for the kit's own records; its studies cannot be served",
                "Rename the project in the Projects database.",
            )
        elif names[_name_key(name)] == 1:
            servable.append(record)
        if ae_title:
            claims[ae_title].append((record, label))
    for key in sorted(k for k, count in names.items() if count > 1):
        spelt = sorted({r.name.strip() for r in auto if _name_key(r.name) == key})
        _misconfigured(
            anomalies,
            spelt[0],
            f"{names[key]} auto-ID projects are named "
            f"{' / '.join(spelt)}; AutoID rows and transfers are keyed by name "
            "(REDCap compares names ignoring case), so none of them is served",
            "Give each project its own project_name in the Projects database.",
        )
    routes: dict[str, _Route] = {}
    for ae_title, claimants in claims.items():
        labels = [label for _, label in claimants]
        if len(claimants) > 1:
            routes[ae_title] = _Route(None, SHARED_AE_TITLE_JOIN.join(labels), AMBIGUOUS_AE_TITLE)
            shown = ", ".join(labels)
            anomalies.append(
                Anomaly(
                    "ambiguous_ae_title",
                    shown,
                    f"AE title {ae_title} is used by {len(claimants)} auto-ID projects "
                    f"({shown}); its studies are skipped",
                    "Give each auto-ID project its own AE title in the Projects database.",
                )
            )
        elif any(record is claimants[0][0] for record in servable):
            routes[ae_title] = _Route(claimants[0][0], labels[0])
        else:
            routes[ae_title] = _Route(None, labels[0], PROJECT_MISCONFIGURED)
    return routes, servable


def _skipped_counts(anomalies: list[Anomaly], outcomes: list[StudyOutcome]) -> list[Anomaly]:
    """An ambiguous AE title's count is the studies it made the run skip, not 1 per title."""
    skipped = Counter(frozenset(o.projects) for o in outcomes if o.reason == AMBIGUOUS_AE_TITLE)
    return [
        replace(a, count=skipped[frozenset(a.project.split(", "))])
        if a.kind == "ambiguous_ae_title"
        else a
        for a in anomalies
    ]


def _misconfigured(anomalies: list[Anomaly], label: str, message: str, action: str) -> None:
    anomalies.append(Anomaly("project_misconfigured", label, message, action))


def _check_project_filter(
    wanted: frozenset[str] | None, projects: list[ProjectRecord], anomalies: list[Anomaly]
) -> None:
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


@dataclass
class _SentNames:
    """The names existing transfer requests sent one project's studies under, both ways.

    Patients are normalised IDs; '' stands for studies without one (an owner nobody knows).
    """

    patients_of: dict[str, set[str]] = field(default_factory=dict)  # name -> patients
    names_of: dict[str, set[str]] = field(default_factory=dict)  # patient -> names


def _sent_names(
    studies: Iterable[IncomingStudy], superseded: Collection[tuple[str, int]] = frozenset()
) -> dict[str, _SentNames]:
    """Per project (name key), the pseudonyms existing transfer requests carry (any study);
    requests superseded by a retired row (``autoid_lib.retired``) are history, not names."""
    sent: dict[str, _SentNames] = defaultdict(_SentNames)
    for study in studies:
        patient = normalise_patient_id(study.patient_id)
        for transfer in study.transfer_requests:
            name = transfer.name.strip()
            if name and (study.uid, transfer.instance) not in superseded:
                index = sent[_name_key(transfer.project_name)]
                index.patients_of.setdefault(name, set()).add(patient)
                index.names_of.setdefault(patient, set()).add(name)
    return sent


def _rows_by_project(rows: Iterable[AutoIdRow]) -> dict[str, list[AutoIdRow]]:
    """Patient rows by project name key; the kit's own records (retired rows among them) are
    not patients' live IDs."""
    grouped: dict[str, list[AutoIdRow]] = defaultdict(list)
    for row in rows:
        if not row.is_kit_record:
            grouped[_name_key(row.project_name)].append(row)
    return grouped


@dataclass(frozen=True)
class _Decision:
    """What one patient's pending studies get: a known name, a new ID, or a skip reason."""

    value: str = ""
    source: str = ""  # "reused" | "adopted" (a name sent before, recorded in AutoID now)
    skip: str = ""


class _ProjectPlanner:
    """Plans one project: looks patients up, assigns new IDs, lists transfers."""

    def __init__(
        self,
        project: ProjectRecord,
        rows: Iterable[AutoIdRow],
        sent: _SentNames,
        settings: PlanSettings,
        *,
        retired: frozenset[str] = frozenset(),
        superseded: Collection[tuple[str, int]] = frozenset(),
    ):
        self.project = project
        self.retired = retired  # values retired in this project: never handed out again
        self.superseded = superseded
        self.name = project.name.strip()
        self.settings = settings
        self.sent = sent
        self.outcomes: list[StudyOutcome] = []
        self.new_ids: list[NewAutoId] = []
        self.transfers: list[TransferRequest] = []
        self.anomalies: list[Anomaly] = []
        self.problems: Counter[str] = Counter()  # patients skipped, by what was found
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
        for pseudonym in sent.patients_of:
            self.reserve(pseudonym)  # sent to the PACS under this name, whatever AutoID says
        for value in retired:
            self.reserve(value)  # retired by autoid repair: reserved for ever

    def _anomaly(self, kind: str, message: str, action: str, count: int = 1) -> None:
        self.anomalies.append(Anomaly(kind, self.project.name, message, action, count))

    def _index_rows(self, rows: Iterable[AutoIdRow]) -> None:
        """Index the project's AutoID rows both ways; conflicts are kept aside, not merged.

        Rows under a variant spelling of the project's name (a renamed project?) are nobody's
        to hand out or to look up: their values stay reserved and their patients are skipped.
        Plain dicts, with sets only for the rare conflicts: a million rows index in a second.
        """
        self.value_of: dict[str, str] = {}  # hash -> value (the first one seen)
        self.hash_of: dict[str, str] = {}  # value -> hash (the first one seen)
        self.split: dict[str, set[str]] = {}  # hash -> its several values
        self.shared: dict[str, set[str]] = {}  # value -> its several hashes
        self.reserved: set[str] = set()  # values in use without a complete row of this project
        self.variant_hashes: set[str] = set()
        variants: Counter[str] = Counter()
        incomplete = 0
        for row in rows:
            hash_, value = normalise_hash(row.hash), row.value.strip()
            if row.project_name.strip() != self.name:
                variants[row.project_name.strip()] += 1
                self.variant_hashes.add(hash_)
                if value:
                    self.reserved.add(value)
                continue
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
        self.variant_hashes.discard("")
        self.in_use: set[str] = set(self.hash_of) | self.reserved
        self.used_in_pattern = 0
        if self.pattern is not None:
            self.used_in_pattern = sum(map(self.pattern.contains, self.in_use))
        self._report_row_problems(incomplete, variants)

    def _report_row_problems(self, incomplete: int, variants: Counter[str]) -> None:
        if incomplete:
            self._anomaly(
                "autoid_incomplete_rows",
                f"{incomplete} AutoID row(s) lack a hash or a value and are ignored",
                "Complete or delete these rows in the AutoID database.",
                incomplete,
            )
        if variants:
            spellings = ", ".join(sorted(variants))
            count = sum(variants.values())
            self._anomaly(
                "autoid_name_variant",
                f"{count} AutoID row(s) are stored under project name {spellings}, which "
                f"differs from {self.name} only in case or spacing (a renamed project?); their "
                "IDs are never handed out again and their patients' studies are skipped",
                f"If it is this project renamed, set autoid_project_name to {self.name} on "
                "those AutoID rows; if it is another project, rename one of the two.",
                count,
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

    def _owned_by_another(self, name: str, patient: str, keys: tuple[str, ...]) -> bool:
        """Whether AutoID or an existing request gives ``name`` to someone else."""
        if self.sent.patients_of.get(name, {patient}) - {patient}:
            return True
        if name in self.reserved:
            return True  # an incomplete or variant row holds it for somebody unknown
        if name in self.retired and name not in self.hash_of:
            return True  # retired and no live row gives it to anybody: nobody goes under it
        stored = self.shared.get(name) or ({self.hash_of[name]} if name in self.hash_of else set())
        return not stored <= set(keys)

    def _decide(self, patient: str, keys: tuple[str, ...]) -> _Decision:
        """One patient's name in this project, from AutoID and the requests already sent."""
        value, conflict = self._known_id(keys)
        if conflict:
            return _Decision(skip=AUTOID_CONFLICT)
        if self.variant_hashes.intersection(keys):
            return _Decision(skip=AUTOID_NAME_VARIANT)
        sent = self.sent.names_of.get(patient, set())
        if any(self._owned_by_another(n, patient, keys) for n in sent | {value} - {""}):
            self.problems["a name this patient was sent under belongs to another patient"] += 1
            return _Decision(skip=AUTOID_CONFLICT)
        if value:
            if sent - {value}:
                self.problems["was sent under another name than its AutoID row (served)"] += 1
            return _Decision(value, "reused")
        if len(sent) > 1:
            self.problems["was sent under several names and has no AutoID row"] += 1
            return _Decision(skip=AUTOID_CONFLICT)
        if sent:
            return _Decision(next(iter(sent)), "adopted")
        return _Decision()

    def _request_is_sound(self, study: IncomingStudy, name: str) -> bool:
        """Exactly one request, to this project, under the patient's name (if it has one).

        Requests superseded by a retired row do not count; a study without a patient ID whose
        requests are all superseded is sound (autoid repair listed it; nothing can be resent).
        """
        live = [
            t for t in study.transfer_requests if (study.uid, t.instance) not in self.superseded
        ]
        if not live and not name and study.transfer_requests:
            return True
        requested = [(t.project_name.strip(), t.name.strip()) for t in live]
        if len(requested) != 1:
            return False
        project, sent_name = requested[0]
        return project == self.name and bool(sent_name) and sent_name == (name or sent_name)

    def plan_studies(self, studies: Iterable[IncomingStudy]) -> None:
        """Decide per patient (all spellings of one normalised ID together), then per study."""
        name = self.project.name
        by_patient: dict[str, list[IncomingStudy]] = {}
        mismatched = empty = 0
        for study in studies:
            patient = normalise_patient_id(study.patient_id)
            if patient:
                by_patient.setdefault(patient, []).append(study)
            elif study.transfer_requests:
                mismatched += not self._request_is_sound(study, "")
                self.outcomes.append(_outcome(study, name, ALREADY_TRANSFERRED))
            else:
                empty += 1
                self.outcomes.append(_outcome(study, name, SKIPPED, EMPTY_PATIENT_ID))
        new_patients: dict[str, list[IncomingStudy]] = {}
        for patient, group in by_patient.items():
            keys = self.settings.hasher.patient_keys(patient, {s.patient_id for s in group})
            decision = self._decide(patient, keys)
            pending = []
            for study in group:
                if study.transfer_requests:
                    mismatched += not self._request_is_sound(study, decision.value)
                    self.outcomes.append(_outcome(study, name, ALREADY_TRANSFERRED))
                else:
                    pending.append(study)
            if not pending:
                continue
            if decision.skip:
                self.outcomes.extend(_outcome(s, name, SKIPPED, decision.skip) for s in pending)
            elif decision.value:
                if decision.source == "adopted":
                    hash_ = self.settings.hasher.primary(patient)
                    self.new_ids.append(NewAutoId(name, hash_, decision.value))
                for study in pending:
                    self._transfer(study, decision.value, decision.source)
            else:
                new_patients[patient] = pending
        self._report_study_problems(empty, mismatched)
        self._assign_new_ids(new_patients)

    def _report_study_problems(self, empty: int, mismatched: int) -> None:
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
                "one request to this project under the patient's ID (another project, an empty "
                "name, several requests or another name)",
                "Check these transfers in the Incoming database (run autoid audit).",
                mismatched,
            )
        for problem, count in sorted(self.problems.items()):
            self._anomaly(
                "transfer_name_conflict",
                f"{count} patient(s): {problem}",
                "Check this patient's transfers and AutoID rows (run autoid audit); a name in "
                "the research PACS must belong to one patient.",
                count,
            )

    def _assign_new_ids(self, new_patients: dict[str, list[IncomingStudy]]) -> None:
        """New IDs for new patients, oldest study first, stored under the primary hash."""
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
            self.new_ids.append(NewAutoId(name, self.settings.hasher.primary(patient), value))
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
        assert self.pattern is not None  # new patients of an invalid pattern are skipped
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
