"""REDCap's clock (docs/run.md, "REDCap's clock"): the kit measures it from a record it wrote,
every live run confirms it with its own lease ticket, and on a clock it has not confirmed a
run reads whole. Real runs against sandboxes whose PHP ``date.timezone`` is behind, equal to
and ahead of ``[run] server_timezone``, over HTTP through PyCap."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenarios import autoid, project

from autoid_lib.config import load_settings
from autoid_lib.hashing import sha512_hex
from autoid_lib.redcap import clock
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.run import run_autoid
from autoid_lib.server_clock import (
    CLOCK_RECORD,
    HIGHEST,
    LOWEST,
    QUARTER,
    Confirmation,
    judge,
    naive_utc,
    probe_row,
    still_holds,
    tolerance,
    zone_groups,
    zone_offset,
)

CHUNK = 4  # records per read request: AutoID takes several, so runs use the local copy
PATIENTS = 12


def kit(sb, tmp_path, zone: str, **lease):
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    return replace(
        settings,
        redcap=replace(settings.redcap, read_chunk_records=CHUNK),
        run=replace(settings.run, server_timezone=zone),
        lease=lease,
    )


def a_site(sb) -> None:
    """One project and ``PATIENTS`` patients with an ID (PAT003 has K0003), written a day
    before now on REDCap's own clock."""
    sb.set_now(sb.now() - timedelta(days=1))
    sb.add_rows("projects", [project("1", "KNEE", "KNEE_AE", r"K\d{4}")])
    sb.add_rows(
        "autoid", [autoid(n, "KNEE", f"PAT{n:03d}", f"K{n:04d}") for n in range(1, PATIENTS + 1)]
    )
    sb.set_now(None)


def arrives(sb, patient: str, uid: str) -> None:
    study = {"study_instance_uid": uid, "study_aetitle_addressed": "KNEE_AE"}
    sb.add_rows("incoming", [{**study, "study_patient_id": patient, "study_date": "20261203"}])


def sent(sb) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {}
    for row in sb.rows("incoming"):
        if row.get("redcap_repeat_instrument") == "transfers" and row.get("transfer_name"):
            names.setdefault(row["study_instance_uid"], []).append(row["transfer_name"])
    return names


def ids_of(sb, patient: str) -> list[str]:
    return [r["autoid_value"] for r in sb.rows("autoid") if r["autoid_hash"] == sha512_hex(patient)]


def clock_anomalies(result) -> list:
    return [a for a in result.plan.anomalies if a.kind == "redcap_clock"] if result.plan else []


# -- measuring ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "zone",
    ["Europe/Paris", "America/New_York", "Asia/Kathmandu", "Pacific/Kiritimati", "Etc/GMT+12"],
)
def test_the_offset_is_measured_from_a_record_the_kit_wrote_in_at_most_7_requests(
    sandbox_factory, tmp_path, zone
):
    sb = sandbox_factory(seed="empty", timezone=zone)
    settings = load_settings(sb.write_kit_files(tmp_path))
    gateway = RedcapGateway(settings.redcap)
    sent_utc = datetime.now(UTC)
    gateway.write_kit_record("autoid", probe_row(sent_utc, "t"), "write the clock probe record")
    sb.reset_counts()
    found = clock.measure(gateway, CLOCK_RECORD, sent_utc)
    assert found.offset == zone_offset(zone, sent_utc)
    assert sb.total_requests() <= 7  # 107 answers (-12 h to +14 h, and beyond): 6 or 7


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    quarters=st.integers(-2, int((HIGHEST - LOWEST) / QUARTER) + 2),
    skew_s=st.integers(-7 * 60, 7 * 60),
)
def test_bisection_finds_every_quarter_hour_offset_despite_minutes_of_skew(
    sandbox, tmp_path, quarters, skew_s
):
    """Whatever REDCap's offset (a whole quarter-hour, or beyond every zone) and a skew of
    the two machines' clocks (plus the write's lag) under 7.5 minutes, the nearest
    quarter-hour is found; beyond UTC-12 or UTC+14 is said as such."""
    settings_ = load_settings(sandbox.write_kit_files(tmp_path))
    gateway = RedcapGateway(settings_.redcap)
    sent_utc = datetime.now(UTC)
    offset = LOWEST + quarters * QUARTER
    sandbox.set_now(naive_utc(sent_utc) + offset + timedelta(seconds=skew_s))
    try:
        row = probe_row(sent_utc, f"{quarters}{skew_s}")
        gateway.write_kit_record("autoid", row, "write the clock probe record")
        found = clock.measure(gateway, CLOCK_RECORD, sent_utc)
    finally:
        sandbox.set_now(None)
    if LOWEST <= offset <= HIGHEST:
        assert found.offset == offset
    else:
        assert found.offset is None and found.below == (offset < LOWEST)


