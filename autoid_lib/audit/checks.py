"""The full-history audit: what all of Incoming and AutoID say about the kit's invariants.

``audit(snapshot, settings)`` takes a ``Snapshot`` of *all* history (the Projects records, every
Incoming study read with ``history=True`` and the whole AutoID table) and returns an
``AuditReport``: one ``Finding`` per kind of problem, each with a count, a table and what to do.
``HistoryFold`` is the same audit fed Incoming one chunk at a time (bounded memory: it keeps
compact studies, never raw rows). Neither talks to REDCap, reads the clock or the environment;
``autoid_lib.audit.job`` does the four reads and runs the audit notebook.

Checks (``Finding.kind``):

- ``missing_transfer``     a study addressed to an auto-ID project, with no transfer request,
                           whose study date is older than the run window: no run will serve it;
- ``several_transfers``    a study with more than one transfer request;
- ``wrong_project``        a study whose transfer requests all go to another project;
- ``unknown_pseudonym``    a transfer to an auto-ID project whose name is not in AutoID for it;
- ``wrong_patient``        a transfer whose name is in AutoID, but for another patient's hash;
- ``hash_several_values``  one patient hash with several IDs in one project;
- ``value_several_hashes`` one ID stored for several patient hashes in one project;
- ``spelling_several_ids`` one patient (normalised ID) whose spellings find several IDs in a
                           project (e.g. rows under ``"ABC"`` and ``"ABC\\0"``): the run skips it;
- ``project_name_variant`` AutoID rows under a spelling of an auto-ID project's name that
                           differs only in case or spacing (a renamed project?): the run never
                           hands their IDs out and skips their patients;
- ``pattern_mismatch``     a stored ID that does not fullmatch the project's current pattern (a
                           notice: the pattern was probably changed on purpose);
- ``invalid_pattern``      an auto-ID project whose pattern cannot be used at all;
- ``downstream_error``     a transfer the forwarder marked in ``transfer_error`` (grouped by code);
- ``retired_transfer``     a request sent under an ID ``autoid repair`` retired for its patient (a
                           notice: the repair listed the copy; such requests are left out of the
                           transfer and pseudonym checks above).

Retired rows (``autoid_lib.retired``) and the kit's other records are not patients' IDs: they are
left out of the conflict, pattern and per-project checks.

Tables never carry a patient ID, a patient name, an accession number or a patient hash: a study
is shown by project, study date and the last 8 characters of its UID (the whole UID only with
``detail="full"``), an AutoID row by its record ID and value.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import pandas as pd

from autoid_lib.errors import PatternError
from autoid_lib.hashing import PatientHasher, normalise_hash, normalise_patient_id
from autoid_lib.ids.generate import as_space
from autoid_lib.plan import TRANSFER, PlanSettings, plan
from autoid_lib.result import dicom_date, study_ref
from autoid_lib.retired import retired_by_project, superseded_requests
from autoid_lib.snapshot import (
    AutoIdRow,
    ExistingTransfer,
    IncomingStudy,
    ProjectRecord,
    Snapshot,
)
from autoid_lib.vocab import plural

PROBLEM, NOTICE = "problem", "notice"
DETAILS = ("summary", "full")
SUMMARY_ROWS = 50  # rows per finding table in a "summary" report

#: transfer_error checkbox codes (Incoming data dictionary) and what each one means.
ERROR_REASONS = {
    "1": "anonymization error",
    "2": "send error to rDMA",
    "3": "performed pixel anonymization",
}
NOTICE_CODES = frozenset({"3"})  # the forwarder did its job, but a human should look
ERROR_ACTIONS = {
    "1": "Check the forwarder's anonymization log for these studies, fix the cause, and "
    "re-request the transfer (a new transfers instance) once fixed.",
    "2": "Check the connection to the research PACS (rDMA) and re-send these studies.",
    "3": "Pixel data was anonymized (burned-in text): check the images in the research PACS "
    "are still usable.",
}

STUDY_COLUMNS = ["project", "study_date", "study_ref"]
#: columns naming a pseudonym: beside a study reference only at detail = full, as in a run report
PSEUDONYM_COLUMNS = ("pseudonym", "pseudonyms", "sent_under", "requested_again")
#: the reason of a study that fell out of the window with no reason of its own
NOT_SERVED = "no run served it while it was in the window (the kit not yet running, or failing)"
WAITING = "the next run serves it"


@dataclass(frozen=True)
class AuditRun:
    """How the audit ran (the kernel side knows it; the pure audit does not): for run details."""

    started: datetime
    duration_s: float
    api_requests: int
    environment: dict = field(default_factory=dict)
    peak_rss_mb: float = 0.0  # the audit process's peak resident memory


@dataclass(frozen=True)
class AuditSettings:
    """What the audit needs besides the snapshot.

    ``window_begin`` is the start of the run's window in REDCap server time (now minus
    ``lookback_days``). ``in_window`` holds the UIDs of the studies a run would read now (created
    or modified in the window); a study outside it has fallen out of the run's reach. Without
    it, a study dated before ``window_begin`` counts as out of reach.
    """

    hasher: PatientHasher
    window_begin: datetime
    lookback_days: int = 14
    in_window: frozenset[str] | None = None


@dataclass(frozen=True)
class Finding:
    """One kind of problem: how many, which (a table without patient data), what to do."""

    kind: str
    title: str
    severity: str  # PROBLEM | NOTICE
    count: int
    action: str
    table: pd.DataFrame = field(compare=False, repr=False)
    groups: pd.DataFrame | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "project": ", ".join(sorted(set(self.table.get("project", ())))),
            "severity": self.severity,
            "count": self.count,
            "message": self.title,
            "action": plain_text(self.action),
        }


@dataclass(frozen=True)
class AuditReport:
    """The audit's result: findings, a per-project overview and the studies still pending."""

    findings: tuple[Finding, ...]
    projects: pd.DataFrame = field(compare=False, repr=False)
    pending: pd.DataFrame = field(compare=False, repr=False)
    window_begin: datetime
    lookback_days: int
    studies: int
    autoid_rows: int
    run: AuditRun | None = field(default=None, compare=False)

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == PROBLEM)

    @property
    def status(self) -> str:
        """ok (nothing found), attention (a notice or a problem to look at)."""
        return "attention" if self.findings else "ok"

    def finding(self, kind: str) -> Finding | None:
        return next((f for f in self.findings if f.kind == kind), None)

    def counts(self) -> dict[str, int]:
        return {f.kind: f.count for f in self.findings}

    @property
    def headline(self) -> str:
        label = "OK" if self.status == "ok" else "Needs attention"
        return f"{label} — audit of all history ({self.scope}): {self.outcome}"

    @property
    def scope(self) -> str:
        """``10 studies, 1 AutoID row``: what the audit read."""
        return (
            f"{plural(self.studies, 'study', 'studies')}, {plural(self.autoid_rows, 'AutoID row')}"
        )

    @property
    def outcome(self) -> str:
        """``nothing found`` or ``3 findings: 2 problems, 1 notice`` (kinds, not rows)."""
        if not self.findings:
            return "nothing found"
        problems = len(self.problems)
        notices = len(self.findings) - problems
        parts = [plural(problems, "problem")] if problems else []
        parts += [plural(notices, "notice")] if notices else []
        return f"{plural(len(self.findings), 'finding')}: {', '.join(parts)}"

    def summary(self) -> dict:
        """summary.json for ``reports/<ts>-audit/``: counts and texts, no study or patient data."""
        return {
            "kind": "audit",
            "mode": "audit",
            "status": self.status,
            "headline": self.headline,
            "window": {
                "begin": f"{self.window_begin:%Y-%m-%d %H:%M:%S}",
                "lookback_days": self.lookback_days,
            },
            "studies": self.studies,
            "autoid_rows": self.autoid_rows,
            "findings": self.counts(),
            "anomalies": [f.as_dict() for f in self.findings],
            "projects": self.projects.to_dict("records"),
            "pending_in_window": len(self.pending),
        }


