"""The charts at the top of index.html (issue 11's leftover): recent live runs at a glance.

``records.charts`` is pure, so most tests feed it summaries and read the SVG back as XML; one
builds an index from real run folders on disk."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from autoid_lib.records.charts import RECENT_RUNS, ChartRun, chart_runs, history_charts
from autoid_lib.records.folders import SUMMARY_FILE, new_run_folder, write_json
from autoid_lib.records.index import rebuild_index

T0 = datetime(2026, 12, 1, 6, 30, tzinfo=UTC)


def summary(status="ok", transfers=0, ids=0, duration=1.5, **extra) -> dict:
    return {
        "status": status,
        "transfers_created": transfers,
        "ids_created": ids,
        "duration_s": duration,
        "studies_in_window": 5,
        "api_requests": 12,
        "timings_s": {"command": duration + 3},
        **extra,
    }


def render(*summaries: dict) -> str:
    entries = [(T0 + timedelta(hours=i), f"run{i}", s) for i, s in enumerate(summaries)]
    return history_charts(chart_runs(entries))


def charts(block: str) -> list[ET.Element]:
    """The block's two SVGs, parsed (the block is well-formed XML or this raises)."""
    svgs = ET.fromstring(block).findall(".//svg")
    assert len(svgs) == 2
    return svgs


def bars(svg: ET.Element, colour: str | None = None) -> list[ET.Element]:
    found = [r for r in svg.iter("rect") if r.get("class") == "bar"]
    return [r for r in found if colour is None or r.get("fill") == colour]


FAILED_RED, OK_GREEN, ATTENTION_AMBER = "#b3261e", "#1e7b34", "#9a5b00"


def test_one_bar_per_count_heights_in_proportion_and_the_max_on_the_axis():
    block = render(
        summary("ok", transfers=10, ids=4, duration=2.0),
        summary("attention", transfers=5, ids=0, duration=8.0),
        summary("ok", transfers=0, ids=0, duration=1.0),  # nothing to do: no count bars
    )
    counts, durations = charts(block)
    heights = {r.find("title").text: float(r.get("height")) for r in bars(counts)}
    assert len(heights) == 3  # 10 transfers, 4 IDs, 5 transfers; zeros draw nothing
    ten, four, five = (
        heights[f"2026-12-01 0{h}:30 UTC · {s} · {n}"]
        for h, s, n in (
            (6, "OK", "10 transfer requests"),
            (6, "OK", "4 new IDs"),
            (7, "Needs attention", "5 transfer requests"),
        )
    )
    assert ten > 0 and abs(four / ten - 0.4) < 1e-3 and abs(five / ten - 0.5) < 1e-3
    assert [r.get("fill") for r in bars(counts)] == [OK_GREEN, OK_GREEN, ATTENTION_AMBER]
    assert counts.find(".//text[@class='max']").text == "10"
    assert durations.find(".//text[@class='max']").text == "8.0 s"
    seconds = [float(r.get("height")) for r in bars(durations)]
    assert (
        abs(seconds[0] / seconds[1] - 0.25) < 1e-3 and abs(seconds[2] / seconds[1] - 0.125) < 1e-3
    )
    for svg in (counts, durations):
        assert svg.get("role") == "img" and "2026-12-01" in svg.get("aria-label")
    assert "15 transfers and 4 new IDs in total" in counts.get("aria-label")
    assert "0 failed, 1 needed attention" in counts.get("aria-label")


def test_a_failed_run_shows_even_with_nothing_counted():
    failed = {"status": "failed", "duration_s": 0.4, "studies_in_window": None, "error": {}}
    counts, durations = charts(render(summary("ok", transfers=2, ids=2), failed))
    assert bars(counts, FAILED_RED) == []  # it created nothing
    columns = [r for r in counts.iter("rect") if r.get("class") == "run"]
    assert len(columns) == 2
    title = columns[1].find("title").text
    assert "FAILED" in title and "transfers —, new IDs —" in title  # not 0: it never planned
    assert columns[1].get("fill") != "transparent"  # the pale red column
    marks = [r for r in counts.iter("rect") if r.get("class") == "status-mark"]
    assert [m.get("fill") for m in marks] == [OK_GREEN, FAILED_RED]  # every run has its mark
    assert len(bars(durations, FAILED_RED)) == 1  # its 0.4 s
    assert "1 failed" in counts.get("aria-label")


