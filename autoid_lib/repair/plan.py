"""The repair core: what ``autoid repair`` must write to undo the legacy job's damage, purely.

``plan_repair(snapshot, settings)`` takes the Projects records, *all* of Incoming (every study
with its transfer requests) and the whole AutoID table, and returns a ``RepairPlan``: AutoID rows
to retire, AutoID rows to create, transfer requests to send again, and the list of wrong copies
the research PACS holds. No I/O, no clock; ``repair.job`` reads and writes.

The rule (docs/repair.md), per auto-ID project:

- A patient is its normalised patient ID (every spelling and legacy hash of it together); an
  AutoID row whose hash matches no study in Incoming is a patient of its own.
- Every (patient, ID) pair the project knows, from live AutoID rows and from transfer requests,
  is ranked: pairs a study was sent under first, by the earliest request date, then by the
  lowest AutoID record number. Going down that list, a pair is kept when neither its patient
  nor its ID is taken yet. So an ID stays with the patient first sent under it, and a patient
  keeps the first ID it was sent under among those still free.
- Every other pair is retired (``autoid_lib.retired``): a live row is renamed to
  ``autoid-kit:retired:<project>``; a pair known only from a request gets a retired row.
- A patient of Incoming left without an ID gets a new one from the pattern, avoiding every value
  the project has ever used (live, retired, sent, held by incomplete or variant rows). A hash
  that matches no study gets none: it may be another spelling of a kept patient, and if it is
  not, the run gives that patient a new ID with its next study.
- Rows for an empty patient ID are retired; their studies have no right ID.
- Each study sent under a retired pair gets one new request under its patient's ID (``resend``)
  unless it already has one.

The plan is a fixed point: applied, the same inputs plan nothing more; cut off anywhere, the
next plan completes it (retirements are planned first and everything is derived from state).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from autoid_lib.errors import AutoIdError
from autoid_lib.hashing import PatientHasher, normalise_hash, normalise_patient_id
from autoid_lib.ids import generate as idgen
from autoid_lib.ids.space import compile_pattern
from autoid_lib.plan import NewAutoId, TransferRequest
from autoid_lib.retired import (
    name_key,
    retired_by_project,
    retired_from,
    retired_name,
    superseded_requests,
)
from autoid_lib.snapshot import (
    KIT_PROJECT_PREFIX,
    AutoIdRow,
    IncomingStudy,
    ProjectRecord,
    Snapshot,
)

# Why a row is retired: stable strings, shown in the report and counted in summary.json.
SEVERAL_IDS = "the patient keeps another ID"
SHARED_ID = "the ID stays with another patient"
EMPTY_ID = "row for an empty patient ID"
SENT_UNDER_RETIRED = "request sent under a retired ID"

# What becomes of a wrong copy's study.
RESEND_PLANNED = "new request planned"
RESEND_DONE = "new request exists"
NO_RIGHT_ID = "none: the study has no patient ID"
NO_ID_LEFT = "none: no ID could be given"

IdGenerator = Callable[[str, Collection[str], int], list[str]]

_UNSENT = "~"  # sorts after every request date


@dataclass(frozen=True)
class RepairSettings:
    hasher: PatientHasher
    requested_at: str  # "YYYY-MM-DD HH:MM", REDCap server time, for re-sent requests
    generate_ids: IdGenerator | None = None
    rng: random.Random | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Retirement:
    """An AutoID row whose ``autoid_project_name`` becomes ``autoid-kit:retired:<project>``."""

    record_id: str
    project_name: str
    value: str
    reason: str

    @property
    def retired_name(self) -> str:
        return retired_name(self.project_name)


@dataclass(frozen=True)
class WrongCopy:
    """A study the research PACS holds under a wrong ID: what it was sent as, what it should be."""

    study_uid: str
    project_name: str
    sent_under: str
    belongs_under: str  # '' when the study has no right ID (see ``new_request``)
    requested_date: str
    sent_date: str  # filled in by the forwarder; '' if not (yet) sent
    new_request: str  # RESEND_PLANNED | RESEND_DONE | NO_RIGHT_ID | NO_ID_LEFT


@dataclass(frozen=True)
class ProjectRepair:
    """One project's repair in counts (no patient data)."""

    name: str
    patients_with_several_ids: int = 0
    ids_with_several_patients: int = 0
    empty_id_rows: int = 0
    retired: int = 0
    new_ids: int = 0
    adopted: int = 0
    resend: int = 0
    unresolved: int = 0  # patients left without an ID (invalid or exhausted pattern)
    note: str = ""


