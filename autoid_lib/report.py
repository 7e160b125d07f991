"""Display helpers for the run notebook: status banner, tables and charts of a ``RunResult``.

Each function takes the result (and the detail level) and returns one displayable object —
``IPython.display.HTML`` or ``IPython.display.Image`` — or ``None`` when there is nothing to
show. They format; they decide nothing. Tables are plain, escaped HTML with CSS classes that
the report template styles (``autoid_lib/templates/report/report.css``); the status banner
carries inline styles so it reads the same in Jupyter and in a mail client.

Nothing here shows a patient ID or name: the result's tables never hold them.

A result of ``None`` shows nothing: the notebook was executed by someone other than the kit (a
scheduler, papermill), its run cell recorded the run by a nested ``autoid run`` and has shown
that run's report already (``notebook_run.run_in_kernel``).
"""

from __future__ import annotations

import functools
import html
import io
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import pandas as pd
from IPython.display import HTML, Image

from autoid_lib.environment import describe
from autoid_lib.failures import cause_of, written_after
from autoid_lib.forecast import Forecast
from autoid_lib.plan import ALREADY_TRANSFERRED, SKIPPED, TRANSFER
from autoid_lib.result import RunResult
from autoid_lib.vocab import (
    STATUS_LABELS,
    YIELD_EXIT,
    YIELD_NEXT,
    YIELD_TODO,
    Status,
    anomaly_count,
    anomaly_kind_label,
    nothing_to_list,
    plural,
    verified_counts,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LABELS = STATUS_LABELS
_BANNER_STYLE = {
    "ok": "background:#edf7ef;border:1px solid #9fd0aa;color:#1e7b34",
    "attention": "background:#fff6e5;border:1px solid #f0c46e;color:#9a5b00",
    "failed": "background:#fdeceb;border:1px solid #eea29c;color:#b3261e",
    "yielded": "background:#eef2f7;border:1px solid #b4c2d3;color:#3d5a80",  # no alarm
}
_BAR_COLOURS = {"ok": "#4c9a5e", "warn": "#e0a030", "bad": "#c8453b", "none": "#b9c0c7"}
_MAX_BAR_DATES = 45  # more study dates than this: lines instead of stacked bars


def _shown_by_the_run_cell(show: Callable[..., Any]) -> Callable[..., Any]:
    """The display helper, showing nothing for ``result=None`` (a run recorded elsewhere)."""

    @functools.wraps(show)
    def shown(result: RunResult | None, *args: Any, **kwargs: Any) -> Any:
        return None if result is None else show(result, *args, **kwargs)

    return shown


# -- status ------------------------------------------------------------------------------------


@_shown_by_the_run_cell
def status_banner(result: RunResult) -> HTML:
    """The first thing a reader sees: status, mode, window, duration and the plan sentence."""
    status = result.status
    mode = "dry run (nothing written)" if result.mode == "dry" else "live run"
    window = f"{result.window_begin:%Y-%m-%d %H:%M} → {result.window_end:%Y-%m-%d %H:%M}"
    facts = (
        f"{mode} · window {window} ({result.lookback_days} days, REDCap server time) · "
        f"started {result.started:%Y-%m-%d %H:%M:%S} UTC · {result.duration_s:.1f} s · "
        f"{result.api_requests} API requests"
    )
    if result.error is not None and status == Status.YIELDED:
        what = _e(f"{_sentence(result.error.message)} {_sentence(YIELD_NEXT)}")
    elif result.error is not None:
        what = f"Failed at <b>{_e(result.error.step)}</b>: {_e(result.error.message)}"
    elif result.problems:
        what = f"Verification found {len(result.problems)} difference(s); see below."
    elif result.plan is not None:
        what = _e(_outcome_sentence(result))
    else:
        what = ""
    for anomaly in result.run_anomalies:  # e.g. the lease not given back: said at the top
        what += (
            f'<div class="run-anomaly" style="color:#9a5b00;margin-top:2px">'
            f"{_e(_sentence(anomaly.message.partition(':')[0]))} See “Needs a human”.</div>"
        )
    changes = ""
    if result.changes is not None:
        changes = (
            f'<div class="changes" style="color:#1d2329;font-size:14px;margin-top:2px">'
            f"{_e(_sentence(result.changes.text))}{_resolved_list(result)}</div>"
        )
    return HTML(status_box(status, what, facts, changes))


def status_box(status: str, what_html: str, facts: str, extra_html: str = "") -> str:
    """The coloured box a run report and an audit report open with (inline styles, so it reads
    the same in Jupyter, a browser and a mail client). ``what_html`` is already escaped;
    ``status`` is a ``Status`` or its value (an audit's report gives a plain string)."""
    style = _BANNER_STYLE[status]  # an unknown status stops here, as a KeyError
    label = LABELS[Status(status)]
    return (
        f'<div class="status {status}" style="{style};border-radius:6px;'
        f'padding:10px 14px;margin:8px 0">'
        f'<span class="label" style="font-weight:700;font-size:18px">{label}</span> '
        f'<span style="color:#1d2329">{what_html}</span>{extra_html}'
        f'<div class="facts" style="color:#5b6670;font-size:13px;margin-top:2px">'
        f"{_e(facts)}</div></div>"
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _resolved_list(result: RunResult) -> str:
    """The anomalies that went away since the last run, named (they are in no table)."""
    resolved = result.changes.resolved if result.changes is not None else ()
    if not resolved:
        return ""
    items = "; ".join(f"{_kind_label(r.kind)} ({r.project})" for r in resolved)
    return f" Resolved: {_e(items)}."


def _outcome_sentence(result: RunResult) -> str:
    """``Created 11 transfer request(s) and 5 new ID(s); reused 5 known ID(s); …``"""
    counts = result.counts()
    verb = "Would create" if result.mode == "dry" else "Created"
    text = (
        f"{verb} {counts['transfers_created']:,} transfer request(s) and "
        f"{counts['ids_created']:,} new ID(s); reused {counts['ids_reused']:,} known ID(s)"
    )
    skipped = result.plan.skipped_by_reason() if result.plan else {}
    if skipped:
        detail = ", ".join(f"{n:,} {reason}" for reason, n in sorted(skipped.items()))
        text += f"; skipped {sum(skipped.values()):,} study(ies): {detail}"
    return text + "."


@_shown_by_the_run_cell
def error_box(result: RunResult) -> HTML | None:
    """What failed and what to do, or nothing when the run did not fail; a run that yielded
    to another: who was writing, that it wrote nothing and needs nothing. A run that stopped
    before planning ends it with the one line that stands for the plan's sections."""
    if result.error is None and not result.problems:
        return None
    parts = []
    if result.error is not None and result.status == Status.YIELDED:
        e = result.error
        parts.append(
            _facts(
                [
                    ("Who was writing", e.message),
                    ("What was written", written_after(e.step, result.mode)),
                    ("What to do", YIELD_TODO),
                    ("Exit status", YIELD_EXIT),
                ]
            )
        )
    elif result.error is not None:
        e = result.error
        cause = cause_of(e.kind, e.type)
        parts.append(
            _facts(
                [
                    ("Cause", f"{cause.label} ({e.type})"),
                    ("What was written", written_after(e.step, result.mode)),
                    ("What to do", cause.action),
                ]
            )
        )
    if result.problems:
        parts.append(
            "<p>After writing, REDCap did not hold exactly what the run planned:</p>"
            + _list(result.problems)
            + '<p class="note">Check these records in REDCap before the next run; the next '
            "run completes what is missing but never repeats a write.</p>"
        )
    if result.error is not None and stopped_before_planning(result):
        line = nothing_to_list(result.error.step, yielded=result.status == Status.YIELDED)
        parts.append(f'<p class="not-planned">{_e(line)}</p>')
    return HTML("".join(parts))


def stopped_before_planning(result: RunResult) -> bool:
    """The run ended before it had a plan (REDCap refused, the lease was held): the plan's
    sections have nothing to show and show nothing; ``error_box`` says so once. Its sections'
    headings go too (``records.html_export``: a heading over nothing is left out)."""
    return result.plan is None and result.error is not None


# -- tables ------------------------------------------------------------------------------------


@_shown_by_the_run_cell
def projects_table(result: RunResult) -> HTML | None:
    """One row per auto-ID project: what arrived, what the run did, how full the ID space is."""
    if result.plan is None:  # stopped before planning: error_box says so, once
        return None
    frame = result.projects()
    if frame.empty:
        return _note("No auto-ID project is configured in the Projects database.")
    skipped = _skipped_by_project(result)
    verb = "to create" if result.mode == "dry" else "created"
    own = _own_counts(result)
    rows = []
    for r in frame.to_dict("records"):
        mine = own.get(r["project"], Counter[str]())
        rows.append(
            [
                r["project"],
                r["ae_title"],
                r["pattern"],
                mine["incoming"],
                mine["already"],
                r["transfers_created"],
                r["ids_reused"],
                r["ids_created"],
                skipped.get(r["project"], "0"),
                _capacity_text(r),
            ]
        )
    for label, counts in sorted(own.items()):
        if SHARED in label:  # a shared AE title's studies: once, in a row of their own
            rows.append([f"{label} (shared AE title)", "", "", counts["incoming"],
                         counts["already"], 0, 0, 0, skipped.get(label, "0"), ""])  # fmt: skip
    total: Counter[str] = Counter()
    for counts in own.values():
        total.update(counts)
    rows.append(
        ["total (each study once)", "", "", total["incoming"], total["already"],
         _sum(frame["transfers_created"]), _sum(frame["ids_reused"]),
         _sum(frame["ids_created"]), total["skipped"], ""]
    )  # fmt: skip
    header = [
        "project", "AE title", "pattern", "incoming", "already transferred",
        f"transfers {verb}", "IDs reused", f"IDs {verb}", "skipped", "capacity used",
    ]  # fmt: skip
    return HTML(html_table(header, rows, numeric={3, 4, 5, 6, 7}, mono={1, 2}, nowrap={9}))


SHARED = " / "  # plan.SHARED_AE_TITLE_JOIN: the label of a study on a shared AE title


def _own_counts(result: RunResult) -> dict[str, Counter[str]]:
    """Studies per project label, each once: a shared AE title's under its joined label."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for study in result.plan.studies if result.plan else ():
        c = counts[study.project_name]
        c["incoming"] += 1
        c["already"] += study.action == ALREADY_TRANSFERRED
        c["skipped"] += study.action == SKIPPED
    return counts


def _sum(column: pd.Series) -> int | None:
    values = [v for v in column if v is not None and not pd.isna(v)]
    return int(sum(values)) if len(values) == len(column) else None


@_shown_by_the_run_cell
def anomalies_table(result: RunResult) -> HTML | None:
    """What a human should look at, each with what to do about it."""
    if result.plan is None and not result.run_anomalies:
        return None  # stopped before planning: error_box says so, once
    frame = result.anomalies()
    if frame.empty:
        return _note("Nothing needs a human.")
    rows = [
        [
            r["project"],
            _kind_label(r["kind"]),
            anomaly_count(r["kind"], int(r["count"] or 1)),
            r["message"],
            r["action"],
        ]
        for r in frame.to_dict("records")
    ]
    header = ["project", "what", "count", "details", "what to do"]
    if "seen" in frame.columns:  # compared with the recorded anomalies (anomaly_memory)
        rows = [[*row, seen] for row, seen in zip(rows, frame["seen"], strict=True)]
        header.append("since")
    note = _p("The run stopped before planning: the data's own anomalies are not known.")
    return HTML(html_table(header, rows) + (note if result.plan is None else ""))


def _kind_label(kind: str) -> str:
    """``ambiguous_ae_title`` → ``ambiguous AE title`` (``vocab``: explore says it alike)."""
    return anomaly_kind_label(kind)


@_shown_by_the_run_cell
def studies_table(result: RunResult, detail: str = "summary") -> HTML | None:
    """Study-level rows (``detail == "full"`` only); a count by action otherwise."""
    if result.plan is None:  # stopped before planning: error_box says so, once
        return None
    frame = result.studies(detail="full")
    if frame.empty:
        return _note("No study in the window was addressed to an auto-ID project.")
    if detail != "full":
        counts = frame.groupby(["project", "action"]).size().reset_index(name="studies")
        count_rows = [list(r) for r in counts.itertuples(index=False)]
        return HTML(
            _p("Study-level rows and study UIDs are left out at detail = summary.")
            + html_table(["project", "action", "studies"], count_rows, numeric={2})
        )
    # what needs a person first, then what the run did, then what was already done
    order = frame["action"].map({SKIPPED: 0, TRANSFER: 1}).fillna(2)
    frame = frame.assign(_order=order).sort_values(
        ["_order", "project", "study_date", "study_ref"], kind="stable"
    )
    header = ["project", "study date", "study", "study UID", "pseudonym", "action", "reason"]
    rows = frame[
        ["project", "study_date", "study_ref", "study_uid", "pseudonym", "action", "reason"]
    ].itertuples(index=False)
    return HTML(html_table(header, rows, mono={2, 3, 4}, nowrap={1, 5}))


@_shown_by_the_run_cell
def run_details(result: RunResult, command_started: str = "") -> HTML:
    """API requests, where the time went (the run's and the whole command's), the re-read
    after writing, and which kit, REDCap host and config produced the report."""
    steps = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.timings.items())
    pairs = [
        ("API requests", f"{result.api_requests:,} ({_megabytes(result.api_bytes)} received)"),
        *(
            (TABLE_LABELS.get(name, f"{name} read"), how)
            for name, how in result.table_reads.items()
        ),
        ("Duration", f"{result.duration_s:.2f} s" + (f" ({steps})" if steps else "")),
    ]
    whole = command_time(command_started)
    if whole:
        pairs.append(("Whole command", whole))
    pairs += [
        ("Look-back", f"{result.lookback_days} days"),
        ("Studies in window", _studies_in_window(result)),
        ("Re-read after writing", verification_text(result)),
    ]
    if result.mode == "live":
        pairs.append(("REDCap lease", lease_text(result.lease)))
    produced_by = describe(result.environment)
    if produced_by:
        pairs.append(("Produced by", produced_by))
    return HTML(_facts(pairs))


def lease_text(lease: dict | None) -> str:
    """The lease in the run's details (summary.json ``lease``): a run with nothing to write
    takes none (docs/run.md, "Quiet runs")."""
    if not lease:
        return "not taken: nothing to write, so nothing written to REDCap"
    renewals = lease.get("renewals") or 0
    renewed = f", renewed {plural(renewals, 'time')}" if renewals else ""
    back = "given back" if lease.get("released") else "not given back (see “Needs a human”)"
    return f"ticket {lease.get('ticket') or '—'}{renewed}, {back}"


TABLE_LABELS = {  # summary.json ``table_reads`` keys
    "autoid": "AutoID read",
    "projects": "Projects read",
    "autoid_again": "AutoID read again under the lease",
    "projects_again": "Projects read again under the lease",
}


def _megabytes(count: int) -> str:
    return f"{count / 1e6:,.2f} MB" if count >= 10_000 else f"{count:,} bytes"


def command_time(command_started: str) -> str:
    """``4.2 s so far (Python and kernel start, the run); the HTML export follows``."""
    from datetime import UTC, datetime

    from autoid_lib.wall_clock import seconds_since

    seconds = seconds_since(command_started, datetime.now(UTC)) if command_started else None
    if seconds is None:
        return ""
    return (
        f"{seconds:.1f} s up to this table (starting Python and the notebook kernel, the REDCap "
        "work); the HTML export follows — summary.json and the index have the final time"
    )


def verification_text(result: RunResult) -> str:
    """What the re-read after writing found, in words."""
    if result.mode == "dry":
        return "not done (dry run: nothing written)"
    verified = result.verified()
    if verified is None:
        nothing = result.error is None or result.error.yields  # a yield writes nothing
        return "not done (nothing written)" if nothing else "not reached"
    if not verified["matched"]:
        return f"{len(result.problems)} difference(s); see above"
    return f"{verified_counts(verified)} match"


def _studies_in_window(result: RunResult) -> str:
    if result.plan is None:
        return "unknown"
    return f"{result.plan.studies_in_window:,} (all AE titles)"


# -- charts ------------------------------------------------------------------------------------


@_shown_by_the_run_cell
def incoming_chart(result: RunResult) -> Image | HTML | None:
    """Studies addressed to each auto-ID project, per study date."""
    if result.plan is None:  # stopped before planning: error_box says so, once
        return None
    per_day = result.incoming_per_day()
    if per_day.empty:
        return _note("No study to chart.")
    per_day.index = pd.to_datetime(per_day.index, errors="coerce")
    per_day = per_day[per_day.index.notna()].sort_index()
    if per_day.empty:
        return _note("No study with a readable study date to chart.")

    def draw(ax: Axes) -> None:
        if len(per_day) <= _MAX_BAR_DATES:
            bottom = None
            for column in per_day.columns:
                ax.bar(per_day.index, per_day[column], bottom=bottom, width=0.8, label=column)
                bottom = per_day[column] if bottom is None else bottom + per_day[column]
        else:
            for column in per_day.columns:
                ax.plot(per_day.index, per_day[column], marker=".", linewidth=1, label=column)
        ax.set_ylabel("studies")
        ax.set_xlabel("study date")
        ax.figure.legend(loc="outside right upper", fontsize=8, frameon=False)
        ax.figure.autofmt_xdate()

    return _figure(draw, height=2.6, alt="Incoming studies per study date and project")


@_shown_by_the_run_cell
def capacity_chart(result: RunResult) -> Image | HTML | None:
    """How much of each project's ID space is used, after this run."""
    if result.plan is None:  # stopped before planning: error_box says so, once
        return None
    frame = result.capacity()
    if frame.empty:
        return _note("No project to chart.")
    frame = frame.iloc[::-1]

    def draw(ax: Axes) -> None:
        fractions = [0.0 if pd.isna(f) else float(f) for f in frame["fraction"]]
        colours = [
            _level_colour(level, f) for level, f in zip(frame["level"], fractions, strict=True)
        ]
        ax.barh(frame["project"], fractions, color=colours, height=0.6)
        for y, (f, used, size) in enumerate(
            zip(fractions, frame["used"], frame["size"], strict=True)
        ):
            text = "invalid pattern" if pd.isna(size) else f"{int(used):,} of {int(size):,}"
            text += _forecast_mark(result.forecasts.get(frame["project"].iloc[y]))
            ax.text(min(f, 1.0) + 0.01, y, text, va="center", fontsize=8)
        ax.set_xlim(0, 1.25)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "25%", "50%", "75%", "100%"])
        ax.axvline(1.0, color="#888", linewidth=0.8)
        ax.set_xlabel("share of the naming pattern's IDs in use")

    alt = "Share of each project's naming pattern in use"
    return _figure(draw, height=0.8 + 0.32 * len(frame), alt=alt)


