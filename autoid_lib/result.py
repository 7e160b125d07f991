"""What a run did, as tables the notebooks display and a summary monitors read.

``RunResult`` holds pandas DataFrames (projects, studies, ids, anomalies, capacity) built from
the plan, plus the run's counts, timings and error. ``records.summary.run_summary`` turns it
into the stable, documented ``summary.json`` contract: counts, project names, patterns and
anomaly texts, and by construction no study UID, patient ID or name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from autoid_lib.anomaly_memory import Changes
from autoid_lib.forecast import Forecast
from autoid_lib.plan import (
    ALREADY_TRANSFERRED,
    KNOWN_ID_SOURCES,
    SKIPPED,
    TRANSFER,
    Anomaly,
    Plan,
)
from autoid_lib.vocab import Detail, RunMode, Status
from autoid_lib.window import RunWindow

PROJECT_COLUMNS = [
    "project", "ae_title", "pattern", "incoming", "already_transferred", "transfers_created",
    "ids_reused", "ids_created", "skipped", "capacity_size", "capacity_used",
    "capacity_fraction", "capacity_level", "shares_ae_title_with",
]  # fmt: skip
STUDY_COLUMNS = [
    "project", "study_date", "study_ref", "study_uid", "pseudonym", "action", "reason",
]  # fmt: skip
ID_COLUMNS = ["project", "pseudonym", "source", "studies"]
ANOMALY_COLUMNS = ["kind", "project", "count", "message", "action"]
CAPACITY_COLUMNS = [
    "project",
    "pattern",
    "size",
    "used",
    "free",
    "fraction",
    "level",
    "description",
]


# Errors after which a run yields rather than fails: another run holds the REDCap lease, this
# one wrote nothing and exits 3 (errors.LeaseHeld; the local lock never gets this far).
YIELDING_ERRORS = frozenset({"LeaseHeld"})


@dataclass(frozen=True)
class RunError:
    step: str
    type: str
    message: str
    kind: str = "internal"  # a failures.FailureKind

    @property
    def yields(self) -> bool:
        """Another run holds the REDCap lease: this run backed off (``Status.YIELDED``)."""
        return self.type in YIELDING_ERRORS

    def as_entry(self) -> dict[str, str]:
        """summary.json's ``error``: step, type, message, kind, cause and what to do."""
        from autoid_lib.failures import cause_of

        cause = cause_of(self.kind, self.type)
        return {**self.__dict__, "cause": cause.label, "action": cause.action}


