"""One project's plan: its patients' names (``patients``), new IDs for new patients, a transfer
request per pending study, and its state afterwards (``capacity``)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from autoid_lib.errors import PatternError
from autoid_lib.hashing import normalise_patient_id
from autoid_lib.ids import generate as idgen
from autoid_lib.ids.space import compile_pattern
from autoid_lib.plan.capacity import project_state
from autoid_lib.plan.existing import SentNames
from autoid_lib.plan.model import (
    ALREADY_TRANSFERRED,
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
from autoid_lib.plan.patients import ProjectIds
from autoid_lib.snapshot import AutoIdRow, IncomingStudy, ProjectRecord


class ProjectPlanner:
    """Plans one project: looks patients up (``ProjectIds``), assigns new IDs, lists
    transfers."""

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
        self.superseded = superseded
        self.name = project.name.strip()
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
        self.ids = ProjectIds(self.name, self.pattern, rows, sent, self._anomaly, retired=retired)

    def _anomaly(self, kind: str, message: str, action: str, count: int = 1) -> None:
        self.anomalies.append(Anomaly(kind, self.project.name, message, action, count))

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
            decision = self.ids.decide(patient, keys)
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
        for problem, count in sorted(self.ids.problems.items()):
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
        free = self.pattern.size - self.ids.used_in_pattern
        served, unserved = order[:free], order[free:]
        values = self._generate(len(served)) if served else []
        for patient, value in zip(served, values, strict=True):
            self.new_ids.append(NewAutoId(name, self.settings.hasher.primary(patient), value))
            self.ids.reserve(value)
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
            return self.settings.generate_ids(self.project.pattern, self.ids.in_use, count)
        assert self.pattern is not None  # new patients of an invalid pattern are skipped
        return idgen.generate_ids(self.pattern, self.ids.in_use, count=count, rng=self.settings.rng)

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
        """The project after the plan; a capacity warning joins its anomalies."""
        state, anomalies = project_state(
            self.project,
            self.pattern,
            self.pattern_error,
            self.ids.used_in_pattern,
            self.settings.capacity_warn_at,
            exhaustion_reported=any(a.kind == "id_space_exhausted" for a in self.anomalies),
        )
        self.anomalies.extend(anomalies)
        return state
