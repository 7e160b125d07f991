"""Where studies to each auto-ID AE title go, and the Projects records that cannot be served.

A title claimed by several auto-ID projects, a project without a name or AE title, a reserved
name, or two projects whose names differ only in case: each is reported, never guessed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace

from autoid_lib.plan.model import (
    AMBIGUOUS_AE_TITLE,
    PROJECT_MISCONFIGURED,
    SHARED_AE_TITLE_JOIN,
    Anomaly,
    StudyOutcome,
    name_key,
)
from autoid_lib.snapshot import (
    KIT_PROJECT_PREFIX,
    LEASE_PROJECT,
    ProjectRecord,
    is_kit_project_name,
)


@dataclass(frozen=True)
class Route:
    """Where studies to one AE title go: a served project, or skipped with a reason."""

    project: ProjectRecord | None
    label: str
    reason: str = ""


def route_ae_titles(
    records: Iterable[ProjectRecord], anomalies: list[Anomaly]
) -> tuple[dict[str, Route], list[ProjectRecord]]:
    """Each auto-ID AE title's route, and the projects that can be served.

    Every auto-ID record claims its AE title, servable or not: a title claimed twice is
    ambiguous even when one claimant is misconfigured (a guess could send a patient's studies
    into the wrong project). A project without a name, with a reserved name, or sharing its name
    (ignoring case: REDCap's filters do) with another auto-ID project is reported, not guessed.
    """
    auto = [r for r in records if r.use_autoid]
    names = Counter(name_key(r.name) for r in auto if r.name.strip())
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
                f"the name {name} is reserved for the kit's own AutoID records (names "
                f"starting with {KIT_PROJECT_PREFIX}, and {LEASE_PROJECT}); its studies "
                "cannot be served",
                "Rename the project in the Projects database.",
            )
        elif names[name_key(name)] == 1:
            servable.append(record)
        if ae_title:
            claims[ae_title].append((record, label))
    for key in sorted(k for k, count in names.items() if count > 1):
        spelt = sorted({r.name.strip() for r in auto if name_key(r.name) == key})
        _misconfigured(
            anomalies,
            spelt[0],
            f"{names[key]} auto-ID projects are named "
            f"{' / '.join(spelt)}; AutoID rows and transfers are keyed by name "
            "(REDCap compares names ignoring case), so none of them is served",
            "Give each project its own project_name in the Projects database.",
        )
    routes: dict[str, Route] = {}
    for ae_title, claimants in claims.items():
        labels = [label for _, label in claimants]
        if len(claimants) > 1:
            routes[ae_title] = Route(None, SHARED_AE_TITLE_JOIN.join(labels), AMBIGUOUS_AE_TITLE)
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
            routes[ae_title] = Route(claimants[0][0], labels[0])
        else:
            routes[ae_title] = Route(None, labels[0], PROJECT_MISCONFIGURED)
    return routes, servable


def skipped_counts(anomalies: list[Anomaly], outcomes: list[StudyOutcome]) -> list[Anomaly]:
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


def check_project_filter(
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
