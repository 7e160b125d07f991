"""When each auto-ID project's ID space runs out, at the rate it has been used lately.

Pure: how many IDs a project gained over a span of days goes in, a rate with an exact Poisson
interval and the date the free IDs are gone (with its range) come out. No clock (``today`` is an
argument), no I/O, no patient data: the inputs are counts, dates and project names.

Where the count comes from (docs/run.md, "Forecast"), best first, neither costs a REDCap request:

- ``recorded runs``: the project's ``capacity_used`` in the oldest earlier live run's
  summary.json within the forecast window, against the count now. Exact, and it counts IDs
  made by anyone (by hand, by another tool); it reaches back only as far as the reports kept.
- ``transfer requests``: the transfer requests the run read anyway (its look-back window) plus
  the ones it plans: the distinct names whose earliest *arrival* falls in the last
  ``lookback_days``. An upper bound: a returning patient's older ID counts as new, so the date
  errs early.

A catch-up is not a rate (issue 24, item 9). After an outage one run serves many days of
studies at once; counted at the moment the kit made them, N days of IDs fell into one look-back
window, the date jumped and a warning repeated until they aged out. So an ID counts at the time
the study that needed it arrived (``arrival``: its study date, which the run reads anyway), and
the span is the run's ``lookback_days``, not its catch-up window: serving the same arrivals
daily or in one catch-up gives the same count, and ``autoid check`` (which plans the waiting
studies as the run would) gives the run's date. For recorded runs, a catch-up that reached back
before the oldest recorded run spreads its IDs over the days it covered (``since``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoid_lib.plan import Anomaly, ProjectState

RECORDED_RUNS = "recorded runs"
TRANSFER_REQUESTS = "transfer requests"

# The forecast's states: a date, or why there is none.
FORECAST = "forecast"
FULL = "full"
NO_NEW_IDS = "no new IDs"
NO_HISTORY = "no history"

REACH_DAYS = 60  # [run] max_catchup_days' default: how far back a catch-up serves studies
CONFIDENCE = 0.9  # the rate's interval: 5 % chance each side that the true rate is outside
HORIZON_DAYS = 100 * 366  # dates further out are shown as "beyond" this
WARNING = "forecast_warning"  # the anomaly kind when the date falls within the warning window


@dataclass(frozen=True)
class Usage:
    """How many IDs a project gained over ``days`` days, and where that count comes from."""

    new_ids: int
    days: float
    basis: str

    @property
    def weeks(self) -> float:
        return self.days / 7


@dataclass(frozen=True)
class Forecast:
    """A project's exhaustion date at its recent rate, with the range the rate's interval gives.

    ``full_on`` lies in ``[earliest, latest]``; all three are ``None`` unless ``state`` is
    ``FORECAST``. ``beyond_horizon`` says the point date was clipped to 100 years from now.
    """

    state: str
    free: int
    usage: Usage | None = None
    rate_per_week: float | None = None
    rate_low: float | None = None  # per week, the interval's ends
    rate_high: float | None = None
    full_on: date | None = None
    earliest: date | None = None
    latest: date | None = None
    beyond_horizon: bool = False

    def within(self, today: date, days: int) -> bool:
        """The point date falls within ``days`` days of ``today`` (the warning window)."""
        if self.full_on is None or self.beyond_horizon:
            return False
        return (self.full_on - today).days <= days

    @property
    def basis(self) -> str:
        """``at 4.1 new IDs/week over the last 8 weeks, from transfer requests``."""
        u = self.usage
        if u is None:
            return "no recorded runs and no transfer request in the window"
        span = f"{_number(u.weeks)} weeks" if u.days >= 14 else f"{_number(u.days)} days"
        if self.rate_per_week is None:
            return f"{u.new_ids:,} new IDs over the last {span}, from {u.basis}"
        return f"at {_number(self.rate_per_week)} new IDs/week over the last {span}, from {u.basis}"

    def describe(self) -> str:
        """One sentence for the report, the mail and ``autoid check``."""
        if self.state == FULL:
            return "full: no free ID left in the pattern"
        if self.state == NO_HISTORY:
            return "no forecast: no history yet"
        if self.state == NO_NEW_IDS:
            return f"no forecast: {self.basis}"
        if self.beyond_horizon:
            return f"not within 100 years, {self.basis}"
        return (
            f"runs out around {self.full_on:%Y-%m-%d} "
            f"({self.earliest:%Y-%m-%d} – {self.latest:%Y-%m-%d}), {self.basis}"
        )

    def as_summary(self) -> dict:
        """``projects[].forecast`` in summary.json (docs/summary.md)."""
        u = self.usage
        return {
            "state": self.state,
            "free": self.free,
            "rate_per_week": _rounded(self.rate_per_week),
            "rate_range": (
                [_rounded(self.rate_low), _rounded(self.rate_high)]
                if self.rate_low is not None
                else None
            ),
            "window_days": round(u.days, 2) if u else None,
            "new_ids": u.new_ids if u else None,
            "basis": u.basis if u else None,
            "full_on": _iso(self.full_on),
            "range": [_iso(self.earliest), _iso(self.latest)] if self.earliest else None,
            "text": self.describe(),
        }


def forecast(free: int, usage: Usage | None, today: date, confidence: float = CONFIDENCE):
    """The date ``free`` IDs are used up at the rate ``usage`` shows, from ``today``.

    The count of new IDs over the window is taken as Poisson; the rate's interval is the exact
    (Garwood) one at ``confidence``, and the date range is ``free`` over its ends.
    """
    if free <= 0:
        return Forecast(FULL, 0, usage)
    if usage is None or usage.days <= 0:
        return Forecast(NO_HISTORY, free, usage)
    if usage.new_ids <= 0:
        return Forecast(NO_NEW_IDS, free, usage)
    low, high = poisson_interval(usage.new_ids, confidence)
    per_day = usage.new_ids / usage.days
    point, beyond = _date_after(today, free, per_day)
    return Forecast(
        FORECAST,
        free,
        usage,
        rate_per_week=per_day * 7,
        rate_low=low / usage.days * 7,
        rate_high=high / usage.days * 7,
        full_on=point,
        earliest=_date_after(today, free, high / usage.days)[0],
        latest=_date_after(today, free, low / usage.days)[0],
        beyond_horizon=beyond,
    )


def _date_after(today: date, free: int, per_day: float) -> tuple[date, bool]:
    """The day ``free`` IDs are gone at ``per_day``; clipped to the horizon (huge spaces)."""
    if free > HORIZON_DAYS * per_day:  # also keeps 10**400 free IDs out of float division
        return today + timedelta(days=HORIZON_DAYS), True
    return today + timedelta(days=math.floor(free / per_day)), False


# -- where the count comes from ----------------------------------------------------------------


@dataclass(frozen=True)
class RecordedCapacity:
    """One earlier live run's view of a project: when, under which pattern, how many IDs used."""

    started: datetime
    project: str
    pattern: str
    used: int