def test_the_delete_right_is_probed_without_deleting_anything(demo_sandbox, tmp_path):
    settings_ = load_settings(demo_sandbox.write_kit_files(tmp_path))
    rows = demo_sandbox.rows("autoid")
    assert clock.may_delete(RedcapGateway(settings_.redcap)) is True
    tokens = {**settings_.redcap.tokens}
    from autoid_lib.secret import Secret

    tokens["autoid"] = Secret("test", demo_sandbox.add_token("autoid", delete=False))
    no_delete = replace(settings_.redcap, tokens=tokens)
    assert clock.may_delete(RedcapGateway(no_delete)) is False
    assert demo_sandbox.rows("autoid") == rows


# -- the pure verdicts -----------------------------------------------------------------------


def test_the_kit_may_run_behind_redcap_but_ahead_only_within_the_tolerance():
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    paris = zone_offset("Europe/Paris", now)
    from autoid_lib.server_clock import Offset

    assert judge(Offset(paris), "Europe/Paris", now, 120).within
    assert judge(Offset(paris), "UTC", now, 120).within  # behind: wider reads
    tokyo = judge(Offset(paris), "Asia/Tokyo", now, 120)
    assert not tokyo.within and tokyo.ahead == timedelta(hours=8)
    assert '"Europe/Paris"' in tokyo.message and "8 h ahead" in tokyo.message
    assert tolerance(120) == timedelta(minutes=55) and tolerance(75) == timedelta(minutes=10)
    # 15 minutes ahead (Asia/Kathmandu configured, REDCap in Asia/Kolkata): within 55 minutes
    kolkata = Offset(zone_offset("Asia/Kolkata", now))
    assert judge(kolkata, "Asia/Kathmandu", now, 120).within
    assert not judge(kolkata, "Asia/Kathmandu", now, 75).within
    assert not judge(Offset(None, below=True), "UTC", now, 120).within


def test_every_zone_named_as_advice_keeps_the_measured_offset_now():
    now = datetime(2026, 7, 1, tzinfo=UTC)
    for hours in (-5, 0, 1, 9):
        for group in zone_groups(timedelta(hours=hours), now):
            assert {zone_offset(zone, now) for zone in group} == {timedelta(hours=hours)}


def test_a_kept_confirmation_holds_for_a_day_while_the_zone_keeps_its_offset():
    at = datetime(2026, 12, 7, 12, tzinfo=UTC)
    kept = Confirmation(at, timedelta(hours=1))
    assert still_holds(kept, at + timedelta(hours=23), timedelta(hours=1), 24)[0]
    assert not still_holds(kept, at + timedelta(hours=25), timedelta(hours=1), 24)[0]
    assert not still_holds(kept, at + timedelta(hours=1), timedelta(hours=2), 24)[0]  # DST
    assert not still_holds(kept, at - timedelta(hours=1), timedelta(hours=1), 24)[0]
    assert not still_holds(None, at, timedelta(hours=1), 24)[0]


# -- whole runs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "redcap_zone, configured, ahead",
    [
        ("Asia/Tokyo", "UTC", False),  # the kit's idea runs 9 h behind: wider reads
        ("Europe/Paris", "Europe/Paris", False),
        ("America/New_York", "UTC", True),  # the measured failure: a host in UTC
        ("UTC", "Asia/Tokyo", True),
    ],
)
def test_a_hand_edited_id_is_sent_edited_whatever_redcaps_zone(
    sandbox_factory, tmp_path, redcap_zone, configured, ahead
):
    sb = sandbox_factory(seed="empty", timezone=redcap_zone)
    a_site(sb)
    settings_ = kit(sb, tmp_path, configured)
    first = run_autoid(settings_)
    assert first.error is None and first.problems == []
    assert bool(clock_anomalies(first)) == ahead

    sb.add_rows("autoid", [{"record_id": "3", "autoid_value": "K0999"}])  # edited by hand
    arrives(sb, "PAT003", "1.2.3.1")
    arrives(sb, "NEWPATIENT", "1.2.3.2")  # a new ID: the second look must see it as this run's
    second = run_autoid(settings_)
    assert second.error is None and second.problems == []  # no phantom "other writer"
    assert sent(sb)["1.2.3.1"] == ["K0999"]  # never the stale K0003
    assert sent(sb)["1.2.3.2"] == ids_of(sb, "NEWPATIENT") and len(ids_of(sb, "NEWPATIENT")) == 1
    if ahead:
        (anomaly,) = clock_anomalies(second)
        expected = redcap_zone if redcap_zone != "UTC" else "UTC"
        assert f'"{expected}"' in anomaly.message and "ahead of REDCap's" in anomaly.message
        assert second.table_reads["autoid"].startswith("read whole (REDCap's clock is not")
    else:
        assert not clock_anomalies(second)
        assert second.table_reads["autoid"].startswith("changes since")

    # a dry run writes nothing, so it trusts the copy only on a clock a live run confirmed
    sb.add_rows("autoid", [{"record_id": "4", "autoid_value": "K0888"}])
    arrives(sb, "PAT004", "1.2.3.4")
    dry = run_autoid(settings_, dry_run=True)
    assert [t.pseudonym for t in dry.plan.transfers] == ["K0888"]
    read = dry.table_reads["autoid"]
    assert read.startswith("read whole (REDCap's clock") if ahead else read.startswith("changes")


