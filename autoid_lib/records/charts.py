"""The charts at the top of ``reports/index.html``: recent live runs at a glance.

Two inline SVG bar charts, oldest run on the left: transfers created and new IDs per run, and
each run's duration. A bar's colour is the run's status (the index's own colours); a failed run
gets a pale red column and a red mark on the axis, so it shows even when it created nothing; a
run that yielded to another gets a blue-grey mark and no band (it is no failure).
Each bar and each run's column carries a ``<title>`` tooltip with the date, status, counts and
times -- only what summary.json counts, never a pseudonym, patient or study.

Pure: summaries (with their start times) in, HTML text out; no I/O, no clock. Every text is
escaped, so the SVG is well-formed XML whatever an old or damaged summary holds.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from autoid_lib.records.summary import planned as summary_planned
from autoid_lib.vocab import Status, plural

RECENT_RUNS = 50  # the charts' reach: enough for two weeks of a job run a few times a day

# the index's status colours (its .s-* classes): ok, attention, failed, yielded, unknown
COLOURS = {
    "ok": "#1e7b34",
    "attention": "#9a5b00",
    "failed": "#b3261e",
    "yielded": "#3d5a80",
    "unknown": "#5b6670",
}
_FAILED_BAND = "#fdeceb"
_IDS_OPACITY = "0.45"  # a run's new-ID bar: its transfers bar's colour, lighter

_WIDTH = 1000  # viewBox units; the SVG scales to the page's width
_LABEL_W = 130  # about one "2026-12-04 18:59 UTC" under the axis, in viewBox units
_LEFT, _RIGHT, _TOP, _BOTTOM = 58, 8, 12, 24
_MAX_SLOT = 40.0  # a short history keeps narrow bars instead of a few huge ones


class ChartRun(NamedTuple):
    """One live run, as the charts need it. Counts are None when the run did not get that far."""

    started: datetime
    folder: str  # the run folder's name: the bars link to its report
    status: str  # a Status value, or "unknown"
    transfers: int | None
    ids: int | None
    duration_s: float | None
    command_s: float | None  # the whole command's wall time
    api_requests: int | None


def chart_runs(entries: Sequence[tuple[datetime, str, Mapping[str, Any]]]) -> list[ChartRun]:
    """``ChartRun`` for each (start time, folder name, summary), in the order given.

    A run that failed or yielded before planning knows no counts: None, drawn as nothing and
    said as "—", the same rule as the index's table (``records.summary.planned``)."""
    runs = []
    for started, folder, summary in entries:
        known = Status.parse(summary.get("status"))
        planned = summary_planned(summary)
        timings = summary.get("timings_s")
        runs.append(
            ChartRun(
                started=started,
                folder=folder,
                status=known.value if known else "unknown",
                transfers=_count(summary.get("transfers_created")) if planned else None,
                ids=_count(summary.get("ids_created")) if planned else None,
                duration_s=_seconds(summary.get("duration_s")),
                command_s=_seconds(timings.get("command")) if isinstance(timings, dict) else None,
                api_requests=_count(summary.get("api_requests")),
            )
        )
    return runs


def history_charts(runs: Sequence[ChartRun], limit: int = RECENT_RUNS) -> str:
    """The charts block for the newest ``limit`` of ``runs`` (oldest first); a sentence when
    there are none."""
    runs = list(runs)[-limit:] if limit > 0 else []
    if not runs:
        return '<div class="charts"><p>No live run recorded yet: nothing to chart.</p></div>'
    span = _span(runs)
    return (
        '<div class="charts">'
        f"<h2>Last {plural(len(runs), 'live run')} ({_e(span)}), oldest on the left</h2>"
        + _legend()
        + counts_chart(runs)
        + duration_chart(runs)
        + "</div>"
    )


def counts_chart(runs: Sequence[ChartRun]) -> str:
    """Per run, a bar of transfers created and one of new IDs, in the run's status colour."""
    top = max([r.transfers or 0 for r in runs] + [r.ids or 0 for r in runs])
    frame = _Frame(len(runs), height=150)
    parts = [frame.axes(top, "transfers / IDs"), frame.x_labels(runs)]
    for i, run in enumerate(runs):
        x, slot = frame.slot(i)
        bar = max(slot * 0.38, 1.0)
        parts.append(_column(frame, run, i))
        for offset, value, what, opacity in (
            (0.1, run.transfers, "transfer request", None),
            (0.52, run.ids, "new ID", _IDS_OPACITY),
        ):
            if value:
                label = f"{_when(run)} · {_status(run)} · {plural(value, what)}"
                parts.append(frame.bar(x + slot * offset, bar, value, top, run, label, opacity))
    totals = (
        f"{plural(sum(r.transfers or 0 for r in runs), 'transfer')} and "
        f"{plural(sum(r.ids or 0 for r in runs), 'new ID')} in total"
    )
    label = f"Transfers and new IDs per live run, {_span(runs)}: {totals}; {_statuses(runs)}"
    return frame.svg(label, "".join(parts))