def plain_text(text: str) -> str:
    """A finding's text without the backticks that mark commands (for mail and summary.json)."""
    return text.replace("`", "")


def audit(snapshot: Snapshot, settings: AuditSettings) -> AuditReport:
    """Check every invariant the kit promises over all of history, every study in one list.

    ``HistoryFold`` is the same audit fed chunk by chunk (the audit job streams Incoming)."""
    return _report(
        snapshot.projects,
        snapshot.studies,
        patient_spellings(snapshot.studies),
        len(snapshot.studies),
        snapshot.autoid_rows,
        settings,
    )


class HistoryFold:
    """The audit fed all of Incoming one chunk at a time, keeping only what the checks need.

    Every check but the patient spellings looks only at studies addressed to an auto-ID project
    or carrying a transfer request: those are kept, compact (no accession number, no instance
    without a request, repeated texts stored once); any other study is counted and adds its
    patient's spelling. ``report`` then equals ``audit`` over the whole list. Pure: no I/O, no
    clock. A chunk cannot be taken back: a read that starts over needs a new fold.
    """

    def __init__(self, projects: Iterable[ProjectRecord]):
        self.projects = tuple(projects)
        self._addressed = {p.ae_title.strip() for p in auto_id_projects(self.projects)}
        self.studies: list[IncomingStudy] = []  # the kept ones, in the order read
        self.spellings: dict[str, set[str]] = defaultdict(set)
        self.count = 0
        self._texts: dict[str, str] = {}  # one copy of each repeated text (this fold's only)

    def add(self, studies: Iterable[IncomingStudy]) -> None:
        """Fold one chunk of studies in (each study in exactly one chunk)."""
        for study in studies:
            self.count += 1
            patient_id = self._text(study.patient_id)
            normalised = normalise_patient_id(patient_id)
            if normalised:
                self.spellings[normalised].add(patient_id)
            if study.transfer_requests or study.ae_title.strip() in self._addressed:
                self.studies.append(self._compact(study, patient_id))

    def report(self, autoid_rows: Sequence[AutoIdRow], settings: AuditSettings) -> AuditReport:
        """The audit over every study folded in, with the AutoID table and settings."""
        return _report(
            self.projects, self.studies, self.spellings, self.count, autoid_rows, settings
        )

    def _text(self, text: str) -> str:
        return self._texts.setdefault(text, text)

    def _compact(self, study: IncomingStudy, patient_id: str) -> IncomingStudy:
        text = self._text
        return IncomingStudy(
            uid=study.uid,
            ae_title=text(study.ae_title),
            patient_id=patient_id,
            study_date=text(study.study_date),
            transfers=tuple(
                ExistingTransfer(
                    instance=t.instance,
                    project_name=text(t.project_name),
                    name=text(t.name),
                    requested_date=text(t.requested_date),
                    transfer_date=text(t.transfer_date),
                    error_codes=tuple(text(code) for code in t.error_codes),
                )
                for t in study.transfer_requests
            ),
        )


