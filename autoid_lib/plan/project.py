"""One project's plan: its patients looked up in AutoID and in the names already sent, new IDs
for new patients, a transfer request per pending study, and its capacity afterwards."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from autoid_lib.errors import PatternError
from autoid_lib.hashing import normalise_hash, normalise_patient_id
from autoid_lib.ids import generate as idgen
from autoid_lib.ids.space import compile_pattern
from autoid_lib.plan.existing import SentNames
from autoid_lib.plan.model import (
    ALREADY_TRANSFERRED,
    AUTOID_CONFLICT,
    AUTOID_NAME_VARIANT,
    EMPTY_PATIENT_ID,
    ID_SPACE_EXHAUSTED,
    INVALID_PATTERN,
    SKIPPED,
    TRANSFER,
    Anomaly,
    NewAutoId,
    PlanSettings,
    ProjectState,
    StudyOutcome,
    TransferRequest,
    outcome,
)
from autoid_lib.snapshot import AutoIdRow, IncomingStudy, ProjectRecord


@dataclass(frozen=True)
class _Decision:
    """What one patient's pending studies get: a known name, a new ID, or a skip reason."""

    value: str = ""
    source: str = ""  # "reused" | "adopted" (a name sent before, recorded in AutoID now)
    skip: str = ""


class ProjectPlanner:
    """Plans one project: looks patients up, assigns new IDs, lists transfers."""

    def __init__(
        self,
        project: ProjectRecord,
        rows: Iterable[AutoIdRow],
        sent: SentNames,
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
                self.outcomes.append(outcome(study, name, ALREADY_TRANSFERRED))
            else:
                empty += 1
                self.outcomes.append(outcome(study, name, SKIPPED, EMPTY_PATIENT_ID))
        new_patients: dict[str, list[IncomingStudy]] = {}
        for patient, group in by_patient.items():
            keys = self.settings.hasher.patient_keys(patient, {s.patient_id for s in group})
            decision = self._decide(patient, keys)
            pending = []
            for study in group:
                if study.transfer_requests:
                    mismatched += not self._request_is_sound(study, decision.value)
                    self.outcomes.append(outcome(study, name, ALREADY_TRANSFERRED))
                else:
                    pending.append(study)
            if not pending:
                continue
            if decision.skip:
                self.outcomes.extend(outcome(s, name, SKIPPED, decision.skip) for s in pending)
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
                    self.outcomes.append(outcome(study, name, SKIPPED, INVALID_PATTERN))
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
                self.outcomes.append(outcome(study, name, SKIPPED, ID_SPACE_EXHAUSTED))
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
            outcome(study, self.project.name, TRANSFER, pseudonym=value, id_source=source)
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