def duration_chart(runs: Sequence[ChartRun]) -> str:
    """Per run, a bar of its duration (the run's own, without starting Python and the kernel)."""
    top_s = max((r.duration_s or 0.0 for r in runs), default=0.0)
    frame = _Frame(len(runs), height=90)
    parts = [frame.axes(top_s, "duration", seconds=True), frame.x_labels(runs)]
    for i, run in enumerate(runs):
        x, slot = frame.slot(i)
        parts.append(_column(frame, run, i))
        if run.duration_s:
            label = f"{_when(run)} · {_status(run)} · {_times(run)}"
            parts.append(frame.bar(x + slot * 0.15, slot * 0.7, run.duration_s, top_s, run, label))
    label = f"Duration per live run, {_span(runs)}: longest {_secs(top_s)}; {_statuses(runs)}"
    return frame.svg(label, "".join(parts))


# -- drawing -------------------------------------------------------------------------------------


class _Frame:
    """The plot area of one chart: slot positions, bar heights, axes."""

    def __init__(self, count: int, height: int) -> None:
        self.count = count
        self.height = height
        self.plot_h = height - _TOP - _BOTTOM
        self.plot_w = _WIDTH - _LEFT - _RIGHT
        self.slot_w = min(_MAX_SLOT, self.plot_w / max(count, 1))
        self.base = _TOP + self.plot_h  # the y of the zero line

    def slot(self, index: int) -> tuple[float, float]:
        return _LEFT + index * self.slot_w, self.slot_w

    def bar(self, x: float, width: float, value: float, top: float, run: ChartRun,
            label: str, opacity: str | None = None) -> str:  # fmt: skip
        """A bar whose height is ``value``'s share of ``top`` (at least 1 unit: never lost)."""
        h = max(self.plot_h * value / top, 1.0) if top else 0.0
        fade = f' fill-opacity="{opacity}"' if opacity else ""
        return (
            f'<rect class="bar" x="{x:.2f}" y="{self.base - h:.2f}" width="{width:.2f}" '
            f'height="{h:.2f}" fill="{_colour(run)}"{fade}><title>{_e(label)}</title></rect>'
        )

    def axes(self, top: float, unit: str, seconds: bool = False) -> str:
        """The zero line, the top line and their values, the unit on the left."""
        top_text = _secs(top) if seconds else f"{int(top):,}"
        right = _LEFT + self.count * self.slot_w  # the runs' width: no empty stretch on the right
        middle = _TOP + self.plot_h / 2
        return (
            f'<line x1="{_LEFT}" y1="{_TOP}" x2="{right}" y2="{_TOP}" stroke="#d8dde2"/>'
            f'<line x1="{_LEFT}" y1="{self.base}" x2="{right}" y2="{self.base}" stroke="#5b6670"/>'
            f'<text class="max" x="{_LEFT - 6}" y="{_TOP + 4}" text-anchor="end">'
            f"{_e(top_text)}</text>"
            f'<text x="{_LEFT - 6}" y="{self.base}" text-anchor="end">0</text>'
            f'<text transform="translate(14 {middle:.1f}) rotate(-90)" text-anchor="middle" '
            f'font-size="10">{_e(unit)}</text>'
        )

    def x_labels(self, runs: Sequence[ChartRun]) -> str:
        """The first and the last run's start, under the axis."""
        y = self.base + 16
        first = f'<text x="{_LEFT}" y="{y}">{_e(_when(runs[0]))}</text>'
        if len(runs) == 1:
            return first
        x_last = _LEFT + len(runs) * self.slot_w
        if x_last - _LEFT < 2 * _LABEL_W:  # too narrow for two labels: one, left-aligned
            span = f"{_when(runs[0])} → {_when(runs[-1])}"
            return f'<text x="{_LEFT}" y="{y}">{_e(span)}</text>'
        return (
            first + f'<text x="{x_last:.2f}" y="{y}" text-anchor="end">{_e(_when(runs[-1]))}</text>'
        )

    def svg(self, label: str, body: str) -> str:
        return (
            f'<svg role="img" aria-label="{_e(label)}" '
            f'viewBox="0 0 {_WIDTH} {self.height}" width="{_WIDTH}" height="{self.height}" '
            'font-family="system-ui,sans-serif" font-size="11" fill="#1d2329">'
            f"{body}</svg>"
        )