def auto_id_projects(projects: Iterable[ProjectRecord]) -> list[ProjectRecord]:
    """The projects the audit checks: auto-ID on, with a name and an AE title."""
    return [p for p in projects if p.use_autoid and p.name and p.ae_title]


def patient_spellings(studies: Iterable[IncomingStudy]) -> dict[str, set[str]]:
    """Normalised patient ID -> the raw spellings it arrived under (first seen first)."""
    spellings: dict[str, set[str]] = defaultdict(set)
    for study in studies:
        normalised = normalise_patient_id(study.patient_id)
        if normalised:
            spellings[normalised].add(study.patient_id)
    return spellings


def _report(
    all_projects: Sequence[ProjectRecord],
    studies: Sequence[IncomingStudy],
    spellings: dict[str, set[str]],
    study_count: int,
    autoid_rows: Sequence[AutoIdRow],
    settings: AuditSettings,
) -> AuditReport:
    """The checks over ``studies`` (at least every addressed study and every one with a
    transfer request) and every patient's ``spellings``."""
    projects = auto_id_projects(all_projects)
    auto_names = {p.name for p in projects}
    by_ae: dict[str, list[str]] = defaultdict(list)
    for p in projects:
        by_ae[p.ae_title.strip()].append(p.name)
    patient_rows = [r for r in autoid_rows if not r.is_kit_record]
    rows_by_project: dict[str, list[AutoIdRow]] = defaultdict(list)
    for row in patient_rows:
        rows_by_project[row.project_name.strip()].append(row)
    superseded = superseded_requests(studies, retired_by_project(autoid_rows), settings.hasher)
    current = [_without(study, superseded) for study in studies]

    findings: list[Finding] = []
    addressed = [
        (study, by_ae[study.ae_title.strip()])
        for study in studies
        if study.ae_title.strip() in by_ae
    ]
    missing, pending = _missing_transfers(
        addressed, settings, _next_run(all_projects, addressed, autoid_rows, settings)
    )
    findings += missing
    findings += _transfer_counts(
        [(current_study, names) for current_study, (_, names) in _current(addressed, current)]
    )
    findings += _pseudonyms(current, spellings, auto_names, rows_by_project, settings.hasher)
    findings += _autoid_conflicts(rows_by_project)
    findings += _spellings(spellings, projects, rows_by_project, settings.hasher)
    findings += _name_variants(projects, rows_by_project)
    findings += _patterns(projects, rows_by_project)
    findings += _downstream_errors(studies)
    findings += _retired_transfers(studies, superseded)
    findings = [f for f in findings if f.count]
    return AuditReport(
        findings=tuple(findings),
        projects=_project_overview(projects, addressed, rows_by_project),
        pending=pending,
        window_begin=settings.window_begin,
        lookback_days=settings.lookback_days,
        studies=study_count,
        autoid_rows=len(patient_rows),
    )


