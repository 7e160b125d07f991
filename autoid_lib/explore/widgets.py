"""The explore notebook's widgets: a thin ipywidgets layer over ``autoid_lib.explore.answers``.

``explore_app(config_path)`` builds five panels in tabs; each has its inputs, one button and an
``ipywidgets.Output`` whose ``outputs`` are set directly (so what a panel shows is plain data a
test can read). ``ExploreSession`` does the REDCap reads (through ``RedcapGateway``) and caches
them; everything shown is computed by ``explore``.

Privacy: the patient lookup's input is a ``Password`` field that the kernel never echoes back
(ipywidgets otherwise re-broadcasts every keystroke on the kernel's output channel) and that
sends its value only on Enter or when focus leaves; the value is taken, cleared at once and
never shown, logged or kept. The study lookup's field (which may hold an accession number)
is cleared the same way. Outputs carry project, study date, a short study reference, pseudonym
and state; never a patient ID, a patient name, an accession number or a token. Unexpected errors
are shown by type only (their text may quote data).
"""

from __future__ import annotations

import html
import logging
import random
import traceback
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import ipywidgets as widgets
import pandas as pd
from traitlets import Unicode

from autoid_lib.config import Settings, load_settings
from autoid_lib.errors import AutoIdError, ConfigError
from autoid_lib.explore import answers as explore
from autoid_lib.forecast import Forecast
from autoid_lib.plan import PlanSettings
from autoid_lib.records.history import recorded_capacity
from autoid_lib.records.index import recent_summaries
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.run import server_time
from autoid_lib.snapshot import AutoIdRow, IncomingStudy, ProjectRecord, Snapshot
from autoid_lib.vocab import plural

NO_PROJECT = "(none)"

log = logging.getLogger("autoid.explore")


class ExploreSession:
    """REDCap reads for the widgets, cached until ``refresh()``; times are REDCap server time."""

    def __init__(
        self,
        settings: Settings,
        *,
        gateway: RedcapGateway | None = None,
        now: datetime | None = None,
        rng: random.Random | None = None,
    ):
        self.settings = settings
        self.gateway = gateway or RedcapGateway(settings.redcap)
        self._now = now
        self.rng = rng
        self.hasher = settings.run.hasher()
        self.refresh()

    def refresh(self) -> None:
        self._projects: tuple[ProjectRecord, ...] | None = None
        self._autoid: tuple[AutoIdRow, ...] | None = None
        self._history: tuple[IncomingStudy, ...] | None = None
        self._in_window: frozenset[str] | None = None

    def recent_runs(self, limit: int = 10) -> list[dict[str, Any]]:
        """The newest recorded runs' summaries (reports_dir of the config)."""
        return recent_summaries(self.settings.run.reports_dir, limit)

    def now(self) -> datetime:
        return server_time(self._now or datetime.now(UTC), self.settings.run.server_timezone)

    def plan_settings(self) -> PlanSettings:
        return PlanSettings(
            hasher=self.hasher,
            requested_at=f"{self.now():%Y-%m-%d %H:%M}",
            capacity_warn_at=self.settings.run.capacity_warn_at,
            rng=self.rng,
        )

    def projects(self) -> tuple[ProjectRecord, ...]:
        if self._projects is None:
            self._projects = tuple(self.gateway.project_records())
        return self._projects

    def autoid_rows(self) -> tuple[AutoIdRow, ...]:
        if self._autoid is None:
            self._autoid = tuple(self.gateway.autoid_rows())
        return self._autoid

    def project_names(self) -> list[str]:
        return explore.auto_id_projects(self._snapshot((), self.now(), self.now()))

    def window(self, begin: datetime, end: datetime) -> Snapshot:
        """Studies created or modified in [begin, end], read as the run reads them."""
        studies = self.gateway.incoming_studies(begin, end, history=True)
        return self._snapshot(studies, begin, end)

    def run_window(self, lookback_days: int | None = None) -> Snapshot:
        end = self.now()
        days = lookback_days or self.settings.run.lookback_days
        return self.window(end - timedelta(days=days), end)

    def history(self) -> Snapshot:
        """All of Incoming (with accession numbers and forwarder fields), read once."""
        if self._history is None:
            self._history = tuple(self.gateway.incoming_studies(None, None, history=True))
        end = self.now()
        return self._snapshot(self._history, end - timedelta(self.settings.run.lookback_days), end)

    def run_window_uids(self) -> frozenset[str]:
        """UIDs of the studies the run would read now (created or modified in its window)."""
        if self._in_window is None:
            end = self.now()
            begin = end - timedelta(days=self.settings.run.lookback_days)
            self._in_window = self.gateway.study_uids(begin, end)
        return self._in_window

    def forecast(self, project: str) -> Forecast | None:
        """When ``project``'s IDs run out, as a run now would forecast it (docs/run.md)."""
        run = self.settings.run
        utc_now = self._now or datetime.now(UTC)
        window_days = 7.0 * run.forecast_weeks
        return explore.project_forecast(
            self.run_window(),
            project,
            self.plan_settings(),
            recorded_capacity(run.reports_dir, utc_now, window_days),
            now=utc_now,
            window_days=window_days,
            reach_days=run.max_catchup_days,
        )

    def _snapshot(
        self, studies: Iterable[IncomingStudy], begin: datetime, end: datetime
    ) -> Snapshot:
        return Snapshot(tuple(self.projects()), tuple(studies), self.autoid_rows(), begin, end)


