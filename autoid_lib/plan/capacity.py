"""A project's state after the plan: its capacity, and the warning a filling space calls for."""

from __future__ import annotations

from autoid_lib.ids import generate as idgen
from autoid_lib.ids.space import PatternSpace
from autoid_lib.plan.model import Anomaly, ProjectState
from autoid_lib.snapshot import ProjectRecord


def project_state(
    project: ProjectRecord,
    pattern: PatternSpace | None,
    pattern_error: str,
    used_in_pattern: int,
    warn_at: float,
    *,
    exhaustion_reported: bool,
) -> tuple[ProjectState, list[Anomaly]]:
    """The project as the plan leaves it, and its capacity anomaly (none if the plan already
    reported new patients it could not serve)."""
    anomalies: list[Anomaly] = []
    capacity = None
    if pattern is not None:
        capacity = idgen.Capacity(pattern.pattern, pattern.size, used_in_pattern, warn_at)
        if capacity.level == "exhausted" and not exhaustion_reported:
            anomalies.append(
                Anomaly(
                    "id_space_exhausted",
                    project.name,
                    capacity.description,
                    "Widen project_patient_naming now (keep existing IDs matching): the next "
                    "new patient will be skipped.",
                )
            )
        elif capacity.level == "warning":
            anomalies.append(
                Anomaly(
                    "capacity_warning",
                    project.name,
                    capacity.description,
                    "Plan a wider project_patient_naming before the space runs out.",
                )
            )
    state = ProjectState(
        name=project.name,
        ae_title=project.ae_title.strip(),
        pattern=project.pattern,
        pattern_error=pattern_error,
        capacity=capacity,
    )
    return state, anomalies