# -- the checks ---------------------------------------------------------------------------------


def _without(study: IncomingStudy, superseded) -> IncomingStudy:
    """The study without the requests a retired row superseded (history, not names)."""
    if not any((study.uid, t.instance) in superseded for t in study.transfers):
        return study
    kept = tuple(t for t in study.transfers if (study.uid, t.instance) not in superseded)
    return replace(study, transfers=kept)


def _current(addressed, current):
    by_uid = {study.uid: study for study in current}
    return [(by_uid[study.uid], (study, names)) for study, names in addressed]


def _retired_transfers(studies, superseded) -> list[Finding]:
    rows = []
    for study in studies:
        wrong = [t for t in study.transfer_requests if (study.uid, t.instance) in superseded]
        live = [t for t in study.transfer_requests if (study.uid, t.instance) not in superseded]
        for t in wrong:
            rows.append(
                _study_row(
                    study,
                    t.project_name.strip(),
                    sent_under=t.name.strip(),
                    requested=t.requested_date,
                    requested_again=", ".join(x.name.strip() for x in live) or "no",
                )
            )
    columns = [*STUDY_COLUMNS, "sent_under", "requested", "requested_again"]
    return [
        Finding(
            "retired_transfer",
            "Requests sent under an ID autoid repair retired for that patient",
            NOTICE,
            len(rows),
            "These copies are in the research PACS under a wrong ID (autoid repair listed them "
            "in its worksheet.csv): delete them there. A study with no request under its right "
            "ID yet is requested again by `autoid repair --apply --resend`.",
            _frame(rows, columns),
        )
    ]


def _study_row(study: IncomingStudy, project: str, **extra) -> dict:
    return {
        "project": project,
        "study_date": dicom_date(study.study_date),
        "study_ref": study_ref(study.uid),
        **extra,
        "study_uid": study.uid,
    }