# -- output -------------------------------------------------------------------------------------


class Pre(str):
    """A part shown in a fixed-width font with its spaces kept (a caret under a position)."""


Part = str | pd.DataFrame  # a ``Pre`` is a str
"""What ``show`` takes: a line of text, a ``Pre`` block or a table."""


def show(output: widgets.Output, *parts: Part) -> None:
    """Replace what ``output`` shows by ``parts``: strings (one line each), ``Pre`` blocks and
    DataFrames."""
    items: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, pd.DataFrame):
            data = {
                "text/plain": part.to_string(index=False) if len(part) else "(no rows)",
                "text/html": table_html(part) if len(part) else "<p>(no rows)</p>",
            }
        elif isinstance(part, Pre):
            data = {"text/plain": str(part), "text/html": f"<pre>{html.escape(part)}</pre>"}
        else:
            data = {"text/plain": str(part), "text/html": f"<p>{_escape(str(part))}</p>"}
        items.append({"output_type": "display_data", "data": data, "metadata": {}})
    output.outputs = tuple(items)


def table_html(frame: pd.DataFrame) -> str:
    """``frame`` as an HTML table with text columns left-aligned and numbers right-aligned.

    Jupyter's stylesheet right-aligns every cell, which leaves text columns ragged on the left;
    the alignment goes inline because a front-end may strip ``<style>`` from outputs.
    """
    align = ["right" if pd.api.types.is_numeric_dtype(frame[c]) else "left" for c in frame.columns]
    head = "".join(
        f'<th style="text-align: {a}">{html.escape(heading(str(c)))}</th>'
        for c, a in zip(frame.columns, align, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td style="text-align: {a}">{html.escape(_cell(v))}</td>'
            for v, a in zip(row, align, strict=True)
        )
        + "</tr>"
        for row in frame.itertuples(index=False)
    )
    return f'<table class="dataframe"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_HEADINGS = {"study_ref": "study", "study_uid": "study UID", "autoid_records": "AutoID records"}


def heading(column: str) -> str:
    """A column's name as a person reads it (``study_date`` → "study date"), as the run
    report writes its headings."""
    return _HEADINGS.get(column, column.replace("_", " "))


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value)


def text_of(output: widgets.Output) -> str:
    """Everything an Output shows, as plain text (for tests and quick checks)."""
    return "\n".join(o.get("data", {}).get("text/plain", "") for o in output.outputs)


def _escape(text: str) -> str:
    return html.escape(text).replace("\n", "<br>")


def _guarded(output: widgets.Output, action: Callable[[], None]) -> None:
    try:
        action()
    except AutoIdError as error:  # the kit's messages never hold patient data or tokens
        show(output, f"Error: {error}")
    except Exception as error:  # text withheld: it may quote data
        frames = "".join(traceback.format_tb(error.__traceback__))  # code locations only
        log.error("explore failed with %s:\n%s", type(error).__name__, frames)
        show(output, f"Unexpected {type(error).__name__}; its code location is in the kernel log.")


def _button(label: str) -> widgets.Button:
    return widgets.Button(description=label, button_style="primary")


def _field_width(width: str) -> widgets.Layout:
    """A text field ``width`` wide on a desktop, never wider than its panel (a phone)."""
    return widgets.Layout(width=width, max_width="calc(100% - 4px)")  # its margins


def _inputs(*children: widgets.Widget) -> widgets.HBox:
    """A panel's inputs and its button in one row that wraps on a narrow screen (a phone at
    400 px): without it the row scrolls sideways and hides the button."""
    return widgets.HBox(list(children), layout=widgets.Layout(flex_flow="row wrap"))


# -- panels -------------------------------------------------------------------------------------