@dataclass
class RunResult:
    mode: str  # a RunMode: live or dry
    started: datetime  # UTC
    window_begin: datetime  # REDCap server time
    window_end: datetime
    lookback_days: int
    plan: Plan | None = None
    error: RunError | None = None
    problems: list[str] = field(default_factory=list)  # verification differences
    api_requests: int = 0
    api_bytes: int = 0  # answer bytes REDCap sent
    table_reads: dict[str, str] = field(default_factory=dict)  # database -> how it was read
    timings: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    window: RunWindow | None = None  # how the window was chosen (None: lookback only)
    forecasts: dict[str, Forecast] = field(default_factory=dict)  # by project (forecast.py)
    changes: Changes | None = None  # against the recorded anomalies (None: not compared)
    environment: dict[str, str] | None = None  # environment.Environment: kit, REDCap host, config
    # anomalies of the run itself rather than of the data (a lease ticket not given back)
    run_anomalies: list[Anomaly] = field(default_factory=list)
    lease: dict[str, Any] | None = None  # the REDCap lease: ticket, renewals, released

    # -- status ------------------------------------------------------------------------------

    @property
    def status(self) -> Status:
        """ok, attention (a human should look), failed (the run did not finish cleanly) or
        yielded (another run holds the REDCap lease; this one wrote nothing). Decided here
        only: summary.json, the report, the index, the mail, the metrics and the exit status
        take it from here."""
        if self.error is not None and self.error.yields:
            return Status.YIELDED
        if self.error is not None or self.problems:
            return Status.FAILED
        if self.run_anomalies:
            return Status.ATTENTION
        if self.plan is not None and (self.plan.anomalies or self.plan.skipped_by_reason()):
            return Status.ATTENTION
        return Status.OK

    def all_anomalies(self) -> tuple[Anomaly, ...]:
        """The plan's anomalies, then the run's own (in the order summary.json lists them)."""
        return (*(self.plan.anomalies if self.plan else ()), *self.run_anomalies)

    def verified(self) -> dict[str, Any] | None:
        """The re-read after writing: how many AutoID rows and transfer requests it compared
        and whether REDCap held exactly those (``matched``); None when it did not run."""
        if self.mode == "dry" or self.plan is None or "verify" not in self.timings:
            return None
        return {
            "autoid_rows": len(self.plan.new_ids),
            "kit_records": len(self.plan.kit_rows),
            "transfers": len(self.plan.transfers),
            "matched": not self.problems,
        }

    @property
    def headline(self) -> str:
        label = self.status.label
        mode = RunMode(self.mode).label
        window = f"{self.window_begin:%Y-%m-%d %H:%M} → {self.window_end:%Y-%m-%d %H:%M}"
        if self.window is not None and self.window.describe():
            window += f" ({self.window.describe()})"
        text = f"{label} — {mode}, window {window}, {self.duration_s:.1f} s"
        if self.error is not None and self.error.yields:
            text += f" — {self.error.message}"
        elif self.error is not None:
            text += f" — failed at {self.error.step}: {self.error.message}"
        elif self.problems:
            text += f" — verification found {len(self.problems)} difference(s)"
        elif self.plan is not None and not self.plan.studies:
            text += " — nothing to do: no study in the window was addressed to an auto-ID project"
        elif self.plan is not None:
            verb = "would create" if self.mode == "dry" else "created"
            text += f" — {verb} {self.plan.describe()}"
        for anomaly in self.run_anomalies:  # "the REDCap lease ticket 37 was not given back"
            text += f"; {anomaly.message.partition(':')[0]}"
        return text

    # -- tables ------------------------------------------------------------------------------

    def studies(self, detail: str = Detail.FULL) -> pd.DataFrame:
        rows = []
        for s in self.plan.studies if self.plan else ():
            rows.append(
                {
                    "project": s.project_name,
                    "study_date": dicom_date(s.study_date),
                    "study_ref": study_ref(s.study_uid),
                    "study_uid": s.study_uid,
                    "pseudonym": s.pseudonym,
                    "action": s.action,
                    "reason": s.reason,
                }
            )
        frame = pd.DataFrame(rows, columns=STUDY_COLUMNS)
        if detail != Detail.FULL:
            frame = frame.drop(columns=["study_uid"])
        return frame

    def ids(self) -> pd.DataFrame:
        """One row per pseudonym the run used: new or reused, and for how many studies."""
        used = Counter(
            (s.project_name, s.pseudonym, s.id_source)
            for s in (self.plan.studies if self.plan else ())
            if s.action == TRANSFER
        )
        rows = [(*key, n) for key, n in sorted(used.items())]
        return pd.DataFrame(rows, columns=ID_COLUMNS)

    def anomalies(self) -> pd.DataFrame:
        rows = [a.__dict__ for a in self.all_anomalies()]
        frame = pd.DataFrame(rows, columns=ANOMALY_COLUMNS)
        marks = self.changes.marks if self.changes is not None else ()
        if len(marks) == len(frame) and len(frame):  # new or open since when (anomaly_memory)
            frame["key"] = [mark.key for mark in marks]
            frame["state"] = [mark.state for mark in marks]
            frame["first_seen"] = [mark.first_seen for mark in marks]
            frame["seen"] = [mark.seen for mark in marks]
        return frame

    def capacity(self) -> pd.DataFrame:
        rows = []
        for p in self.plan.projects if self.plan else ():
            c = p.capacity
            rows.append(
                {
                    "project": p.name,
                    "pattern": p.pattern,
                    "size": c.size if c else None,
                    "used": c.used if c else None,
                    "free": c.free if c else None,
                    "fraction": c.fraction_used if c else None,
                    "level": c.level if c else "invalid pattern",
                    "description": c.description if c else p.pattern_error,
                }
            )
        return pd.DataFrame(rows, columns=CAPACITY_COLUMNS)

    def projects(self) -> pd.DataFrame:
        """One row per planned project: its studies by action, IDs used and capacity.

        Counted from the plan's outcomes, not from the studies table, so a run with no study
        (a quiet night, a new installation) has the same columns, all zero. A study on an AE
        title several projects share counts under each; ``shares_ae_title_with`` names the
        others, so that a sum over projects can count it once.
        """
        outcomes = self.plan.studies if self.plan else ()
        ids = self.ids()
        rows = []
        for p in self.plan.projects if self.plan else ():
            actions = Counter(s.action for s in outcomes if p.name in s.projects)
            sources = Counter(ids.loc[ids["project"] == p.name, "source"])
            c = p.capacity
            rows.append(
                {
                    "project": p.name,
                    "ae_title": p.ae_title,
                    "pattern": p.pattern,
                    "incoming": sum(actions.values()),
                    "already_transferred": actions[ALREADY_TRANSFERRED],
                    "transfers_created": actions[TRANSFER],
                    "ids_reused": sum(sources[source] for source in KNOWN_ID_SOURCES),
                    "ids_created": sources["new"],
                    "skipped": actions[SKIPPED],
                    "capacity_size": c.size if c else None,
                    "capacity_used": c.used if c else None,
                    "capacity_fraction": round(c.fraction_used, 4) if c else None,
                    "capacity_level": c.level if c else "invalid pattern",
                    "shares_ae_title_with": sorted(
                        {q for s in outcomes if p.name in s.projects for q in s.projects} - {p.name}
                    ),
                }
            )
            if self.writes_unknown:
                rows[-1].update(dict.fromkeys(["transfers_created", "ids_reused", "ids_created"]))
        return pd.DataFrame(rows, columns=PROJECT_COLUMNS)

    def incoming_per_day(self) -> pd.DataFrame:
        """Studies per study date (rows) and auto-ID project (columns), for the chart."""
        studies = self.studies()
        studies = studies[studies["study_date"] != ""]
        if studies.empty:
            return pd.DataFrame()
        return studies.pivot_table(
            index="study_date", columns="project", values="study_ref", aggfunc="count", fill_value=0
        )

    # -- summary.json ------------------------------------------------------------------------

    @property
    def writes_unknown(self) -> bool:
        """The write step failed: some of the plan may be in REDCap, the next run completes it."""
        return self.error is not None and self.error.step == "write"

    def counts(self) -> dict[str, int | None]:
        """What the run created (a dry run: would create); ``None`` when the write failed."""
        ids = self.ids()
        plan = self.plan
        created: dict[str, int | None] = {
            "transfers_created": len(plan.transfers) if plan else 0,
            "ids_created": int((ids["source"] == "new").sum()),
            "ids_reused": int(ids["source"].isin(KNOWN_ID_SOURCES).sum()),
        }
        if self.writes_unknown:
            created = dict.fromkeys(created)
        return {**created, "studies_in_window": plan.studies_in_window if plan else 0}


def study_ref(uid: str) -> str:
    """The short form reports show for a study: its UID's last 8 characters."""
    return "…" + uid[-8:]


def dicom_date(value: str) -> str:
    """DICOM's YYYYMMDD as YYYY-MM-DD; anything else unchanged."""
    if len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value