def _forecast_mark(forecast: Forecast | None) -> str:
    """The forecast date beside a capacity bar: ``· full ≈ 2028-04-20``."""
    if forecast is None or forecast.full_on is None or forecast.beyond_horizon:
        return ""
    return f" · full ≈ {forecast.full_on:%Y-%m-%d}"


@_shown_by_the_run_cell
def forecast_notes(result: RunResult) -> HTML | None:
    """Each project's exhaustion forecast in words, with the rate and where it comes from."""
    if not result.forecasts:
        return None
    rows = [[name, f.describe()] for name, f in sorted(result.forecasts.items())]
    return HTML(
        html_table(["project", "when the ID space runs out"], rows)
        + _p(
            "The range is the exact 90 % Poisson interval of the rate. 'Transfer requests' "
            "counts the names first requested in the look-back window, an upper bound (a "
            "returning patient's older ID counts as new); 'recorded runs' compares the IDs "
            "used now with an earlier run's report. See docs/report.md."
        )
    )


def _level_colour(level: str, fraction: float) -> str:
    if level == "ok":
        return _BAR_COLOURS["ok"]
    if level == "invalid pattern":
        return _BAR_COLOURS["none"]
    return _BAR_COLOURS["bad"] if fraction >= 1.0 else _BAR_COLOURS["warn"]


