"""The kit's words as types: statuses, run modes, detail levels, anomaly kinds, and "naive means
UTC".

Each is a ``StrEnum``, so a member *is* its string: it compares equal to the bare string older
code and old ``summary.json`` files use, and ``json.dumps`` writes it as that string. Labels for
people live here once (``Status.label``); a display that wants capitals derives them.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How a run or audit ended: ``ok``, ``attention`` (a human should look), ``failed``, or
    ``yielded`` (another run holds the REDCap lease: this one wrote nothing and exits 3, a
    normal outcome; neither a failure nor a success)."""

    OK = "ok"
    ATTENTION = "attention"
    FAILED = "failed"
    YIELDED = "yielded"

    @property
    def label(self) -> str:
        """The one label table: the report banner, the index, the headline and the mail."""
        return STATUS_LABELS[self]

    @property
    def completed(self) -> bool:
        """The run did its work (ok or attention): what counts as a success for the window,
        the anomaly memory, the last-success metric and the index's streaks. A yield did
        nothing, so it neither succeeds nor fails."""
        return self in (Status.OK, Status.ATTENTION)

    @classmethod
    def parse(cls, value: object) -> Status | None:
        """The status ``value`` names, or None (an unknown or missing status in an old file)."""
        try:
            return cls(value) if isinstance(value, str) else None
        except ValueError:
            return None


STATUS_LABELS: dict[Status, str] = {
    Status.OK: "OK",
    Status.ATTENTION: "Needs attention",
    Status.FAILED: "FAILED",
    Status.YIELDED: "Yielded to another run",
}

# What every screen says of a yield (report, mail, index): one place, the same words.
YIELD_NEXT = "the next scheduled run does the work"
YIELD_EXIT = (
    "3, a normal outcome: cron and systemd (SuccessExitStatus=3) count it as done, not failed"
)
YIELD_TODO = (
    "Nothing: the next scheduled run does the work. Only if every run yields, check that a "
    "single installation is scheduled against this REDCap (docs/run.md, 'Two installations, "
    "one REDCap')."
)


def nothing_to_list(step: str, *, yielded: bool = False) -> str:
    """The one line a run that stopped before planning shows where the plan's sections (projects,
    anomalies, studies, charts) would be, in the report and the mail alike. A yield did plan,
    before the lease, but sets that plan aside: the run holding the lease changes what is to do
    (docs/run.md, "Quiet runs")."""
    if yielded:
        return (
            "Another run holds the REDCap lease: this run set aside the plan it made before the "
            "lease and wrote nothing, so there is nothing to list."
        )
    where = step or "an unknown step"
    return f"The run stopped at {where} before planning: there is nothing to list."


class RunMode(StrEnum):
    """What a run folder holds; the suffix of its name (``20261128T063000Z-live``)."""

    LIVE = "live"
    DRY = "dry"
    AUDIT = "audit"
    REPAIR = "repair"

    @property
    def label(self) -> str:
        return {
            RunMode.LIVE: "live run",
            RunMode.DRY: "dry run",
            RunMode.AUDIT: "audit",
            RunMode.REPAIR: "repair",
        }[self]


class Detail(StrEnum):
    """A report's detail level: ``summary`` (no study rows or UIDs) or ``full``."""

    SUMMARY = "summary"
    FULL = "full"

    @classmethod
    def parse(cls, value: object) -> Detail:
        """``value`` as a detail level; a ``ValueError`` naming the levels otherwise."""
        if isinstance(value, str) and value in cls._value2member_map_:
            return cls(value)
        raise ValueError(f"detail must be one of {', '.join(cls)}, not {value!r}")


