"""The demo seed, read back through PyCap: the legacy state and the hard cases are really there."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from datetime import datetime, timedelta

from redcap import Project

from autoid_lib.sandbox import Sandbox, build_demo, seed_patient_identifiers
from autoid_lib.sandbox.seed import DEMO_PROJECTS, HARD_CASES
from autoid_lib.sandbox.store import Store

NOW = datetime(2024, 6, 20, 9, 30, 0)


def sha512(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()


def export(sb, db, **options):
    return Project(sb.url, sb.tokens[db], timeout=10).export_records(**options)


def studies_and_transfers(sb):
    studies, transfers = {}, defaultdict(list)
    for row in export(sb, "incoming"):
        if row["redcap_repeat_instrument"] == "":
            studies[row["study_instance_uid"]] = row
        elif row["redcap_repeat_instrument"] == "transfers":
            transfers[row["study_instance_uid"]].append(row)
    return studies, transfers


def test_projects_cover_the_pattern_shapes_and_the_shared_ae_title(sandbox_factory):
    sb = sandbox_factory(seed="demo", now=NOW)
    rows = export(sb, "projects")
    assert len(rows) == len(DEMO_PROJECTS) == 8
    auto = [r for r in rows if r["project_use_autoid"] == "1" and r["project_autoid_aetitle"]]
    assert Counter(r["project_autoid_aetitle"] for r in auto)["CARDIO"] == 2
    assert {r["project_patient_naming"] for r in auto} >= {
        r"P_0\d{4}",
        r"ABC[0-9]{3}",
        r"(KNEE|HIP)_[A-Z]{2}\d",
        r"S[0-9]{2}",
    }
    assert any(r["project_use_autoid"] == "0" for r in rows)


def test_legacy_autoid_table_matches_the_transfers_it_made(sandbox_factory):
    sb = sandbox_factory(seed="demo", now=NOW)
    autoid = export(sb, "autoid")
    assert [r["record_id"] for r in autoid] == [str(n) for n in range(1, len(autoid) + 1)]
    assert {r["autoid_method"] for r in autoid} == {"1"}
    lookup = {(r["autoid_project_name"], r["autoid_hash"]): r["autoid_value"] for r in autoid}
    assert len(lookup) == len(autoid)
    assert sum(1 for r in autoid if r["autoid_project_name"] == "SmallPilot") == 90
    studies, transfers = studies_and_transfers(sb)
    legacy = {p.name for p in DEMO_PROJECTS if p.use_autoid == "1"}
    checked = 0
    for uid, rows in transfers.items():
        for t in rows:
            if t["transfer_project_name"] in legacy:
                key = (t["transfer_project_name"], sha512(studies[uid]["study_patient_id"]))
                assert lookup[key] == t["transfer_name"]
                checked += 1
    assert checked > 100
    assert ("PediatricBrain", sha512("")) in lookup  # the legacy job served an empty patient ID


def test_hard_cases_are_present(sandbox_factory):
    sb = sandbox_factory(seed="demo", now=NOW)
    studies, transfers = studies_and_transfers(sb)
    lookup = {(r["autoid_project_name"], r["autoid_hash"]) for r in export(sb, "autoid")}
    pids = [s["study_patient_id"] for s in studies.values()]
    assert pids.count("") == 3
    padded = [p for p in pids if p != p.rstrip()]
    assert len(padded) == 2
    assert any(("ABCTrial", sha512(p.strip())) in lookup for p in padded)
    assert any(("KneeHipCohort", sha512(p)) in lookup and p.strip() in pids for p in padded)
    unknown = {s["study_aetitle_addressed"] for s in studies.values()} - {
        p.aetitle for p in DEMO_PROJECTS
    }
    assert unknown
    unnamed = [t for rows in transfers.values() for t in rows if not t["transfer_project_name"]]
    assert len(unnamed) == 1
    assert all(len(s["study_date"]) == 8 and s["study_date"].isdigit() for s in studies.values())


def test_lookback_window_selects_recent_and_recently_modified_studies(sandbox_factory):
    sb = sandbox_factory(seed="demo", now=NOW)
    window = export(
        sb, "incoming", fields=["study_patient_id"], date_begin=NOW - timedelta(days=14)
    )
    everything = export(sb, "incoming", fields=["study_date"])
    assert 0.5 * len(everything) < len(window) < len(everything)
    recent = {r["study_instance_uid"] for r in window}
    dates = {r["study_instance_uid"]: r["study_date"] for r in everything}
    old = set(dates) - recent
    assert all(dates[uid] <= (NOW - timedelta(days=13)).strftime("%Y%m%d") for uid in old)
    assert any(dates[uid] < (NOW - timedelta(days=16)).strftime("%Y%m%d") for uid in recent)


def test_seed_is_deterministic_and_identifiers_are_listed():
    one, two = Store(None), Store(None)
    build_demo(one, NOW)
    summary = build_demo(two, NOW)
    assert one.load("incoming") == two.load("incoming")
    assert one.record_times("autoid") == two.record_times("autoid")
    identifiers = seed_patient_identifiers()
    for data in one.load("incoming").values():
        base = data[("", 0)]
        for key in ("study_patient_id", "study_patient_name"):
            if base.get(key, "").strip():
                assert base[key] in identifiers
    assert summary.studies == 300 and len(summary.hard_cases) == len(HARD_CASES)
    assert "" not in identifiers


def test_scalable_variant_and_file_database(tmp_path):
    big = build_demo(Store(None), NOW, n_studies=1000)
    assert big.studies == 1000 and big.patients > 300
    path = tmp_path / "sandbox.sqlite"
    with Sandbox(seed="demo", db_path=path, now=NOW) as first:
        tokens = first.tokens
        first.add_rows("autoid", [{"record_id": "9999", "autoid_value": "KEEP"}])
    with Sandbox(seed="demo", db_path=path) as second:
        assert second.tokens == tokens
        values = [r["autoid_value"] for r in export(second, "autoid")]
        assert values.count("KEEP") == 1 and len(values) == first.seed_summary.autoid_rows + 1