def _frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Study rows as a table (``study_uid`` last), ordered by project and date."""
    frame = pd.DataFrame(rows, columns=[*columns, "study_uid"])
    if rows and "study_date" in frame:
        frame = frame.sort_values(["project", "study_date"], kind="stable", ignore_index=True)
    return frame


def _out_of_reach(study: IncomingStudy, settings: AuditSettings) -> bool:
    """No run reads the study again unless it is modified."""
    if settings.in_window is not None:
        return study.uid not in settings.in_window
    date = study.study_date.strip()
    if len(date) != 8 or not date.isdigit():
        return True
    return date < f"{settings.window_begin:%Y%m%d}"


def _next_run(
    all_projects: Sequence[ProjectRecord],
    addressed: list[tuple[IncomingStudy, list[str]]],
    autoid_rows: Sequence[AutoIdRow],
    settings: AuditSettings,
) -> dict[str, str]:
    """What the next run does with each study in its window still without a transfer: the
    planner's own word (one place decides a study's fate), as a reason for the audit."""
    waiting = tuple(
        study
        for study, _ in addressed
        if not study.transfer_requests and not _out_of_reach(study, settings)
    )
    if not waiting:
        return {}
    moment = settings.window_begin
    planned = plan(
        Snapshot(tuple(all_projects), waiting, tuple(autoid_rows), moment, moment),
        PlanSettings(settings.hasher, "", rng=random.Random(0)),  # values drawn are not shown
    )
    return {
        outcome.study_uid: WAITING
        if outcome.action == TRANSFER
        else f"the next run skips it: {outcome.reason}"
        for outcome in planned.studies
    }


def _missing_transfers(
    addressed: list[tuple[IncomingStudy, list[str]]],
    settings: AuditSettings,
    next_run: dict[str, str],
) -> tuple[list[Finding], pd.DataFrame]:
    old: list[dict] = []
    recent: list[dict] = []
    for study, names in addressed:
        if study.transfer_requests:
            continue
        reason = ""
        if not normalise_patient_id(study.patient_id):
            reason = "empty patient ID: the run never serves it"
        elif len(names) > 1:
            reason = "AE title shared by several auto-ID projects"
        out_of_reach = _out_of_reach(study, settings)
        fate = NOT_SERVED if out_of_reach else next_run.get(study.uid, WAITING)
        row = _study_row(study, " / ".join(names), reason=reason or fate)
        (old if out_of_reach else recent).append(row)
    columns = [*STUDY_COLUMNS, "reason"]
    finding = Finding(
        "missing_transfer",
        "Studies that fell out of the run window without a transfer",
        PROBLEM,
        len(old),
        "These studies were not created or modified within the run's window, so no run will "
        "serve them. Fix the reason if one is given (fill in the patient ID, give the project "
        "its own AE title), then run `autoid run --lookback-days N` with N reaching back to "
        "the oldest study (a dry run first), or request the transfers by hand.",
        _frame(old, columns),
    )
    return [finding], _frame(recent, columns)


def _transfer_counts(addressed) -> list[Finding]:
    several, wrong = [], []
    for study, names in addressed:
        requests = study.transfer_requests
        to_project = [t for t in requests if t.project_name.strip() in names]
        extra = {
            "transfers": len(requests),
            "requested_projects": ", ".join(t.project_name.strip() for t in requests),
            "pseudonyms": ", ".join(t.name.strip() or "(empty)" for t in requests),
        }
        if len(requests) > 1:
            several.append(_study_row(study, " / ".join(names), **extra))
        elif requests and not to_project:
            wrong.append(_study_row(study, " / ".join(names), **extra))
    columns = [*STUDY_COLUMNS, "transfers", "requested_projects", "pseudonyms"]
    return [
        Finding(
            "several_transfers",
            "Studies with more than one transfer request",
            PROBLEM,
            len(several),
            "A study must be requested once. Check in the research PACS which copy arrived; "
            "delete the surplus transfers instances in Incoming (and the copies in the research "
            "PACS if they went to the wrong participant).",
            _frame(several, columns),
        ),
        Finding(
            "wrong_project",
            "Studies transferred only to another project than the one addressed",
            PROBLEM,
            len(wrong),
            "The sender addressed one project's AE title but the study was requested for "
            "another: confirm with the project owners which project the study belongs to.",
            _frame(wrong, columns),
        ),
    ]


def _pseudonyms(
    studies, spellings, auto_names, rows_by_project, hasher: PatientHasher
) -> list[Finding]:
    hashes_by_value: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name, rows in rows_by_project.items():
        for row in rows:
            if row.value.strip():
                hashes_by_value[(name, row.value.strip())].add(normalise_hash(row.hash))
    unknown, wrong = [], []
    for study in studies:
        normalised = normalise_patient_id(study.patient_id)
        raws = spellings.get(normalised, ())
        keys = set(hasher.patient_keys(normalised, raws)) if normalised else set()
        for transfer in study.transfer_requests:
            project = transfer.project_name.strip()
            if project not in auto_names:
                continue  # a project with manual naming: AutoID does not know its IDs
            hashes = hashes_by_value.get((project, transfer.name.strip()))
            row = _study_row(
                study,
                project,
                pseudonym=transfer.name.strip() or "(empty)",
                requested=transfer.requested_date,
            )
            if not hashes:
                unknown.append(row)
            elif keys and not hashes & keys:
                wrong.append(row)
    columns = [*STUDY_COLUMNS, "pseudonym", "requested"]
    return [
        Finding(
            "unknown_pseudonym",
            "Transfers whose pseudonym is not in AutoID for their project",
            PROBLEM,
            len(unknown),
            "The study went out under an ID the kit does not know, so the patient's next study "
            "may get another one. If the ID was given by hand and is right, add the AutoID row "
            "(project, hash, value); otherwise correct transfer_name before the forwarder sends.",
            _frame(unknown, columns),
        ),
        Finding(
            "wrong_patient",
            "Transfers whose pseudonym belongs to another patient",
            PROBLEM,
            len(wrong),
            "Two patients' images may be merged under one research ID: stop these transfers, "
            "check the AutoID rows of these IDs and correct transfer_name (and the research PACS).",
            _frame(wrong, columns),
        ),
    ]


def _autoid_conflicts(rows_by_project) -> list[Finding]:
    """One hash with several values, one value with several hashes, in any project of AutoID."""
    split, shared = [], []
    for name in sorted(rows_by_project):
        rows = [r for r in rows_by_project[name] if normalise_hash(r.hash) and r.value.strip()]
        by_hash: dict[str, list[AutoIdRow]] = defaultdict(list)
        by_value: dict[str, list[AutoIdRow]] = defaultdict(list)
        for row in rows:
            by_hash[normalise_hash(row.hash)].append(row)
            by_value[row.value.strip()].append(row)
        for group in by_hash.values():
            if len({r.value.strip() for r in group}) > 1:
                split.append(_rows_entry(name, group))
        for group in by_value.values():
            if len({normalise_hash(r.hash) for r in group}) > 1:
                shared.append(_rows_entry(name, group))
    columns = ["project", "autoid_records", "values"]
    return [
        Finding(
            "hash_several_values",
            "Patients with several IDs in one project",
            PROBLEM,
            len(split),
            "One patient must have one ID per project. Decide which ID the patient keeps (the "
            "one their transferred studies carry), delete the other AutoID rows, and correct "
            "the transfers that used them. The run skips this patient's studies until then.",
            pd.DataFrame(split, columns=columns),
        ),
        Finding(
            "value_several_hashes",
            "IDs stored for several patients in one project",
            PROBLEM,
            len(shared),
            "Two patients share one research ID and their images merge in the research PACS. "
            "Give all but one patient a new ID (delete their AutoID rows; the next run creates "
            "new ones) and re-send their studies under the new ID.",
            pd.DataFrame(shared, columns=columns),
        ),
    ]


def _spellings(spellings, projects, rows_by_project, hasher: PatientHasher) -> list[Finding]:
    """Patients whose spellings, taken together, find several IDs in one project."""
    found = []
    for project in sorted(projects, key=lambda p: p.name):
        values_of: dict[str, set[str]] = defaultdict(set)
        records_of: dict[str, set[str]] = defaultdict(set)
        for row in rows_by_project.get(project.name, ()):
            hash_ = normalise_hash(row.hash)
            if hash_ and row.value.strip():
                values_of[hash_].add(row.value.strip())
                records_of[hash_].add(row.record_id)
        for patient, raws in spellings.items():
            keys = [k for k in hasher.patient_keys(patient, raws) if k in values_of]
            values = set().union(*(values_of[k] for k in keys)) if keys else set()
            if len(keys) > 1 and len(values) > 1:
                records = set().union(*(records_of[k] for k in keys))
                found.append(
                    {
                        "project": project.name,
                        "autoid_records": ", ".join(sorted(records, key=_natural)),
                        "values": ", ".join(sorted(values)),
                    }
                )
    return [
        Finding(
            "spelling_several_ids",
            "Patients whose ID spellings (padding, NULs) find several IDs",
            PROBLEM,
            len(found),
            "The legacy job hashed the raw patient ID, so one patient sent as 'ABC' and 'ABC ' "
            "got two rows. Decide which ID the patient keeps (the one their transferred studies "
            "carry) and delete the other AutoID rows. The run skips this patient until then.",
            pd.DataFrame(found, columns=["project", "autoid_records", "values"]),
        )
    ]


def _name_variants(projects, rows_by_project) -> list[Finding]:
    """AutoID rows whose project name equals an auto-ID project's only when case is ignored."""
    names = {p.name.strip().casefold(): p.name.strip() for p in projects}
    found = []
    for stored in sorted(rows_by_project):
        project = names.get(stored.casefold())
        if project is not None and project != stored:
            found.append(
                {"project": project, "stored_as": stored, "rows": len(rows_by_project[stored])}
            )
    return [
        Finding(
            "project_name_variant",
            "AutoID rows under a variant of a project's name",
            PROBLEM,
            sum(f["rows"] for f in found),
            "If the project was renamed, set autoid_project_name on these rows to the project's "
            "current name; otherwise rename one of the two projects. Until then the run never "
            "hands out these IDs and skips their patients' studies.",
            pd.DataFrame(found, columns=["project", "stored_as", "rows"]),
        )
    ]


