"""Prometheus metrics for node_exporter's textfile collector, from the recorded summaries.

After every run and audit the kit rewrites one ``.prom`` file (``[monitoring] textfile``) from
the newest summary.json of each mode (live, dry, audit) and the newest one that succeeded,
so a failed run never erases when the job last succeeded. A run that yielded to another (it
wrote nothing, exit 3) is neither: it sets only ``autoid_last_yield_timestamp_seconds``, and
every other gauge keeps the newest run that did its work or failed. ``registry_from_summaries``
is pure (summaries in, a ``CollectorRegistry`` out); ``write_metrics`` finds the summaries and
writes.

Labels are modes, statuses, skip reasons, anomaly kinds and project names; values are counts,
ratios and times. summary.json carries no study UID, patient ID or token, and nothing else is
read, so neither can the metrics.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from autoid_lib.records.folders import RUN_MODES, read_summary, run_folders
from autoid_lib.vocab import Status

log = logging.getLogger("autoid.metrics")

TEXTFILE_MODE = 0o644  # node_exporter runs as another user and must read it (docs/operations.md)
MAX_READS = 200  # summaries read looking for the newest success of each mode


def registry_from_summaries(
    latest: Mapping[str, Mapping[str, Any]],
    succeeded: Mapping[str, Mapping[str, Any]],
    yielded: Mapping[str, Mapping[str, Any]] | None = None,
) -> CollectorRegistry:
    """The metrics of the newest summary per mode that did not yield (``latest``), the newest
    success per mode, and the newest yield per mode since ``latest`` (``yielded``)."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=registry)

    last_run = gauge(
        "autoid_last_run_timestamp_seconds",
        "When the newest run of a mode that did not yield ended",
        ("mode", "status"),
    )
    last_success = gauge(
        "autoid_last_success_timestamp_seconds",
        "When the newest run of a mode that succeeded (ok or attention) ended",
        ("mode",),
    )
    last_yield = gauge(
        "autoid_last_yield_timestamp_seconds",
        "When the newest run of a mode that yielded to another run (exit 3, nothing written) "
        "ended; absent: none since the newest run that did not yield",
        ("mode",),
    )
    duration = gauge("autoid_run_duration_seconds", "The newest run's duration", ("mode",))
    requests = gauge("autoid_api_requests", "REDCap API requests of the newest run", ("mode",))
    received = gauge(
        "autoid_api_received_bytes", "Bytes of REDCap's answers to the newest run", ("mode",)
    )
    transfers = gauge(
        "autoid_transfers_created", "Transfer requests the newest run created", ("mode",)
    )
    ids = gauge("autoid_ids_created", "New IDs the newest run created", ("mode",))
    skipped = gauge(
        "autoid_studies_skipped", "Studies the newest run skipped, by reason", ("mode", "reason")
    )
    anomalies = gauge(
        "autoid_open_anomalies", "Anomalies in the newest run's report, by kind", ("mode", "kind")
    )
    ratio = gauge(
        "autoid_id_capacity_used_ratio", "Share of the naming pattern's IDs in use", ("project",)
    )
    full = gauge(
        "autoid_id_space_full_timestamp_seconds",
        "When the ID space runs out at the recent rate (forecast; absent: no forecast)",
        ("project",),
    )
    for mode, summary in latest.items():
        when = _timestamp(summary)
        if when is not None:
            last_run.labels(mode, str(summary.get("status"))).set(when)
        _set(duration, (mode,), summary.get("duration_s"))
        _set(requests, (mode,), summary.get("api_requests"))
        _set(received, (mode,), summary.get("api_bytes"))
        if mode != "audit":
            _set(transfers, (mode,), summary.get("transfers_created"))
            _set(ids, (mode,), summary.get("ids_created"))
            for reason, count in (summary.get("skipped") or {}).items():
                _set(skipped, (mode, reason), count)
        kinds: dict[str, int] = {}
        for anomaly in summary.get("anomalies") or ():
            kind = str(anomaly.get("kind", "unknown"))
            kinds[kind] = kinds.get(kind, 0) + 1  # anomalies, not what each one counts
        for kind, count in kinds.items():
            anomalies.labels(mode, kind).set(count)
    for gauge_, chosen in ((last_success, succeeded), (last_yield, yielded or {})):
        for mode, summary in chosen.items():
            when = _timestamp(summary)
            if when is not None:
                gauge_.labels(mode).set(when)
    for project in _capacity_source(latest, succeeded).get("projects") or ():
        name = str(project.get("project"))
        _set(ratio, (name,), project.get("capacity_fraction"))
        full_on = (project.get("forecast") or {}).get("full_on")
        if full_on:
            day = datetime.combine(datetime.fromisoformat(full_on).date(), time(), tzinfo=UTC)
            full.labels(name).set(day.timestamp())
    return registry


def _capacity_source(latest, succeeded) -> Mapping[str, Any]:
    """The newest live run that succeeded (its capacity is REDCap's), else a dry one."""
    for mode in ("live", "dry"):
        if mode in succeeded:
            return succeeded[mode]
    return {}


def _set(gauge: Gauge, labels: tuple[str, ...], value: Any) -> None:
    """A sample only for a known number: an unknown count (a failed write) is absent, not 0."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        gauge.labels(*labels).set(value)


def _timestamp(summary: Mapping[str, Any]) -> float | None:
    for key in ("finished", "started"):
        try:
            moment = datetime.fromisoformat(str(summary.get(key)))
        except ValueError:
            continue
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return None


# -- the I/O edge ------------------------------------------------------------------------------


def newest_summaries(
    reports_dir: Path | str,
) -> tuple[dict[str, dict], dict[str, dict], dict[str, dict]]:
    """The newest summary per mode that did not yield, the newest per mode that succeeded, and
    the newest yield per mode newer than the first (``registry_from_summaries``' three)."""
    latest: dict[str, dict] = {}
    succeeded: dict[str, dict] = {}
    yielded: dict[str, dict] = {}
    reads = 0
    for folder, parsed in reversed(run_folders(reports_dir)):
        if parsed.mode in latest and parsed.mode in succeeded:
            if len(succeeded) == len(RUN_MODES):
                break
            continue
        reads += 1
        if reads > MAX_READS:
            break
        summary = read_summary(folder)
        if summary is None:
            continue
        status = summary.get("status")
        if status == Status.YIELDED:  # neither a failure nor a success: it changes nothing
            if parsed.mode not in latest:
                yielded.setdefault(parsed.mode, dict(summary))
            continue
        latest.setdefault(parsed.mode, dict(summary))
        if status != Status.FAILED:
            succeeded.setdefault(parsed.mode, dict(summary))
    return latest, succeeded, yielded


def write_metrics(textfile: Path | str, reports_dir: Path | str) -> None:
    """Rewrite ``textfile`` from the reports folder, atomically: a scrape never sees half."""
    write_textfile(textfile, registry_from_summaries(*newest_summaries(reports_dir)))


def write_textfile(path: Path | str, registry: CollectorRegistry) -> None:
    """``prometheus_client.write_to_textfile``'s bytes and rename, but a 0644 temporary file.

    ``write_to_textfile`` creates its temporary file with the process umask (0027 under the
    shipped systemd unit), so the ``.prom`` file would become unreadable to node_exporter.
    The metrics hold counts and project names only, so world-readable is the right mode.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # not *.prom: not scraped
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, TEXTFILE_MODE)
    try:
        with os.fdopen(descriptor, "wb") as file:
            os.fchmod(file.fileno(), TEXTFILE_MODE)  # the umask narrowed os.open's mode
            file.write(generate_latest(registry))
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
