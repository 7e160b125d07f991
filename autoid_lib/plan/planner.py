"""``plan``: one run's plan from its snapshot: route the studies, plan each project, join."""

from __future__ import annotations

from collections import defaultdict

from autoid_lib.hash_scheme import HASH_SCHEME_RECORD, fingerprint_to_record
from autoid_lib.plan.existing import SentNames, rows_by_project, sent_names
from autoid_lib.plan.model import (
    ALREADY_TRANSFERRED,
    SKIPPED,
    Anomaly,
    NewAutoId,
    Plan,
    PlanSettings,
    StudyOutcome,
    TransferRequest,
    name_key,
    outcome,
)
from autoid_lib.plan.project import ProjectPlanner
from autoid_lib.plan.routing import check_project_filter, route_ae_titles, skipped_counts
from autoid_lib.retired import retired_by_project, superseded_requests
from autoid_lib.snapshot import IncomingStudy, Snapshot


def plan(snapshot: Snapshot, settings: PlanSettings) -> Plan:
    """Decide every write of one run from what it read."""
    fingerprint = fingerprint_to_record(snapshot.autoid_rows, settings.hasher)
    anomalies: list[Anomaly] = []
    routes, projects = route_ae_titles(snapshot.projects, anomalies)
    patient_rows = rows_by_project(snapshot.autoid_rows)
    retired = retired_by_project(snapshot.autoid_rows)
    superseded = superseded_requests(snapshot.studies, retired, settings.hasher)
    sent = sent_names(snapshot.studies, superseded)
    check_project_filter(settings.projects, projects, anomalies)

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
            outcomes.append(outcome(study, route.label, ALREADY_TRANSFERRED))
        else:
            outcomes.append(outcome(study, route.label, SKIPPED, route.reason))

    states = []
    new_ids: list[NewAutoId] = []
    transfers: list[TransferRequest] = []
    for project in projects:
        if settings.projects is not None and project.name not in settings.projects:
            continue
        key = name_key(project.name)
        planner = ProjectPlanner(
            project,
            patient_rows.get(key, ()),
            sent.get(key, SentNames()),
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
        anomalies=tuple(skipped_counts(anomalies, outcomes)),
        projects=tuple(states),
        studies_in_window=len(snapshot.studies),
        kit_rows=kit_rows,
    )