@dataclass(frozen=True)
class RepairPlan:
    retirements: tuple[Retirement, ...]
    new_rows: tuple[NewAutoId, ...]  # live rows and retired-pair rows to create
    resend: tuple[TransferRequest, ...]
    wrong_copies: tuple[WrongCopy, ...]
    projects: tuple[ProjectRepair, ...]
    # (name_key(project), value) of the new IDs drawn from a pattern: a dry run's are
    # examples, since ``--apply`` draws them again
    drawn: frozenset[tuple[str, str]] = frozenset()

    def is_empty(self, *, resend: bool) -> bool:
        """Nothing to write (with ``resend``: not even a request to send again)."""
        return not (self.retirements or self.new_rows or (resend and self.resend))

    def describe(self) -> str:
        """The plan in one phrase, as the report's headline and the terminal show it."""
        new_ids = sum(p.new_ids for p in self.projects)
        text = (
            f"{sum(p.retired for p in self.projects)} AutoID row(s) to retire, "
            f"{new_ids} new ID(s), "
            f"{len(self.resend)} study(ies) to send again, "
            f"{len(self.wrong_copies)} wrong copy(ies) in the research PACS"
        )
        unresolved = sum(p.unresolved for p in self.projects)
        if unresolved:
            text += f"; {unresolved} patient(s) could not get an ID"
        return text


def plan_repair(snapshot: Snapshot, settings: RepairSettings) -> RepairPlan:
    """Every write of one repair, from all of history."""
    patients = _Patients(snapshot.studies, settings.hasher)
    superseded = superseded_requests(
        snapshot.studies, retired_by_project(snapshot.autoid_rows), settings.hasher
    )
    names = [name_key(p.name) for p in snapshot.projects if p.use_autoid and p.name.strip()]
    retirements: list[Retirement] = []
    new_rows: list[NewAutoId] = []
    summaries: list[ProjectRepair] = []
    finals: dict[str, tuple[str, dict[str, str]]] = {}
    drawn_values: dict[str, set[str]] = {}
    for project in snapshot.projects:
        if not project.use_autoid or not project.name.strip():
            continue
        if names.count(name_key(project.name)) > 1 or project.name.strip().startswith(
            KIT_PROJECT_PREFIX
        ):
            summaries.append(
                ProjectRepair(project.name.strip(), note="not repaired: the run does not serve it")
            )
            continue
        repair = _ProjectRepair(project, snapshot, patients, superseded, settings)
        retirements += repair.retirements
        new_rows += repair.new_rows
        drawn_values[repair.name] = repair.drawn
        summaries.append(repair.summary())
        finals[name_key(project.name)] = (repair.name, repair.final)
    after = _rows_after(snapshot.autoid_rows, retirements, new_rows)
    superseded_after = superseded_requests(
        snapshot.studies, retired_by_project(after), settings.hasher
    )
    resend, copies = _resend(snapshot.studies, superseded_after, finals, patients, settings)
    summaries = [_with_resend(s, resend) for s in summaries]
    drawn = frozenset((name_key(n), v) for n, values in drawn_values.items() for v in values)
    return RepairPlan(
        tuple(retirements), tuple(new_rows), tuple(resend), tuple(copies), tuple(summaries), drawn
    )


def _with_resend(summary: ProjectRepair, resend: list[TransferRequest]) -> ProjectRepair:
    count = sum(name_key(t.project_name) == name_key(summary.name) for t in resend)
    return ProjectRepair(**{**summary.__dict__, "resend": count})


def _rows_after(
    rows: Iterable[AutoIdRow], retirements: list[Retirement], new_rows: list[NewAutoId]
) -> list[AutoIdRow]:
    """The AutoID table as it will be once the plan is applied."""
    renamed = {r.record_id: r.retired_name for r in retirements}
    after = [
        AutoIdRow(r.record_id, renamed.get(r.record_id, r.project_name), r.hash, r.value, r.method)
        for r in rows
    ]
    after += [
        AutoIdRow(f"new-{i}", n.project_name, n.hash, n.value) for i, n in enumerate(new_rows)
    ]
    return after


class _Patients:
    """Who is who: normalised patient IDs, their spellings and every hash that finds them."""

    def __init__(self, studies: Iterable[IncomingStudy], hasher: PatientHasher):
        self.hasher = hasher
        spellings: dict[str, set[str]] = defaultdict(set)
        for study in studies:
            spellings[normalise_patient_id(study.patient_id)].add(study.patient_id)
        self.owner_of: dict[str, str] = {}
        for patient, raw in spellings.items():
            if patient:
                for key in hasher.patient_keys(patient, raw):
                    self.owner_of.setdefault(key, patient)
        self.empty_keys = frozenset(
            hasher.patient_keys("", spellings.get("", set()) | {"", " ", "\x00"})
        )

    def owner(self, hash_: str) -> str:
        """The patient a stored hash belongs to; an unknown hash is a patient of its own."""
        return self.owner_of.get(hash_) or _unknown(hash_)

    def hash_for(self, owner: str) -> str:
        """The hash a new row of this patient is stored under."""
        if owner.startswith(_UNKNOWN):
            return owner[len(_UNKNOWN) :]
        return self.hasher.primary(owner)


