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

The parts: ``model`` (the plan's data types and its stable words), ``planner`` (``plan``:
routes the studies, plans each project, joins the results), ``routing`` (auto-ID AE titles to
projects, misconfigured projects), ``existing`` (what earlier runs sent and stored, indexed),
``project`` (one project's new IDs and transfers), ``patients`` (who holds which name in a
project) and ``capacity`` (a project's state and capacity warning after the plan).
"""

from autoid_lib.plan.model import (
    ALREADY_TRANSFERRED,
    AMBIGUOUS_AE_TITLE,
    AUTOID_CONFLICT,
    AUTOID_NAME_VARIANT,
    EMPTY_PATIENT_ID,
    ID_SPACE_EXHAUSTED,
    INVALID_PATTERN,
    KNOWN_ID_SOURCES,
    PROJECT_MISCONFIGURED,
    SHARED_AE_TITLE_JOIN,
    SKIPPED,
    TRANSFER,
    Anomaly,
    IdGenerator,
    NewAutoId,
    Plan,
    PlanSettings,
    ProjectState,
    StudyOutcome,
    TransferRequest,
)
from autoid_lib.plan.planner import plan

__all__ = [
    "ALREADY_TRANSFERRED",
    "AMBIGUOUS_AE_TITLE",
    "AUTOID_CONFLICT",
    "AUTOID_NAME_VARIANT",
    "EMPTY_PATIENT_ID",
    "ID_SPACE_EXHAUSTED",
    "INVALID_PATTERN",
    "KNOWN_ID_SOURCES",
    "PROJECT_MISCONFIGURED",
    "SHARED_AE_TITLE_JOIN",
    "SKIPPED",
    "TRANSFER",
    "Anomaly",
    "IdGenerator",
    "NewAutoId",
    "Plan",
    "PlanSettings",
    "ProjectState",
    "StudyOutcome",
    "TransferRequest",
    "plan",
]