class OverviewPanel:
    """A project and a window → its studies with state, and its capacity."""

    def __init__(self, session: ExploreSession, projects: list[str]):
        self.session = session
        today = session.now().date()
        self.project = widgets.Dropdown(options=projects, description="Project")
        self.begin = widgets.DatePicker(
            value=today - timedelta(days=session.settings.run.lookback_days), description="From"
        )
        self.end = widgets.DatePicker(value=today, description="To")
        self._defaults = (self.begin.value, self.end.value)
        self.button = _button("Show studies")
        self.output = widgets.Output()
        self.button.on_click(lambda _: _guarded(self.output, self.run))
        self.widget = widgets.VBox(
            [_inputs(self.project, self.begin, self.end, self.button), self.output]
        )

    def run(self) -> None:
        if not self.project.value:
            show(self.output, "Pick a project.")
            return
        snapshot, window = self._window()
        result = explore.project_overview(
            snapshot, self.project.value, self.session.plan_settings(), window
        )
        forecast = self.session.forecast(self.project.value)
        runs = explore.project_runs(self.session.recent_runs(), self.project.value)
        parts: list[Part] = [result.sentence()]
        if forecast is not None:
            parts.append(f"Forecast: {forecast.describe()}.")
        recent: list[Part] = ["Recent runs:", runs] if len(runs) else [_NO_RUNS]
        show(self.output, *parts, result.table, *recent)

    def _window(self) -> tuple[Snapshot, str]:
        """The run's own window while the dates are the defaults (the counts then match the
        run report's), else the whole days picked; either way the sentence says which."""
        if (self.begin.value, self.end.value) == self._defaults:
            snapshot = self.session.run_window()
            return snapshot, (
                f"the run's window, {snapshot.window_begin:%Y-%m-%d %H:%M} → "
                f"{snapshot.window_end:%Y-%m-%d %H:%M}, REDCap's time"
            )
        begin = datetime.combine(self.begin.value or date.min, time.min)
        end = datetime.combine(self.end.value or self.session.now().date(), time.max)
        snapshot = self.session.window(begin, end.replace(microsecond=0))
        return snapshot, (
            f"created or modified {begin:%Y-%m-%d} → {end:%Y-%m-%d}, whole days; the run's "
            "own window is shown with the default dates"
        )


_NO_RUNS = "Recent runs: none recorded in the config's reports_dir yet."


class _QuietPassword(widgets.Password):
    """A password field whose typed value is never echoed back to the front-ends."""

    value = Unicode(help="String value").tag(sync=True, echo_update=False)


class _QuietText(widgets.Text):
    """A text field (it may hold an accession number) whose value is never echoed back."""

    value = Unicode(help="String value").tag(sync=True, echo_update=False)


class StudyPanel:
    """A study UID (or its ending) or accession number → transfers and what the run would do."""

    def __init__(self, session: ExploreSession):
        self.session = session
        self.query = _QuietText(
            description="Study",
            placeholder="study UID, its last 8+ characters, or accession no.",
            continuous_update=False,
            layout=_field_width("36em"),
        )
        self.button = _button("Look up study")
        self.output = widgets.Output()
        self.button.on_click(lambda _: self.lookup())
        self.widget = widgets.VBox([_inputs(self.query, self.button), self.output])

    def lookup(self) -> None:
        query, self.query.value = self.query.value, ""  # an accession number is not kept
        _guarded(self.output, lambda: self._answer(query))

    def _answer(self, query: str) -> None:
        answers = explore.lookup_study(
            self.session.history(),
            query,
            self.session.plan_settings(),
            self.session.run_window_uids(),
        )
        if not answers:
            show(self.output, "No study found.")
            return
        parts: list[Part] = [f"{plural(len(answers), 'study', 'studies')} found."]
        for answer in answers:
            about, requests, next_run = answer.lines()
            shown = [answer.transfers] if len(answer.transfers) else []  # no empty table
            parts += [about, requests, *shown, next_run]
        show(self.output, *parts)


class PatientPanel:
    """A patient ID, hashed here → "known in PROJECT as ID" or "unknown"; the ID is not kept."""

    def __init__(self, session: ExploreSession):
        self.session = session
        self.password = _QuietPassword(
            description="Patient ID", placeholder="not stored", continuous_update=False
        )
        self.button = _button("Look up patient")
        self.output = widgets.Output()
        self.button.on_click(lambda _: self.lookup())
        self.widget = widgets.VBox([_inputs(self.password, self.button), self.output])

    def lookup(self) -> None:
        raw, self.password.value = self.password.value, ""  # cleared before anything can fail
        _guarded(self.output, lambda: self._answer(raw))

    def _answer(self, raw: str) -> None:
        answer = explore.lookup_patient(raw, self.session.autoid_rows(), self.session.hasher)
        show(self.output, *answer.lines())


