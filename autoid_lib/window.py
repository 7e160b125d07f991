"""The run's window: which Incoming modifications a run reads, reaching back after an outage.

A run reads the studies modified in the last ``lookback_days``. When runs stopped for longer
(the host was down over a holiday, REDCap was down, cron was off during a migration), studies that
arrived in the gap and were not modified since would fall out of every later window and never be
served. So the window reaches back on its own to the end of the last successful live run's window
(less an overlap, for clocks and slow imports), but never further than ``max_catchup_days``;
beyond that, the part not covered is a gap the run reports with the command that closes it.

Pure: times in (REDCap server time, naive), a window out; no clock, no files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil

from autoid_lib.plan import Anomaly

OVERLAP = timedelta(hours=1)


@dataclass(frozen=True)
class RunWindow:
    """Where a run's read begins and ends, and why it begins there."""

    begin: datetime
    end: datetime
    lookback_days: int
    last_success_end: datetime | None = None  # the previous successful live run's window end
    gap_begin: datetime | None = None  # set when runs stopped longer than the catch-up allows

    @property
    def extended(self) -> bool:
        """Whether the window reaches back further than ``lookback_days`` to cover an outage."""
        return self.begin < self.end - timedelta(days=self.lookback_days)

    @property
    def catch_up_days(self) -> int:
        """Whole days (rounded up) the window covers beyond ``lookback_days``."""
        if not self.extended:
            return 0
        extra = (self.end - timedelta(days=self.lookback_days)) - self.begin
        return ceil(extra / timedelta(days=1))

    def describe(self) -> str:
        """A clause for the report, or '' for an ordinary window."""
        if self.gap_begin is not None:
            return (
                f"extended by the {self.catch_up_days}-day catch-up maximum; runs stopped "
                f"at {self.last_success_end:%Y-%m-%d %H:%M}, earlier studies are not covered"
            )
        if self.extended:
            since = self.end - self.last_success_end if self.last_success_end else timedelta(0)
            return f"extended to cover the {since.days} days since the last successful run"
        return ""


def run_window(
    end: datetime,
    lookback_days: int,
    last_success_end: datetime | None,
    max_catchup_days: int,
) -> RunWindow:
    """The window of a run ending at ``end`` (server time) after the given last success."""
    begin = end - timedelta(days=lookback_days)
    if last_success_end is None or last_success_end > end:
        return RunWindow(begin, end, lookback_days)  # first run, or a clock stepped back
    wanted = last_success_end - OVERLAP
    if wanted >= begin:
        return RunWindow(begin, end, lookback_days, last_success_end)
    floor = end - timedelta(days=max(max_catchup_days, lookback_days))
    if wanted >= floor:
        return RunWindow(wanted, end, lookback_days, last_success_end)
    return RunWindow(floor, end, lookback_days, last_success_end, gap_begin=wanted)


def gap_anomaly(window: RunWindow) -> Anomaly | None:
    """The uncovered part of an outage, with the one command that serves it."""
    if window.gap_begin is None:
        return None
    days = ceil((window.end - window.gap_begin) / timedelta(days=1))
    return Anomaly(
        "window_gap",
        "",
        f"no successful live run since {window.last_success_end:%Y-%m-%d %H:%M}; studies "
        f"modified between {window.gap_begin:%Y-%m-%d %H:%M} and {window.begin:%Y-%m-%d %H:%M} "
        "are outside this run's window (beyond [run] max_catchup_days)",
        f"Run once: autoid run --config <your config> --lookback-days {days}",
    )