def _column(frame: _Frame, run: ChartRun, index: int) -> str:
    """The run's whole column: a link to its report with the run's tooltip, a mark in its status
    colour under the axis (a run that counted nothing still shows), pale red when it failed."""
    x, slot = frame.slot(index)
    failed = run.status == Status.FAILED
    fill = _FAILED_BAND if failed else "transparent"
    mark = (
        f'<rect class="status-mark" x="{x + 1:.2f}" y="{frame.base + 1}" '
        f'width="{max(slot - 2, 1):.2f}" height="4" fill="{_colour(run)}"/>'
    )
    title = f"{_when(run)} · {_status(run)} · {_counts(run)} · {_times(run)}"
    return (
        f'<a href="{_e(run.folder)}/report.html"><rect class="run" x="{x:.2f}" y="{_TOP}" '
        f'width="{slot:.2f}" height="{frame.plot_h}" fill="{fill}"><title>{_e(title)}</title>'
        f"</rect>{mark}</a>"
    )


def _legend() -> str:
    swatches = [
        ("ok", "OK"),
        ("attention", "Needs attention"),
        ("failed", "FAILED (pale red column)"),
        ("yielded", Status.YIELDED.label),
    ]
    items = "".join(
        f'<span class="sw" style="background:{COLOURS[key]}"></span>{_e(text)} '
        for key, text in swatches
    )
    return (
        f'<p class="legend">{items}· left bar: transfers, lighter bar: new IDs, mark under the '
        "axis: status; hover for the numbers, click for the report</p>"
    )


# -- words ---------------------------------------------------------------------------------------


def _when(run: ChartRun) -> str:
    return f"{run.started:%Y-%m-%d %H:%M} UTC"


def _span(runs: Sequence[ChartRun]) -> str:
    first, last = runs[0].started, runs[-1].started
    return (
        f"{first:%Y-%m-%d}"
        if first.date() == last.date()
        else f"{first:%Y-%m-%d} to {last:%Y-%m-%d}"
    )


def _status(run: ChartRun) -> str:
    known = Status.parse(run.status)
    return known.label if known else "unknown status"


def _counts(run: ChartRun) -> str:
    transfers = "—" if run.transfers is None else f"{run.transfers:,}"
    ids = "—" if run.ids is None else f"{run.ids:,}"
    return f"transfers {transfers}, new IDs {ids}"


def _times(run: ChartRun) -> str:
    text = "duration —" if run.duration_s is None else _secs(run.duration_s)
    if run.command_s is not None:
        text += f" ({_secs(run.command_s)} whole command)"
    if run.api_requests is not None:
        text += f", {plural(run.api_requests, 'API request')}"
    return text


def _secs(value: float) -> str:
    """``0.09 s``, ``4.2 s``: two decimals below a second, where a quick run's time would
    round to 0.1 for every run."""
    return f"{value:.2f} s" if value < 1 else f"{value:,.1f} s"


def _statuses(runs: Sequence[ChartRun]) -> str:
    failed = sum(r.status == Status.FAILED for r in runs)
    attention = sum(r.status == Status.ATTENTION for r in runs)
    yielded = sum(r.status == Status.YIELDED for r in runs)
    text = f"{failed} failed, {attention} needed attention"
    return text + (f", {yielded} yielded to another run" if yielded else "")


def _count(value: object) -> int | None:
    """A whole, non-negative count, or None (missing, or damaged in an old file)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return None
    if value < 0 or value == float("inf"):
        return None
    return int(value)


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if 0 <= value < float("inf") else None


def _colour(run: ChartRun) -> str:
    return COLOURS.get(run.status, COLOURS["unknown"])


# characters XML (and so inline SVG) does not allow: C0 controls but tab and newline, surrogates
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _e(value: Any) -> str:
    """Escaped for text and attributes; characters XML forbids are dropped."""
    return html.escape(_NOT_XML.sub("", str(value)), quote=True)
