"""The answers behind the explore notebook's widgets, as pure functions of what was read.

Each function takes plain values (a ``Snapshot``, AutoID rows, a pattern, ``PlanSettings``) and
returns a small result with tables that carry no patient data: a study is shown by project,
study date, a short reference (the last 8 characters of its UID), its pseudonym and its state.
``explore.widgets`` reads REDCap and draws the widgets; everything it shows is computed here.

- ``project_overview``  a project's studies in a window, each transferred / pending / skipped
                        (and why, as the run's planner decides it), and the project's capacity;
- ``lookup_study``      a study by UID, UID ending or accession number: its transfers and what
                        the next run would do with it;
- ``lookup_patient``    "known in PROJECT as ID" or "unknown" for a patient ID that is hashed
                        here and never returned, echoed or kept;
- ``pattern_workbench`` a pattern's parse error (with position), size, sample IDs and capacity;
- ``preview_project``   the dry-run plan of one project (``preview_studies``: its studies in
                        the order that matters: to transfer, skipped, already transferred);
- ``project_runs``      what the recent recorded runs did for one project (from summary.json);
- ``project_forecast``  when the project's ID space runs out, as a run now would forecast it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime

import pandas as pd

from autoid_lib.audit.checks import ERROR_REASONS
from autoid_lib.errors import IdSpaceExhausted, PatternError
from autoid_lib.forecast import Forecast, RecordedCapacity, project_forecasts, seen_requests
from autoid_lib.hashing import PatientHasher, normalise_hash, normalise_patient_id
from autoid_lib.ids import generate as idgen
from autoid_lib.plan import (
    ALREADY_TRANSFERRED,
    SKIPPED,
    TRANSFER,
    PlanSettings,
    plan,
)
from autoid_lib.result import RunResult, dicom_date, study_ref
from autoid_lib.retired import retired_from
from autoid_lib.snapshot import AutoIdRow, IncomingStudy, Snapshot
from autoid_lib.vocab import anomaly_count, anomaly_kind_label, plural

TRANSFERRED, PENDING, SKIPPED_STATE = "transferred", "pending", "skipped"
STATE_COLUMNS = ["project", "study_date", "study_ref", "pseudonym", "state", "detail"]
TRANSFER_COLUMNS = ["instance", "project", "pseudonym", "requested", "sent", "errors"]
RUN_COLUMNS = ["started", "mode", "status", "incoming", "transfers_created", "ids_created",
               "skipped", "report"]  # fmt: skip


def auto_id_projects(snapshot: Snapshot) -> list[str]:
    """Names of the projects with auto-ID on, for the project pickers."""
    return sorted({p.name for p in snapshot.projects if p.use_autoid and p.name.strip()})


def project_values(rows: tuple[AutoIdRow, ...] | list[AutoIdRow], project: str) -> set[str]:
    """The IDs a project already uses: its AutoID values, retired ones included (never free)."""
    return {
        r.value.strip()
        for r in rows
        if r.value.strip() and project in (r.project_name.strip(), retired_from(r))
    }


# -- project overview ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectOverview:
    project: str
    ae_title: str
    pattern: str
    table: pd.DataFrame = field(repr=False)  # STATE_COLUMNS, one row per study
    capacity: idgen.Capacity | None
    pattern_error: str = ""
    window: str = ""  # which studies: "the run's window …" or the dates picked

    def counts(self) -> dict[str, int]:
        return {state: int((self.table["state"] == state).sum()) for state in self.states()}

    @staticmethod
    def states() -> tuple[str, str, str]:
        return (TRANSFERRED, PENDING, SKIPPED_STATE)

    def sentence(self) -> str:
        counts = ", ".join(f"{n} {state}" for state, n in self.counts().items())
        line = (
            f"{self.project} (AE title {self.ae_title or '—'}): "
            f"{plural(len(self.table), 'study', 'studies')} — {counts}"
            f"{f' ({self.window})' if self.window else ''}."
        )
        if self.capacity is not None:
            line += f" Capacity: {self.capacity.description}."
        elif self.pattern_error:
            line += f" Pattern unusable: {self.pattern_error}."
        return line


def project_overview(
    snapshot: Snapshot, project: str, settings: PlanSettings, window: str = ""
) -> ProjectOverview:
    """The project's studies in ``snapshot`` (one window, which ``window`` names) with the
    state the planner gives them."""
    record = _project(snapshot, project)
    result = plan(snapshot, replace(settings, projects=frozenset({project})))
    by_uid = {s.uid: s for s in snapshot.studies}
    rows = [
        _state_row(outcome, by_uid[outcome.study_uid])
        for outcome in result.studies
        if project in outcome.projects and outcome.study_uid in by_uid
    ]
    table = pd.DataFrame(rows, columns=STATE_COLUMNS)
    if rows:
        table = table.sort_values(["study_date", "study_ref"], ignore_index=True)
    state = next((p for p in result.projects if p.name == project), None)
    return ProjectOverview(
        project=project,
        ae_title=record.ae_title,
        pattern=record.pattern,
        table=table,
        capacity=state.capacity if state else None,
        pattern_error=state.pattern_error if state else "",
        window=window,
    )


def _project(snapshot: Snapshot, name: str):
    for record in snapshot.projects:
        if record.name == name:
            return record
    raise KeyError(f"no project named {name!r} in the Projects database")


def _state_row(outcome, study: IncomingStudy) -> dict:
    state, pseudonym, detail = _state(outcome, study)
    return {
        "project": outcome.project_name,
        "study_date": dicom_date(study.study_date),
        "study_ref": study_ref(study.uid),
        "pseudonym": pseudonym,
        "state": state,
        "detail": detail,
    }


def _state(outcome, study: IncomingStudy) -> tuple[str, str, str]:
    if outcome.action == ALREADY_TRANSFERRED:
        requests = study.transfer_requests
        names = ", ".join(t.name for t in requests)
        return TRANSFERRED, names, "; ".join(_transfer_detail(t) for t in requests)
    if outcome.action == TRANSFER:
        if outcome.id_source == "reused":
            return PENDING, outcome.pseudonym, "the next run requests it under the patient's ID"
        return PENDING, "(new ID)", "the next run gives the patient a new ID and requests it"
    return SKIPPED_STATE, "", outcome.reason


def _transfer_detail(transfer) -> str:
    if transfer.error_codes:
        reasons = ", ".join(ERROR_REASONS.get(c, f"error {c}") for c in transfer.error_codes)
        return f"to {transfer.project_name}: {reasons}"
    if transfer.transfer_date:
        return f"to {transfer.project_name}, sent {transfer.transfer_date}"
    return f"to {transfer.project_name}, requested {transfer.requested_date}, not sent yet"


# -- study lookup -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyAnswer:
    """One study found: where it was addressed, its transfers, what the next run would do."""

    study_ref: str
    study_date: str
    ae_title: str
    transfers: pd.DataFrame = field(repr=False)
    next_run: str
    in_window: bool

    def lines(self) -> list[str]:
        window = "" if self.in_window else " (outside the run window: no run reads it)"
        return [
            f"Study {self.study_ref}, dated {self.study_date or '—'}{window}, "
            f"addressed to AE title {self.ae_title or '—'}.",
            f"{plural(len(self.transfers), 'transfer request')}.",
            f"Next run: {self.next_run}",
        ]


def find_studies(studies, query: str) -> list[IncomingStudy]:
    """Studies whose UID or accession number is ``query``, or whose UID ends with it (8+ chars)."""
    query = query.strip().lstrip("…").strip()
    if not query:
        return []
    exact = [s for s in studies if s.uid == query or s.accession_number.strip() == query]
    if exact or len(query) < 8:
        return exact
    return [s for s in studies if s.uid.endswith(query)]


def lookup_study(
    snapshot: Snapshot, query: str, settings: PlanSettings, in_window: frozenset[str]
) -> list[StudyAnswer]:
    """Every study matching ``query`` (see ``find_studies``) with its transfers and next run.

    ``in_window`` holds the UIDs the run would read now (created or modified in its window, as
    ``RedcapGateway.study_uids`` answers): a study outside it is not served by the next run.
    """
    found = find_studies(snapshot.studies, query)
    # the run plans its whole window at once: other new patients may take the last free IDs,
    # so a study's fate is read from that plan, never from a plan of the study alone
    window = replace(snapshot, studies=tuple(s for s in snapshot.studies if s.uid in in_window))
    outcomes = {o.study_uid: o for o in plan(window, settings).studies} if found else {}
    answers = []
    for study in found:
        outcome = outcomes.get(study.uid)
        reached = study.uid in in_window
        answers.append(
            StudyAnswer(
                study_ref=study_ref(study.uid),
                study_date=dicom_date(study.study_date),
                ae_title=study.ae_title,
                transfers=transfer_table(study),
                next_run=_next_run(outcome, study) if reached else _OUT_OF_REACH,
                in_window=reached,
            )
        )
    return answers


_OUT_OF_REACH = (
    "nothing: the run only reads studies created or modified in its window. Run "
    "`autoid run --lookback-days N` reaching back to its arrival, or request it by hand."
)


def transfer_table(study: IncomingStudy) -> pd.DataFrame:
    rows = [
        {
            "instance": t.instance,
            "project": t.project_name,
            "pseudonym": t.name,
            "requested": t.requested_date,
            "sent": t.transfer_date,
            "errors": ", ".join(ERROR_REASONS.get(c, c) for c in t.error_codes),
        }
        for t in study.transfer_requests
    ]
    return pd.DataFrame(rows, columns=TRANSFER_COLUMNS)


def _next_run(outcome, study: IncomingStudy) -> str:
    if outcome is None:
        return "nothing: its AE title belongs to no auto-ID project."
    if outcome.action == ALREADY_TRANSFERRED:
        return f"nothing: it already has a transfer request ({outcome.project_name})."
    if outcome.action == TRANSFER:
        which = "the patient's known ID" if outcome.id_source == "reused" else "a new ID"
        shown = f" {outcome.pseudonym}" if outcome.id_source == "reused" else ""
        return f"request it for {outcome.project_name} under {which}{shown}."
    return f"skip it ({outcome.reason}); nothing is written for it."


# -- patient lookup -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientAnswer:
    """Where a patient is known, without the patient ID: (project, IDs) pairs."""

    known: tuple[tuple[str, tuple[str, ...]], ...]
    empty: bool = False

    def lines(self) -> list[str]:
        if self.empty:
            return ["No patient ID entered (an empty patient ID is never served by the run)."]
        if not self.known:
            return ["unknown"]
        lines = []
        for project, values in self.known:
            line = f"known in {project} as {', '.join(values)}"
            if len(values) > 1:
                line += " (conflict: several IDs for one patient — run the audit)"
            lines.append(line)
        return lines


def lookup_patient(raw: str, rows, hasher: PatientHasher) -> PatientAnswer:
    """Hash ``raw`` the way the run does and look the hashes up in the AutoID rows."""
    normalised = normalise_patient_id(raw)
    if not normalised:
        return PatientAnswer((), empty=True)
    keys = set(hasher.lookup_keys(raw, normalised))
    found: dict[str, set[str]] = {}
    for row in rows:
        if normalise_hash(row.hash) in keys and row.value.strip():
            found.setdefault(row.project_name.strip(), set()).add(row.value.strip())
    return PatientAnswer(tuple((p, tuple(sorted(v))) for p, v in sorted(found.items())))


# -- pattern workbench --------------------------------------------------------------------------


@dataclass(frozen=True)
class PatternAnswer:
    pattern: str
    error: str = ""
    position: int | None = None
    size: int | None = None
    samples: tuple[str, ...] = ()
    project: str = ""
    capacity: idgen.Capacity | None = None
    not_matching: tuple[str, ...] = ()  # the project's current IDs the pattern does not match

    def lines(self) -> list[str]:
        if self.error:
            lines = [f"Pattern error: {self.error}"]
            if self.position is not None:
                lines += [f"  {self.pattern}", "  " + " " * self.position + "^"]
            return lines
        lines = [f"{self.size:,} possible IDs.", "Samples: " + (", ".join(self.samples) or "—")]
        if self.project and self.capacity is not None:  # answer_pattern sets both or neither
            lines.append(f"Applied to {self.project}: {self.capacity.description}.")
            if self.not_matching:
                shown = ", ".join(self.not_matching[:10])
                more = " …" if len(self.not_matching) > 10 else ""
                lines.append(
                    f"{len(self.not_matching)} of its current IDs do not match this pattern "
                    f"({shown}{more}); they stay valid for their patients but take no room."
                )
        return lines


def pattern_workbench(
    pattern: str,
    in_use=(),
    *,
    project: str = "",
    samples: int = 5,
    rng: random.Random | int | None = None,
    warn_at: float = 0.8,
) -> PatternAnswer:
    """Parse ``pattern``; its size, sample IDs not in ``in_use``, and capacity for ``project``."""
    try:
        space = idgen.as_space(pattern)
    except PatternError as error:
        return PatternAnswer(pattern, error=str(error), position=error.position)
    in_use = set(in_use)
    count = min(samples, idgen.capacity(space, in_use).free)
    try:
        found = tuple(idgen.generate_ids(space, in_use, count, rng=rng)) if count else ()
    except IdSpaceExhausted:
        found = ()
    return PatternAnswer(
        pattern,
        size=space.size,
        samples=found,
        project=project,
        capacity=idgen.capacity(space, in_use, warn_at) if project else None,
        not_matching=tuple(sorted(v for v in in_use if not space.contains(v))) if project else (),
    )


# -- dry-run preview ----------------------------------------------------------------------------


def preview_project(
    snapshot: Snapshot, project: str, settings: PlanSettings, *, lookback_days: int = 14
) -> RunResult:
    """The plan a dry run of ``project`` would make, as the run report's tables show it."""
    result = RunResult(
        mode="dry",
        started=snapshot.window_end,
        window_begin=snapshot.window_begin,
        window_end=snapshot.window_end,
        lookback_days=lookback_days,
    )
    full = plan(snapshot, replace(settings, projects=frozenset({project})))
    result.plan = replace(
        full,  # studies of an AE title shared with other projects are planned in every preview
        studies=tuple(s for s in full.studies if project in s.projects),
        anomalies=tuple(a for a in full.anomalies if project in a.project.split(", ")),
    )
    return result