def test_text_is_escaped_and_damaged_counts_are_not_drawn():
    odd = ChartRun(T0, 'x"><script>&', "<b>weird</b>", 3, None, None, None, None)
    damaged = chart_runs([(T0, "d", {"status": "ok", "transfers_created": -4, "ids_created": True,
                                     "duration_s": "slow", "api_requests": 2.0})])  # fmt: skip
    block = history_charts([odd, *damaged])
    counts, _ = charts(block)  # well-formed: it parses
    assert "<script" not in block and 'x"><script>&/report.html' in [
        a.get("href") for a in counts.iter("a")
    ]
    assert "&lt;b&gt;weird" not in block  # an unknown status is not repeated, only named
    assert "unknown status" in block
    assert damaged[0][3:] == (None, None, None, None, 2)
    assert len(bars(counts)) == 1  # only the odd run's 3 transfers


def test_no_patient_study_or_pseudonym_reaches_the_charts():
    secrets = ["Doe^Jane", "PSEUDO-7781", "1.2.840.99.1", "MRN 0042"]
    leaky = summary(
        "attention",
        transfers=1,
        ids=1,
        headline=f"1 transfer for {secrets[0]}",
        anomalies=[{"message": f"study {secrets[2]} of {secrets[3]}", "key": secrets[1]}],
        projects=[{"name": secrets[1], "transfers_created": 1}],
    )
    block = render(leaky, summary())
    assert [s for s in secrets if s in block] == []


def test_an_empty_history_says_so_in_a_sentence():
    block = history_charts([])
    assert "<svg" not in block and "No live run recorded yet" in block


def test_only_the_newest_runs_are_charted():
    block = render(*(summary(transfers=i) for i in range(RECENT_RUNS + 10)))
    counts, _ = charts(block)
    assert len([r for r in counts.iter("rect") if r.get("class") == "run"]) == RECENT_RUNS
    assert counts.find(".//text[@class='max']").text == str(RECENT_RUNS + 9)
    assert f"Last {RECENT_RUNS} live runs" in block


COUNT = st.one_of(st.none(), st.integers(0, 10**6))
RUNS = st.lists(
    st.builds(
        ChartRun,
        started=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
        folder=st.text(max_size=12),
        status=st.sampled_from(["ok", "attention", "failed", "unknown", "?"]),
        transfers=COUNT,
        ids=COUNT,
        duration_s=st.one_of(st.none(), st.floats(0, 1e5)),
        command_s=st.one_of(st.none(), st.floats(0, 1e5)),
        api_requests=COUNT,
    ),
    max_size=70,
)


@given(RUNS)
def test_any_history_draws_well_formed_bars_inside_the_frame(runs):
    block = history_charts(runs)
    if not runs:
        assert "<svg" not in block
        return
    runs = runs[-RECENT_RUNS:]
    for svg in charts(block):
        columns = [r for r in svg.iter("rect") if r.get("class") == "run"]
        assert len(columns) == len(runs)
        frame = float(columns[0].get("height"))
        for bar in bars(svg):
            assert 0 < float(bar.get("height")) <= frame + 1e-6
            assert float(bar.get("x")) + float(bar.get("width")) <= 1000
        failed = [c for c in columns if "FAILED" in c.find("title").text]
        assert len(failed) == sum(r.status == "failed" for r in runs)


def test_the_index_charts_live_runs_only_and_stays_self_contained(tmp_path):
    reports = tmp_path / "reports"
    plan = [("live", summary(transfers=3, ids=1)), ("dry", summary("attention", transfers=99)),
            ("live", {"status": "failed", "duration_s": 0.2}), ("audit", {"status": "ok"}),
            ("live", summary("attention", transfers=1, ids=2, duration=4.0))]  # fmt: skip
    for i, (mode, data) in enumerate(plan):
        folder = new_run_folder(reports, mode, T0 + timedelta(hours=i))
        write_json(folder / SUMMARY_FILE, {"mode": mode, **data})
    page = rebuild_index(reports).read_text()
    start, end = page.index('<div class="charts">'), page.index("<table")
    assert page.index('<div class="state') < start  # the state box first, then the charts
    counts, _ = charts(page[start : page.index("</div>", page.rindex("</svg>", 0, end)) + 6])
    assert len([r for r in counts.iter("rect") if r.get("class") == "run"]) == 3
    assert counts.find(".//text[@class='max']").text == "3"  # the dry run's 99 is not charted
    assert "Last 3 live runs" in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href|xmlns)\s*=\s*["']?(https?:)?//""", page, re.IGNORECASE)
    assert "http" not in page


def test_an_index_without_live_runs_says_so(tmp_path):
    folder = new_run_folder(tmp_path, "dry", T0)
    write_json(folder / SUMMARY_FILE, summary())
    page = rebuild_index(tmp_path).read_text()
    assert "No live run recorded yet: nothing to chart." in page and "<svg" not in page