def test_without_a_lease_the_copy_is_trusted_only_on_a_confirmed_clock(sandbox_factory, tmp_path):
    from autoid_lib.check import check_setup

    sb = sandbox_factory(seed="empty", timezone="Europe/Paris")
    a_site(sb)
    settings_ = kit(sb, tmp_path, "Europe/Paris", enabled=False)
    run_autoid(settings_)
    arrives(sb, "PAT005", "1.2.3.5")
    unconfirmed = run_autoid(settings_)
    assert unconfirmed.table_reads["autoid"].startswith("read whole (REDCap's clock is not")
    assert check_setup(settings_).ok  # check measures the clock and keeps the confirmation
    assert check_setup(settings_).checks["local copy"].startswith("ok (")
    arrives(sb, "PAT006", "1.2.3.6")
    confirmed = run_autoid(settings_)
    assert confirmed.table_reads["autoid"].startswith("changes since")
    other_zone = replace(settings_, run=replace(settings_.run, server_timezone="Europe/Berlin"))
    arrives(sb, "PAT007", "1.2.3.7")
    rezoned = run_autoid(other_zone)  # the confirmation is of one configured zone
    assert rezoned.table_reads["autoid"].startswith("read whole (REDCap's clock is not")
    assert sent(sb) == {"1.2.3.5": ["K0005"], "1.2.3.6": ["K0006"], "1.2.3.7": ["K0007"]}


def test_the_probe_record_is_never_an_id(demo_sandbox, tmp_path):
    from autoid_lib.audit.job import audit_history
    from autoid_lib.redcap.gateway import autoid_from_rows

    settings_ = load_settings(demo_sandbox.write_kit_files(tmp_path))
    gateway = RedcapGateway(settings_.redcap)
    end = demo_sandbox.now()

    def audit():
        return audit_history(gateway, settings_.run.hasher(), end - timedelta(days=14), end, 14)

    before, leases = gateway.autoid_table()
    audited = audit()
    gateway.write_kit_record("autoid", probe_row(datetime.now(UTC), "x"), "write the probe")
    after, leases_after = gateway.autoid_table()
    assert after == before and leases_after == leases == []  # neither an ID nor a ticket
    assert audit() == audited  # the audit finds nothing new and counts no more AutoID rows
    rows, _ = autoid_from_rows(demo_sandbox.rows("autoid"))
    assert CLOCK_RECORD not in {row.record_id for row in rows}
    result = run_autoid(settings_)
    assert result.error is None and result.problems == []
    assert "[autoid-kit:clock]" not in {p.name for p in result.plan.projects}


def test_the_local_copy_forgets_a_deleted_probe_record_like_a_lease_ticket():
    """A probe record ``check`` deleted is dropped from the copy without asking REDCap: like a
    lease ticket it is deleted routinely and never decides an ID."""
    from autoid_lib.redcap.gateway import is_kit_row
    from autoid_lib.redcap.table_merge import merge

    probe = probe_row(datetime(2026, 12, 7, tzinfo=UTC), "x")
    patient = {"record_id": "1", "autoid_project_name": "KNEE", "autoid_hash": "h"}
    copy = {CLOCK_RECORD: probe, "1": patient}
    merged = merge(copy, ["1"], [], "record_id", routinely_deleted=is_kit_row)
    assert merged.vanished == () and set(merged.rows) == {"1"}


def test_a_check_before_the_first_run_keeps_only_the_clock(sandbox_factory, tmp_path):
    from autoid_lib.check import check_setup

    sb = sandbox_factory(seed="empty", timezone="Europe/Paris")
    a_site(sb)
    settings_ = kit(sb, tmp_path, "Europe/Paris", enabled=False)
    assert check_setup(settings_).ok
    assert check_setup(settings_).checks["local copy"].startswith("none yet")
    first = run_autoid(settings_)
    assert first.table_reads["autoid"].startswith("read whole (no local copy yet)")
    arrives(sb, "PAT005", "1.2.3.5")
    assert run_autoid(settings_).table_reads["autoid"].startswith("changes since")