def _rows_entry(project: str, rows: list[AutoIdRow]) -> dict:
    return {
        "project": project,
        "autoid_records": ", ".join(sorted((r.record_id for r in rows), key=_natural)),
        "values": ", ".join(sorted({r.value.strip() for r in rows})),
    }


def _natural(text: str):
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def _patterns(projects, rows_by_project) -> list[Finding]:
    mismatched, invalid = [], []
    for project in projects:
        try:
            space = as_space(project.pattern)
        except PatternError as error:
            invalid.append(
                {"project": project.name, "pattern": project.pattern, "error": str(error)}
            )
            continue
        values = {r.value.strip(): r.record_id for r in rows_by_project.get(project.name, ())}
        for value, record_id in sorted(values.items()):
            if value and not space.contains(value):
                mismatched.append(
                    {
                        "project": project.name,
                        "pattern": project.pattern,
                        "value": value,
                        "autoid_record": record_id,
                    }
                )
    return [
        Finding(
            "pattern_mismatch",
            "Stored IDs that do not match their project's current pattern",
            NOTICE,
            len(mismatched),
            "Usually the pattern was changed after these IDs were given: nothing to do, the "
            "patients keep their IDs. If the pattern was not changed, the IDs were written by "
            "hand or by the legacy generator's prefix check: check them with the project owner.",
            pd.DataFrame(mismatched, columns=["project", "pattern", "value", "autoid_record"]),
        ),
        Finding(
            "invalid_pattern",
            "Auto-ID projects whose pattern cannot generate IDs",
            PROBLEM,
            len(invalid),
            "Fix project_patient_naming in the Projects database (the error gives the position); "
            "the run skips every new patient of these projects until then.",
            pd.DataFrame(invalid, columns=["project", "pattern", "error"]),
        ),
    ]