class PatternPanel:
    """A pattern (and optionally a project) → parse error, size, samples, capacity."""

    def __init__(self, session: ExploreSession, projects: list[str]):
        self.session = session
        self.pattern = widgets.Text(
            description="Pattern",
            placeholder=r"e.g. P_0\d{4}",
            layout=_field_width("24em"),
        )
        self.project = widgets.Dropdown(options=[NO_PROJECT, *projects], description="Apply to")
        self.button = _button("Analyse pattern")
        self.output = widgets.Output()
        self.project.observe(self._use_project_pattern, names="value")
        self.button.on_click(lambda _: _guarded(self.output, self.run))
        self.widget = widgets.VBox([_inputs(self.pattern, self.project, self.button), self.output])

    def _use_project_pattern(self, change: dict[str, Any]) -> None:
        if change["new"] != NO_PROJECT and not self.pattern.value:
            record = next((p for p in self.session.projects() if p.name == change["new"]), None)
            if record is not None:
                self.pattern.value = record.pattern

    def run(self) -> None:
        if not self.pattern.value.strip():
            show(self.output, "Type a pattern, or pick a project to start from its pattern.")
            return
        project = "" if self.project.value == NO_PROJECT else self.project.value
        in_use = explore.project_values(self.session.autoid_rows(), project) if project else ()
        answer = explore.pattern_workbench(
            self.pattern.value,
            in_use,
            project=project,
            rng=self.session.rng,
            warn_at=self.session.settings.run.capacity_warn_at,
        )
        lines = answer.lines()
        if answer.error and answer.position is not None:  # the caret must sit under its place
            show(self.output, lines[0], Pre("\n".join(line[2:] for line in lines[1:])))
        else:
            show(self.output, *lines)


class PreviewPanel:
    """One project's dry-run plan over the run's window (nothing is written)."""

    def __init__(self, session: ExploreSession, projects: list[str]):
        self.session = session
        self.project = widgets.Dropdown(options=projects, description="Project")
        self.days = widgets.BoundedIntText(
            value=session.settings.run.lookback_days, min=1, max=3650, description="Days back"
        )
        self.button = _button("Preview run")
        self.output = widgets.Output()
        self.button.on_click(lambda _: _guarded(self.output, self.run))
        self.widget = widgets.VBox([_inputs(self.project, self.days, self.button), self.output])

    def run(self) -> None:
        if not self.project.value:
            show(self.output, "Pick a project.")
            return
        snapshot = self.session.run_window(self.days.value)
        result = explore.preview_project(
            snapshot,
            self.project.value,
            self.session.plan_settings(),
            lookback_days=self.days.value,
        )
        anomalies = explore.preview_anomalies(result)
        show(
            self.output,
            explore.preview_sentence(result),
            explore.preview_studies(result),
            *(["Needs a human:", anomalies] if len(anomalies) else ["Nothing needs a human."]),
            *explore.preview_capacity(result),
        )


class ExploreApp:
    """The five panels in tabs; display it (it is the notebook's one output)."""

    TITLES = ("Project", "Study", "Patient", "Pattern", "Dry run")

    def __init__(self, session: ExploreSession):
        self.session = session
        projects = session.project_names()
        self.overview = OverviewPanel(session, projects)
        self.study = StudyPanel(session)
        self.patient = PatientPanel(session)
        self.pattern = PatternPanel(session, projects)
        self.preview = PreviewPanel(session, projects)
        panels = (self.overview, self.study, self.patient, self.pattern, self.preview)
        self.widget = widgets.Tab(children=[p.widget for p in panels], titles=self.TITLES)

    def outputs(self) -> list[widgets.Output]:
        return [self.overview.output, self.study.output, self.patient.output,
                self.pattern.output, self.preview.output]  # fmt: skip

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        return self.widget._repr_mimebundle_(**kwargs)


def explore_app(config_path: str, *, now: datetime | None = None) -> ExploreApp | widgets.HTML:
    """Load the config (tokens stay behind env:/file: references) and build the widgets.

    A config that cannot be loaded (none yet, a typo, a token variable not set in the kernel's
    environment) is explained in the notebook, not shown as a traceback.
    """
    try:
        settings = load_settings(config_path)
    except ConfigError as error:
        return widgets.HTML(
            "<div style='border-left: 4px solid #b45309; padding: 8px 12px;'>"
            "<b>Explore needs the kit's configuration.</b><br>"
            f"{html.escape(str(error))}<br>"
            "Set <code>config_path</code> in the first code cell to the file "
            "<code>autoid run --config</code> uses (tokens must be reachable from this "
            "notebook's environment), then run all cells again.</div>"
        )
    return ExploreApp(ExploreSession(settings, now=now))