def usage_from_runs(
    recorded: Iterable[RecordedCapacity],
    project: str,
    pattern: str,
    used_now: int,
    now: datetime,
    window_days: float,
    since: datetime | None = None,
) -> Usage | None:
    """IDs gained since the oldest recorded run within the window (same project and pattern).

    ``since`` is where this run's window began when it reached back over an outage (UTC): IDs
    it made then were needed by studies that arrived from there on, so when that is before the
    oldest recorded run the count is spread over the longer span, not over the days since.
    """
    begin = now - timedelta(days=window_days)
    points = [
        r
        for r in recorded
        if r.project == project and r.pattern == pattern and begin <= r.started < now
    ]
    if not points:
        return None
    oldest = min(points, key=lambda r: r.started)
    start = oldest.started if since is None else min(oldest.started, since)
    days = (now - start).total_seconds() / 86400
    return Usage(max(0, used_now - oldest.used), days, RECORDED_RUNS)


def usage_from_requests(
    first_arrivals: Iterable[datetime], window_begin: datetime, window_end: datetime
) -> Usage:
    """Names whose earliest arrival the run saw falls in the window, over the window's length."""
    new = sum(1 for moment in first_arrivals if window_begin <= moment <= window_end)
    days = (window_end - window_begin).total_seconds() / 86400
    return Usage(new, days, TRANSFER_REQUESTS)