_UNKNOWN = "\x00hash:"  # never a normalised patient ID: those carry no NUL at either end


def _unknown(hash_: str) -> str:
    return _UNKNOWN + hash_


@dataclass
class _Pair:
    """What links one patient to one ID in a project: live rows and requests sent under it."""

    records: list[AutoIdRow] = field(default_factory=list)
    first_sent: str = ""  # the earliest request date ('' if none is dated)
    sent: bool = False

    def sent_on(self, date: str) -> None:
        if date and (not self.first_sent or date < self.first_sent):
            self.first_sent = date
        self.sent = True

    def rank(self, value: str) -> tuple:
        numbers = [int(r.record_id) for r in self.records if r.record_id.isdigit()]
        lowest = min(numbers, default=float("inf"))
        return (not self.sent, self.first_sent or _UNSENT, lowest, value)


class _ProjectRepair:
    """Decides one project: which pair stays, what is retired, who gets a new ID."""

    def __init__(self, project, snapshot: Snapshot, patients: _Patients, superseded, settings):
        self.project: ProjectRecord = project
        self.name = project.name.strip()
        self.key = name_key(self.name)
        self.settings = settings
        self.patients = patients
        self.retirements: list[Retirement] = []
        self.new_rows: list[NewAutoId] = []
        self.drawn: set[str] = set()  # values drawn from the pattern (not taken from requests)
        self.final: dict[str, str] = {}  # patient -> the ID it goes under after the repair
        self.counts: dict[str, int] = defaultdict(int)
        self.note = ""
        self.used: set[str] = set()
        pairs = self._pairs(snapshot, superseded)
        self._decide(pairs)

    def _pairs(self, snapshot: Snapshot, superseded) -> dict[tuple[str, str], _Pair]:
        pairs: dict[tuple[str, str], _Pair] = defaultdict(_Pair)
        self.retired_values: set[str] = set()
        self.empty_retired: dict[str, set[str]] = defaultdict(set)  # value -> empty-ID hashes
        empty_sent: list[tuple[str, str]] = []  # (raw patient ID, name) of empty-ID studies
        self.known: set[str] = set()  # patients the project has ever known
        for row in snapshot.autoid_rows:
            value, hash_ = row.value.strip(), normalise_hash(row.hash)
            project = row.project_name.strip()
            retired = retired_from(row)
            if retired is not None and name_key(retired) == self.key:
                self.used.add(value)
                self.retired_values.add(value)
                if hash_ and hash_ not in self.patients.empty_keys:
                    self.known.add(self.patients.owner(hash_))
                continue
            if name_key(project) != self.key:
                continue
            self.used.add(value)
            if project != self.name or not hash_ or not value:
                continue  # a variant spelling or an incomplete row: left alone, value reserved
            if hash_ in self.patients.empty_keys:
                self.retirements.append(Retirement(row.record_id, project, value, EMPTY_ID))
                self.empty_retired[value].add(hash_)
                self.counts["empty"] += 1
                continue
            pair = pairs[(self.patients.owner(hash_), value)]
            pair.records.append(row)
        for study in snapshot.studies:
            patient = normalise_patient_id(study.patient_id)
            for t in study.transfer_requests:
                name = t.name.strip()
                if name_key(t.project_name) != self.key or not name:
                    continue
                self.used.add(name)
                if (study.uid, t.instance) in superseded:
                    continue
                if not patient:
                    empty_sent.append((study.patient_id, name))
                    continue
                pairs[(patient, name)].sent_on(t.requested_date.strip())
        self.used.discard("")
        for patient, _ in pairs:
            self.known.add(patient)
        self.known = {p for p in self.known if not p.startswith(_UNKNOWN)}
        self._retire_empty_requests(empty_sent)
        return pairs

    def _retire_empty_requests(self, empty_sent: list[tuple[str, str]]) -> None:
        """A study without a patient ID sent under a name: that name is nobody's for it."""
        empty_hash = self.settings.hasher.primary("")
        for raw, name in empty_sent:
            keys = set(self.settings.hasher.lookup_keys(raw, ""))
            if not keys & self.empty_retired[name]:
                self.new_rows.append(NewAutoId(retired_name(self.name), empty_hash, name))
                self.empty_retired[name].add(empty_hash)

    def _eligible(self, value: str, pair: _Pair) -> bool:
        """A retired value only stays where a live row still holds it."""
        return bool(pair.records) or value not in self.retired_values

    def _decide(self, pairs: dict[tuple[str, str], _Pair]) -> None:
        values_of: dict[str, set[str]] = defaultdict(set)
        owners_of: dict[str, set[str]] = defaultdict(set)
        for patient, value in pairs:
            values_of[patient].add(value)
            owners_of[value].add(patient)
        self.counts["several"] = sum(len(v) > 1 for v in values_of.values())
        self.counts["shared"] = sum(len(p) > 1 for p in owners_of.values())
        taken: dict[str, str] = {}
        ranked = sorted(pairs.items(), key=lambda item: item[1].rank(item[0][1]))
        for (patient, value), pair in ranked:
            if patient in self.final or value in taken or not self._eligible(value, pair):
                continue
            self.final[patient], taken[value] = value, patient
        for (patient, value), pair in ranked:
            if self.final.get(patient) == value:
                if not pair.records:  # known only from requests: record it in AutoID
                    self.new_rows.append(
                        NewAutoId(self.name, self.patients.hash_for(patient), value)
                    )
                    self.counts["adopted"] += 1
                continue
            reason = SHARED_ID if value in taken else SEVERAL_IDS
            for row in pair.records:
                self.retirements.append(Retirement(row.record_id, self.name, value, reason))
            if not pair.records:
                self.new_rows.append(
                    NewAutoId(retired_name(self.name), self.patients.hash_for(patient), value)
                )
        self._new_ids(sorted(self.known - set(self.final), key=lambda p: _first_rank(p, ranked)))

    def _new_ids(self, patients: list[str]) -> None:
        if not patients:
            return
        try:
            pattern = compile_pattern(self.project.pattern)
            if self.settings.generate_ids is not None:
                values = self.settings.generate_ids(self.project.pattern, self.used, len(patients))
            else:
                values = idgen.generate_ids(pattern, self.used, len(patients), self.settings.rng)
        except AutoIdError as error:
            self.counts["unresolved"] = len(patients)
            self.note = f"{len(patients)} patient(s) left without an ID: {error}"
            return
        for patient, value in zip(patients, values, strict=True):
            self.new_rows.append(NewAutoId(self.name, self.patients.hash_for(patient), value))
            self.final[patient] = value
            self.used.add(value)
            self.drawn.add(value)
        self.counts["new"] = len(patients)

    def summary(self) -> ProjectRepair:
        retired_pairs = sum(1 for r in self.new_rows if r.project_name != self.name)
        return ProjectRepair(
            name=self.name,
            patients_with_several_ids=self.counts["several"],
            ids_with_several_patients=self.counts["shared"],
            empty_id_rows=self.counts["empty"],
            retired=len(self.retirements) + retired_pairs,
            new_ids=self.counts["new"],
            adopted=self.counts["adopted"],
            unresolved=self.counts["unresolved"],
            note=self.note,
        )