def _downstream_errors(studies) -> list[Finding]:
    rows = []
    for study in studies:
        for transfer in study.transfer_requests:
            for code in transfer.error_codes:
                rows.append(_error_row(study, transfer, code))
    columns = [*STUDY_COLUMNS, "pseudonym", "transfer_date", "code", "reason"]
    table = _frame(rows, columns)
    counts = Counter((r["code"], r["reason"]) for r in rows)
    groups = pd.DataFrame(
        [
            {"code": code, "reason": reason, "transfers": n, "action": ERROR_ACTIONS.get(code, "")}
            for (code, reason), n in sorted(counts.items())
        ],
        columns=["code", "reason", "transfers", "action"],
    )
    only_notices = all(r["code"] in NOTICE_CODES for r in rows)
    return [
        Finding(
            "downstream_error",
            "Transfers the forwarder marked with an error",
            NOTICE if only_notices else PROBLEM,
            len(rows),
            "See the table by reason: each reason has its own next step.",
            table,
            groups,
        )
    ]


def _error_row(study: IncomingStudy, transfer: ExistingTransfer, code: str) -> dict:
    return _study_row(
        study,
        transfer.project_name.strip(),
        pseudonym=transfer.name.strip(),
        transfer_date=transfer.transfer_date,
        code=code,
        reason=ERROR_REASONS.get(code, f"error code {code}"),
    )