def best_usage(*candidates: Usage | None) -> Usage | None:
    """The candidate over the longest span; recorded runs first on a tie (they are exact)."""
    found = [u for u in candidates if u is not None and u.days > 0]
    if not found:
        return None
    return max(found, key=lambda u: (u.days, u.basis == RECORDED_RUNS))


def first_arrivals(
    requests: Iterable[tuple[str, ...]], reach_days: float = REACH_DAYS
) -> dict[str, list[datetime]]:
    """Per project, the earliest arrival of each name, from (project, name, requested date,
    study date) tuples (``seen_requests``; without the study date, the request's time).

    Dates REDCap holds as ``YYYY-MM-DD[ HH:MM[:SS]]``; a request date that does not parse is
    left out. The names are used only to group and are not returned.
    """
    earliest: dict[tuple[str, str], datetime] = {}
    parsed: dict[str, datetime | None] = {}  # a run's requests share few distinct times
    for project, name, text, *rest in requests:
        if text not in parsed:
            parsed[text] = parse_request_date(text)
        requested = parsed[text]
        if not project or not name or requested is None:
            continue
        moment = arrival(requested, rest[0] if rest else "", reach_days)
        key = (project, name)
        if key not in earliest or moment < earliest[key]:
            earliest[key] = moment
    by_project: dict[str, list[datetime]] = {}
    for (project, _), moment in earliest.items():
        by_project.setdefault(project, []).append(moment)
    return by_project


def arrival(requested: datetime, study_date: str, reach_days: float = REACH_DAYS) -> datetime:
    """When the study that needed an ID arrived, as far as the data the run reads can tell.

    Its study date (at noon: a DICOM date has no time, and noon is the day's middle), because a
    catch-up requests many days' studies at one moment. The request's time instead when the
    study date is missing or later than the request (a wrong date), or more than
    ``reach_days`` before it: no catch-up reaches that far, so it is a prior sent long after it
    was taken, and its ID was needed when it was requested.
    """
    day = parse_study_date(study_date)
    if day is None:
        return requested
    noon = day + timedelta(hours=12)
    if noon > requested or noon < requested - timedelta(days=reach_days):
        return requested
    return noon


def parse_study_date(text: str) -> datetime | None:
    """A DICOM study date (``YYYYMMDD``, or ``YYYY-MM-DD`` as some imports write it)."""
    text = (text or "").strip()
    for shape in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, shape)
        except ValueError:
            continue
    return None


def parse_request_date(text: str) -> datetime | None:
    text = (text or "").strip()
    for shape in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, shape)
        except ValueError:
            continue
    return None


def summary_capacity(summary: Mapping, started: datetime) -> list[RecordedCapacity]:
    """The per-project capacity points of one recorded run's summary.json (live, not failed)."""
    if summary.get("mode") != "live" or summary.get("status") == "failed":
        return []
    points = []
    for project in summary.get("projects") or ():
        used = project.get("capacity_used") if isinstance(project, Mapping) else None
        if isinstance(used, int) and not isinstance(used, bool):
            points.append(
                RecordedCapacity(
                    started, str(project.get("project")), str(project.get("pattern")), used
                )
            )
    return points


# -- the exact Poisson interval ----------------------------------------------------------------