class AnomalyKind(StrEnum):
    """The kinds of ``Anomaly`` a run reports (``summary.json``'s ``anomalies[].kind``)."""

    AMBIGUOUS_AE_TITLE = "ambiguous_ae_title"
    PROJECT_MISCONFIGURED = "project_misconfigured"
    UNKNOWN_PROJECT_FILTER = "unknown_project_filter"
    INVALID_PATTERN = "invalid_pattern"
    AUTOID_INCOMPLETE_ROWS = "autoid_incomplete_rows"
    AUTOID_NAME_VARIANT = "autoid_name_variant"
    AUTOID_CONFLICT_HASH = "autoid_conflict_hash"
    AUTOID_CONFLICT_VALUE = "autoid_conflict_value"
    AUTOID_PATTERN_MISMATCH = "autoid_pattern_mismatch"
    EMPTY_PATIENT_ID = "empty_patient_id"
    TRANSFER_MISMATCH = "transfer_mismatch"
    TRANSFER_NAME_CONFLICT = "transfer_name_conflict"
    ID_SPACE_EXHAUSTED = "id_space_exhausted"
    CAPACITY_WARNING = "capacity_warning"
    FORECAST_WARNING = "forecast_warning"  # autoid_lib.forecast: the space fills up soon
    WINDOW_GAP = "window_gap"  # autoid_lib.window: an outage longer than the catch-up
    REDCAP_CLOCK = "redcap_clock"  # autoid_lib.server_clock: server_timezone runs ahead of REDCap
    REDCAP_WENT_BACK = "redcap_went_back"  # redcap.copy_mark: REDCap restored from a backup
    AUTOID_ROWS_DELETED = "autoid_rows_deleted"  # AutoID rows deleted since the last read
    LEASE_NOT_RELEASED = "lease_not_released"  # autoid_lib.lease: a ticket left in REDCap


def as_utc(moment: datetime) -> datetime:
    """``moment`` as an aware UTC time; a naive time *is* UTC (the kit's one rule for them)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_utc(text: str) -> datetime | None:
    """An ISO 8601 time as aware UTC (naive means UTC); None for an empty string."""
    return as_utc(datetime.fromisoformat(text)) if text else None


def plural(count: int, one: str, many: str | None = None) -> str:
    """``1 study``, ``2 studies``, ``1,200 AutoID rows``: a count with its noun agreeing."""
    return f"{count:,} {one if count == 1 else (many or one + 's')}"


def verified_counts(raw: Mapping[str, Any]) -> str:
    """What the re-read after writing compared, in words, for every screen (report, mail,
    index): the patients' new rows (new IDs, and IDs sent before but never stored), the kit's
    own records apart (the hash scheme's), and the transfer requests — so "7 new IDs" never
    sits beside an unexplained "8 AutoID rows"."""

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    parts = [plural(count("autoid_rows"), "patient's AutoID row", "patients' AutoID rows")]
    if count("kit_records"):
        parts.append(plural(count("kit_records"), "kit record") + " (the hash scheme's)")
    parts.append(plural(count("transfers"), "transfer request"))
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


# What an anomaly's ``count`` counts, by kind (``plan``): a count names its unit on every screen.
_COUNT_UNITS: dict[str, tuple[str, str]] = {
    "ambiguous_ae_title": ("study", "studies"),
    "empty_patient_id": ("study", "studies"),
    "transfer_mismatch": ("study", "studies"),
    "transfer_name_conflict": ("patient", "patients"),
    "id_space_exhausted": ("new patient", "new patients"),
    "autoid_conflict_hash": ("patient", "patients"),
    "autoid_conflict_value": ("ID", "IDs"),
    "autoid_incomplete_rows": ("AutoID row", "AutoID rows"),
    "autoid_name_variant": ("AutoID row", "AutoID rows"),
    "autoid_pattern_mismatch": ("stored ID", "stored IDs"),
    "autoid_rows_deleted": ("AutoID row", "AutoID rows"),
}


def anomaly_kind_label(kind: str) -> str:
    """An anomaly's kind in words, for every screen: ``ambiguous_ae_title`` → ``ambiguous AE
    title``."""
    words = {"ae": "AE", "autoid": "AutoID", "id": "ID"}
    return " ".join(words.get(w, w) for w in kind.split("_"))


def anomaly_count(kind: str, count: int) -> str:
    """An anomaly's count with its unit ("68 studies", "58 patients"); a kind that counts
    nothing (a project's setting, the clock, the lease) shows its one occurrence as "—"."""
    unit = _COUNT_UNITS.get(kind)
    return plural(count, *unit) if unit else "—"