def _first_rank(patient: str, ranked) -> tuple:
    """A patient's place in the queue for a new ID: its best-ranked pair (then its name)."""
    for (owner, value), pair in ranked:
        if owner == patient:
            return (0, pair.rank(value))
    return (1, (), patient)


def _resend(studies, superseded, finals, patients: _Patients, settings: RepairSettings):
    """One new request per study sent under a retired pair and not yet requested again."""
    resend: list[TransferRequest] = []
    copies: list[WrongCopy] = []
    for study in studies:
        patient = normalise_patient_id(study.patient_id)
        by_project: dict[str, list] = defaultdict(list)
        for t in study.transfer_requests:
            if (study.uid, t.instance) in superseded:
                by_project[name_key(t.project_name)].append(t)
        for key, wrong in by_project.items():
            project_name, final_of = finals.get(key, (wrong[0].project_name.strip(), {}))
            final = final_of.get(patient, "") if patient else ""
            live = [
                t
                for t in study.transfer_requests
                if name_key(t.project_name) == key and (study.uid, t.instance) not in superseded
            ]
            if not patient:
                status = NO_RIGHT_ID
            elif not final:
                status = NO_ID_LEFT
            elif any(t.name.strip() == final for t in live):
                status = RESEND_DONE
            else:
                status = RESEND_PLANNED
                resend.append(
                    TransferRequest(
                        study_uid=study.uid,
                        instance=study.next_instance,
                        project_name=project_name,
                        pseudonym=final,
                        requested_date=settings.requested_at,
                    )
                )
            copies += [
                WrongCopy(
                    study.uid,
                    t.project_name.strip(),
                    t.name.strip(),
                    final,
                    t.requested_date,
                    t.transfer_date,
                    status,
                )
                for t in wrong
            ]
    return resend, copies