_ACTION_ORDER = {SKIPPED: 0, TRANSFER: 1, ALREADY_TRANSFERRED: 2}
EXAMPLE = " (example)"  # a new ID a dry run drew at random: the real run draws another


def preview_studies(result: RunResult) -> pd.DataFrame:
    """The preview's studies, what needs a look first (skipped studies, then transfers, then
    the already transferred ones), each group by study date. A new ID is marked as an example:
    the real run draws its own; a known ID is the one the run will use."""
    frame = result.studies(detail="summary")
    if frame.empty:
        return frame
    drawn = {
        study_ref(s.study_uid)
        for s in (result.plan.studies if result.plan else ())
        if s.action == TRANSFER and s.id_source == "new"
    }
    frame["pseudonym"] = [
        name + EXAMPLE if ref in drawn and name else name
        for ref, name in zip(frame["study_ref"], frame["pseudonym"], strict=True)
    ]
    order = frame["action"].map(lambda action: _ACTION_ORDER.get(action, 3))
    keys = frame.assign(_order=order).sort_values(["_order", "study_date", "study_ref"])
    return frame.loc[keys.index].reset_index(drop=True)


ANOMALY_COLUMNS = ["project", "what", "count", "details", "what to do"]


def preview_anomalies(result: RunResult) -> pd.DataFrame:
    """The preview's anomalies as the run report's *Needs a human* shows them: the kind in
    words and the count with its unit ("4 studies", "1 new patient")."""
    rows = [
        [a.project, anomaly_kind_label(a.kind), anomaly_count(a.kind, a.count or 1), a.message,
         a.action]
        for a in (result.plan.anomalies if result.plan else ())
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=ANOMALY_COLUMNS)