def poisson_interval(count: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Garwood) interval for a Poisson mean, having seen ``count`` events.

    The lower end is the mean under which ``count`` or more events have probability
    ``(1 - confidence) / 2``; the upper end, the mean under which ``count`` or fewer do.
    """
    if count < 0:
        raise ValueError("a count is 0 or more")
    tail = (1 - confidence) / 2
    low = 0.0 if count == 0 else _solve(lambda mu: 1 - poisson_cdf(count - 1, mu), tail, count)
    high = _solve(lambda mu: 1 - poisson_cdf(count, mu), 1 - tail, count)
    return low, high


def _solve(increasing, target: float, count: int) -> float:
    """The mean where ``increasing(mean)`` reaches ``target``, by bisection."""
    lo, hi = 0.0, count + 20 * math.sqrt(count + 1) + 20
    for _ in range(200):
        mid = (lo + hi) / 2
        if increasing(mid) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * max(1.0, hi):
            break
    return (lo + hi) / 2


def poisson_cdf(k: int, mu: float) -> float:
    """P(X <= k) for X ~ Poisson(mu): the regularised upper incomplete gamma Q(k + 1, mu)."""
    if k < 0:
        return 0.0
    if mu <= 0:
        return 1.0
    return 1.0 - _lower_gamma(k + 1, mu)


def _lower_gamma(a: float, x: float) -> float:
    """The regularised lower incomplete gamma P(a, x) (series, or continued fraction)."""
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(100_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return min(1.0, total * math.exp(log_front))
    # Lentz's continued fraction for Q(a, x)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


# -- small helpers -----------------------------------------------------------------------------


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}".removesuffix(".0")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _iso(value: date | None) -> str | None:
    return None if value is None else value.isoformat()


# -- one run's forecasts -----------------------------------------------------------------------


def seen_requests(studies: Iterable, planned: Iterable = ()) -> list[tuple[str, str, str, str]]:
    """(project, name, requested date, study date) of the transfer requests read with
    ``studies`` (their ``transfer_requests``) and of the ``planned`` transfers (their study's
    date when the study is among ``studies``): ``project_forecasts``' input."""
    studies = list(studies)
    seen = [
        (t.project_name, t.name, t.requested_date, study.study_date)
        for study in studies
        for t in study.transfer_requests
    ]
    dated = {study.uid: study.study_date for study in studies}
    seen += [
        (t.project_name, t.pseudonym, t.requested_date, dated.get(t.study_uid, "")) for t in planned
    ]
    return seen


def project_forecasts(
    projects: Iterable[ProjectState],
    requests: Iterable[tuple[str, ...]],
    recorded: Iterable[RecordedCapacity],
    *,
    now: datetime,
    window_begin: datetime,
    window_end: datetime,
    window_days: float,
    reach_days: float = REACH_DAYS,
    since: datetime | None = None,
) -> dict[str, Forecast]:
    """Each project's forecast from the best usage available (module docstring).

    ``window_days`` is how far back recorded runs count (``[run] forecast_weeks``); ``now`` is
    the run's UTC clock (recorded runs' times are UTC); ``window_*`` and the request
    dates are REDCap server time, and the dates forecast count from ``window_end``'s day.
    ``window_begin`` is ``lookback_days`` before ``window_end``, never a catch-up's begin: a
    run and ``autoid check`` over the same data count over the same span. ``reach_days`` is
    ``[run] max_catchup_days`` (``arrival``); ``since`` the catch-up's begin in UTC, or
    ``None`` for an ordinary window (``usage_from_runs``).
    """
    recorded = list(recorded)
    first = first_arrivals(requests, reach_days)
    today = window_end.date()
    found = {}
    for project in projects:
        c = project.capacity
        if c is None:
            continue
        usage = best_usage(
            usage_from_runs(
                recorded, project.name, project.pattern, c.used, now, window_days, since
            ),
            usage_from_requests(first.get(project.name, ()), window_begin, window_end),
        )  # fmt: skip
        found[project.name] = forecast(c.free, usage, today)
    return found


def forecast_anomalies(
    forecasts: Mapping[str, Forecast],
    existing: Iterable[Anomaly],
    today: date,
    warn_days: int,
) -> list[Anomaly]:
    """A ``forecast_warning`` for each project whose date falls within ``warn_days``, unless
    the capacity check already flags the project (warning or exhausted): one row per cause."""
    from autoid_lib.plan import Anomaly

    flagged = {a.project for a in existing if a.kind in ("capacity_warning", "id_space_exhausted")}
    return [
        Anomaly(
            WARNING,
            name,
            f"The ID space {f.describe()}.",
            f"Plan a wider project_patient_naming before {f.full_on:%Y-%m-%d}.",
        )
        for name, f in sorted(forecasts.items())
        if f.within(today, warn_days) and name not in flagged
    ]