def _figure(draw: Callable[[Axes], None], height: float, alt: str) -> Image:
    """Draw on a fresh figure (no pyplot state) and return it as a small inline PNG."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, min(max(height, 1.6), 6.0)), dpi=96, layout="constrained")
    ax = figure.add_subplot()
    ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=8)
    draw(ax)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return Image(data=buffer.getvalue(), format="png", alt=alt)


# -- small HTML builders -----------------------------------------------------------------------


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,}"
    return _e(value)


def html_table(
    header: Sequence[str],
    rows: Iterable[Sequence[Any]],
    numeric: AbstractSet[int] = frozenset(),
    mono: AbstractSet[int] = frozenset(),
    nowrap: AbstractSet[int] = frozenset(),
) -> str:
    def cls(i: int) -> str:
        names = [n for n, s in (("num", numeric), ("mono", mono), ("nowrap", nowrap)) if i in s]
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{' class=num' if i in numeric else ''}>{_e(h)}</th>" for i, h in
                   enumerate(header))  # fmt: skip
    body = "\n".join(
        "<tr>" + "".join(f"<td{cls(i)}>{_cell(v)}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return (
        f'<div class="table-wrap"><table class="autoid"><thead><tr>{head}</tr></thead>'
        f"<tbody>\n{body}\n</tbody></table></div>"
    )


def _facts(pairs: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<li><b>{_e(k)}:</b> {_e(v)}</li>" for k, v in pairs)
    return f'<ul class="facts-list">{items}</ul>'


def _list(items: Iterable[str]) -> str:
    return '<ul class="facts-list">' + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>"


def _p(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _note(text: str) -> HTML:
    return HTML(_p(text))


def _capacity_text(row: Mapping[Hashable, Any]) -> str:
    """A ``result.projects()`` record's capacity cell (pandas keys records by Hashable)."""
    size, used, level = row["capacity_size"], row["capacity_used"], row["capacity_level"]
    if size is None or pd.isna(size):
        return str(level)
    share = (used / size) if size else 1.0
    text = f"{int(used):,} of {int(size):,} ({share:.1%})"
    return text if level == "ok" else f"{text} — {level}"


def _skipped_by_project(result: RunResult) -> dict[str, str]:
    """``"3: 2 empty patient ID, 1 AutoID conflict"`` per project, for the projects table.

    A study on an AE title several projects share counts once, under the shared row.
    """
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    for study in result.plan.studies if result.plan else ():
        if study.action == SKIPPED:
            reasons[study.project_name][study.reason] += 1
    texts: dict[str, str] = {}
    for project, counts in reasons.items():
        detail = ", ".join(f"{n} {reason}" for reason, n in counts.most_common())
        texts[project] = detail if len(counts) == 1 else f"{counts.total()}: {detail}"
    return texts