def _project_overview(projects, addressed, rows_by_project) -> pd.DataFrame:
    per_project: dict[str, Counter] = defaultdict(Counter)
    for study, names in addressed:
        key = " / ".join(names)
        per_project[key]["studies"] += 1
        if study.transfer_requests:
            per_project[key]["transferred"] += 1
    rows = []
    for project in projects:
        counts = per_project.get(project.name, Counter())
        values = {r.value.strip() for r in rows_by_project.get(project.name, ()) if r.value.strip()}
        rows.append(
            {
                "project": project.name,
                "ae_title": project.ae_title,
                "pattern": project.pattern,
                "studies": counts["studies"],
                "transferred": counts["transferred"],
                "ids": len(values),
            }
        )
    for key, counts in sorted(per_project.items()):
        if " / " in key:
            rows.append(
                {
                    "project": key,
                    "ae_title": "(shared)",
                    "pattern": "",
                    "studies": counts["studies"],
                    "transferred": counts["transferred"],
                    "ids": 0,
                }
            )
    columns = ["project", "ae_title", "pattern", "studies", "transferred", "ids"]
    return pd.DataFrame(rows, columns=columns)


# -- rendering ----------------------------------------------------------------------------------


def finding_table(finding: Finding, detail: str = "summary") -> pd.DataFrame:
    """The finding's table as a report shows it: no study UID and at most 50 rows in summary."""
    return shown_table(finding.table, detail)


def shown_table(table: pd.DataFrame, detail: str = "summary") -> pd.DataFrame:
    """A study table for a report: the study UID and rows past the 50th only with detail=full."""
    if detail != "full":
        table = table.drop(columns=["study_uid"], errors="ignore").head(SUMMARY_ROWS)
        if "study_ref" in table:  # the run report's rule: no study-to-pseudonym link in summary
            table = table.drop(columns=list(PSEUDONYM_COLUMNS), errors="ignore")
    return table