def preview_capacity(result: RunResult) -> list[str]:
    """One sentence per planned project: its IDs in use after the plan, as the Project tab and
    the report say it (not a table of raw fractions)."""
    return [
        f"Capacity of {p.name}: "
        f"{p.capacity.description if p.capacity else 'pattern unusable: ' + p.pattern_error}."
        for p in (result.plan.projects if result.plan else ())
    ]


def preview_sentence(result: RunResult) -> str:
    window = f"{result.window_begin:%Y-%m-%d %H:%M} → {result.window_end:%Y-%m-%d %H:%M}"
    plan_ = result.plan  # describe() names the skipped studies and why
    if plan_ is None:
        raise ValueError("preview_sentence needs a planned result (from preview_project)")
    return f"Dry run, window {window}, {len(plan_.studies)} studies addressed: {plan_.describe()}."


def project_runs(summaries: list[dict], project: str) -> pd.DataFrame:
    """One row per recorded run (newest first) with what it did for ``project``.

    ``summaries`` are summary.json contents (``report_index.recent_summaries``); a run that did
    not reach the project (failed early, filtered out) shows its status and empty counts.
    """
    rows = []
    for summary in summaries:
        if summary.get("mode") not in ("live", "dry"):
            continue  # audits have no per-project run counts
        projects = summary.get("projects") or ()
        mine: dict[str, object] = next((p for p in projects if p.get("project") == project), {})
        rows.append(
            {
                "started": summary.get("started", ""),
                "mode": summary.get("mode", ""),
                "status": summary.get("status", "unknown"),
                **{key: mine.get(key) for key in RUN_COLUMNS[3:7]},
                "report": f"{summary.get('folder', '')}/{summary.get('report', '')}",
            }
        )
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


# -- exhaustion forecast ------------------------------------------------------------------------


def project_forecast(
    snapshot: Snapshot,
    project: str,
    settings: PlanSettings,
    recorded: Iterable[RecordedCapacity],
    *,
    now: datetime,
    window_days: float,
    reach_days: float,
) -> Forecast | None:
    """The forecast a run over ``snapshot`` (its window) would make now for ``project``.

    ``recorded`` are earlier runs' capacity points (``records.history.recorded_capacity``),
    ``now`` the UTC clock they are compared with, ``window_days`` the config's forecast window,
    ``reach_days`` its ``max_catchup_days`` (how old a study's date may be and still count
    as its arrival: ``forecast.arrival``). ``None`` when the project has no usable pattern.
    """
    result = plan(snapshot, replace(settings, projects=frozenset({project})))
    found = project_forecasts(
        result.projects,
        seen_requests(snapshot.studies, result.transfers),
        recorded,
        now=now,
        window_begin=snapshot.window_begin,
        window_end=snapshot.window_end,
        window_days=window_days,
        reach_days=reach_days,
    )
    return found.get(project)
