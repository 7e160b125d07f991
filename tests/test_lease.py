"""The REDCap lease: the pure rule, checked over every interleaving hypothesis can find, then
against the sandbox (expiry, a token without the delete right, the second line of defence)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoid_lib.config import load_settings
from autoid_lib.errors import ConcurrentWriter, ConfigError
from autoid_lib.hashing import sha512_hex
from autoid_lib.lease import (
    LEASE_PROJECT,
    LIVE,
    RELEASED,
    LeaseSettings,
    Ticket,
    Verdict,
    decide,
    lease_settings,
    may_still_write,
    parse_ticket,
    ticket_fields,
)
from autoid_lib.run import run_autoid

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def ticket(record, run_id, started=T0, state=LIVE, expiry_s=600) -> Ticket:
    fields = ticket_fields(
        run_id=run_id, installation="i", host="h", pid=1, started=started, expiry_s=expiry_s
    )
    return parse_ticket(record, state, fields["autoid_value"])


# -- the pure rule ------------------------------------------------------------------------------


def test_a_ticket_round_trips_and_holds_no_more_than_it_should():
    fields = ticket_fields(
        run_id="ab12", installation="gk 1;x=y", host="host-a", pid=42, started=T0, expiry_s=60
    )
    assert fields["autoid_project_name"] == LEASE_PROJECT and fields["autoid_hash"] == LIVE
    t = parse_ticket("7", LIVE, fields["autoid_value"])
    assert (t.run_id, t.installation, t.host, t.pid) == ("ab12", "gk-1-x-y", "host-a", "42")
    assert t.expires - t.started == timedelta(seconds=60) and not t.malformed
    assert "host-a" in t.describe() and "2026-12-01 08:00:00 UTC" in t.describe()
    assert t.live(T0 + timedelta(seconds=59)) and not t.live(T0 + timedelta(seconds=60))
    assert not parse_ticket("7", RELEASED, fields["autoid_value"]).live(T0)


def test_a_malformed_lease_record_blocks_rather_than_being_ignored():
    bad = parse_ticket("9", LIVE, "something else")
    assert bad.malformed and bad.live(T0 + timedelta(days=999))
    assert decide("10", "me", [bad, ticket("10", "me")], T0, last_look=False).verdict in (
        Verdict.BACK_OFF,
        Verdict.WAIT,
    )


def test_alone_proceeds_and_names_the_dead_tickets_to_remove():
    old = ticket("3", "x", started=T0 - timedelta(hours=2))
    done = ticket("4", "y", state=RELEASED)
    d = decide("5", "me", [old, done, ticket("5", "me")], T0, last_look=False)
    assert d.verdict is Verdict.PROCEED and set(d.dead) == {"3", "4"}


def test_an_earlier_live_ticket_means_back_off_a_later_one_means_wait_then_back_off():
    mine = ticket("5", "me", started=T0)
    earlier = ticket("4", "x", started=T0 - timedelta(seconds=1))
    later = ticket("6", "y", started=T0 + timedelta(seconds=1))
    assert decide("5", "me", [earlier, mine], T0, last_look=False).verdict is Verdict.BACK_OFF
    assert decide("5", "me", [mine, later], T0, last_look=False).verdict is Verdict.WAIT
    d = decide("5", "me", [mine, later], T0, last_look=True)
    assert d.verdict is Verdict.BACK_OFF and d.other == later


def test_a_lost_or_overwritten_ticket_never_proceeds():
    assert decide("5", "me", [], T0, last_look=False).verdict is Verdict.BACK_OFF
    d = decide("5", "me", [ticket("5", "thief")], T0, last_look=False)
    assert d.verdict is Verdict.BACK_OFF and d.other.run_id == "thief"


def test_a_run_stops_writing_before_anyone_can_think_its_ticket_dead():
    s = LeaseSettings(expiry_s=100, clock_skew_s=10)
    assert may_still_write(79.9, s, timeout_s=10) and not may_still_write(80, s, timeout_s=10)


def test_the_lease_table_is_checked_when_the_config_is_read():
    with pytest.raises(ConfigError, match="expiry_s"):
        lease_settings({"expiry_s": 50}, timeout_s=30)
    with pytest.raises(ConfigError, match="unknown config key"):
        lease_settings({"expiry": 50}, timeout_s=30)
    assert lease_settings({"installation": "a b"}, timeout_s=30).installation == "a-b"


@dataclass
class _Run:
    """One run in the model: its ticket is assigned a number, then becomes visible (so a
    lower number can be handed out yet be invisible to a read: the in-flight gap)."""

    name: str
    pc: str = "assign"
    record: str = ""
    started: datetime = T0
    looked: bool = False


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 4),
    starts=st.lists(st.integers(-3, 3), min_size=4, max_size=4),
    schedule=st.lists(st.integers(0, 3), min_size=1, max_size=60),
)
def test_no_interleaving_lets_two_runs_hold_the_lease(n, starts, schedule):
    """Every run: assign number, commit ticket (visible), read, [wait, read again], hold,
    release. Whatever the order of these atomic steps, at most one run holds at a time."""
    store: dict[str, Ticket] = {}
    counter = [0]
    runs = [_Run(f"r{i}", started=T0 + timedelta(seconds=starts[i])) for i in range(n)]

    def step(run: _Run) -> None:
        if run.pc == "assign":
            counter[0] += 1
            run.record, run.pc = str(counter[0]), "commit"
        elif run.pc == "commit":
            store[run.record] = ticket(run.record, run.name, started=run.started)
            run.pc = "read"
        elif run.pc == "read":
            d = decide(run.record, run.name, list(store.values()), T0, last_look=run.looked)
            if d.verdict is Verdict.PROCEED:
                run.pc = "hold"
            elif d.verdict is Verdict.WAIT:
                run.looked = True  # the wait itself is just more interleaving
            else:
                run.pc = "release"
        elif run.pc in ("hold", "release"):
            store.pop(run.record, None)
            run.pc = "done"

    for pick in schedule:
        step(runs[pick % n])
        assert sum(r.pc == "hold" for r in runs) <= 1


# -- the sandbox: auto-numbering that the argument relies on ------------------------------------


def test_concurrent_auto_numbered_imports_get_distinct_increasing_names(sandbox, tmp_path):
    """The sandbox must hand out record names atomically, as REDCap's record cache does: many
    clients importing at once all get distinct names, each client's names increase, and every
    import is a record of its own."""
    from autoid_lib.redcap.gateway import RedcapGateway

    settings = load_settings(sandbox.write_kit_files(tmp_path))
    clients, each = 8, 15
    names: dict[int, list[int]] = {}
    barrier = threading.Barrier(clients)

    def importer(i: int) -> None:
        gateway = RedcapGateway(settings.redcap)
        barrier.wait()
        names[i] = [
            int(gateway.write_lease({"autoid_hash": "x", "autoid_value": f"{i}.{k}"}))
            for k in range(each)
        ]

    threads = [threading.Thread(target=importer, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [n for got in names.values() for n in got]
    assert sorted(every) == list(range(1, clients * each + 1))  # distinct, none lost
    assert all(got == sorted(got) for got in names.values())
    assert len(sandbox.rows("autoid")) == clients * each


def test_the_sandbox_refuses_deletes_to_a_token_without_the_right(sandbox):
    import requests

    sandbox.add_rows("autoid", [{"record_id": "1", "autoid_project_name": "P"}])
    weak = sandbox.add_token("autoid", delete=False)
    form = {"content": "record", "action": "delete", "records[0]": "1", "format": "json"}
    answer = requests.post(sandbox.url, data={"token": weak, **form}, timeout=5)
    # REDCap 15.7.6: API/index.php refuses with 403 before delete.php's api_135 is reached
    assert answer.status_code == 403
    assert answer.json()["error"] == "You do not have Delete Record privileges"
    missing = requests.post(
        sandbox.url,
        data={"token": sandbox.tokens["autoid"], **form, "records[1]": "2"},
        timeout=5,
    )
    assert missing.status_code == 400 and len(sandbox.rows("autoid")) == 1  # all or nothing
    done = requests.post(sandbox.url, data={"token": sandbox.tokens["autoid"], **form}, timeout=5)
    assert done.json() == 1 and sandbox.rows("autoid") == []


# -- runs against the sandbox -------------------------------------------------------------------

FAST = {"expiry_s": 2.5, "clock_skew_s": 0, "wait_s": 0.2}


def kit(sb, folder, lease=None):
    """An installation's config in ``folder``: its own lock file, reports and lease table."""
    config = sb.write_kit_files(folder, reports_dir=folder / "reports")
    table = "".join(f"{k} = {v!r}\n" for k, v in (FAST if lease is None else lease).items())
    text = config.read_text().replace("timeout_s = 10", "timeout_s = 1")
    config.write_text(text + "[lease]\n" + table)
    return load_settings(config)


def lease_rows(sb) -> list[dict]:
    return sb.rows("autoid", filter_logic=f"[autoid_project_name] = '{LEASE_PROJECT}'")


def plant_ticket(sb, host="old-server", started=None, expiry_s=2.5, state=LIVE) -> str:
    fields = ticket_fields(
        run_id="other",
        installation="old",
        host=host,
        pid=7,
        started=started or datetime.now(UTC),
        expiry_s=expiry_s,
        state=state,
    )
    name = str(sb.store.max_numeric_name("autoid") + 1)
    sb.add_rows("autoid", [{"record_id": name, **fields}])
    return name


def add_study(sb, uid, patient, ae="KNEE_AE"):
    sb.add_rows(
        "incoming",
        [
            {
                "study_instance_uid": uid,
                "study_aetitle_addressed": ae,
                "study_patient_id": patient,
                "study_date": "20261127",
            }
        ],
    )


def test_a_held_lease_stops_the_run_before_any_read_and_names_the_holder(demo_sandbox, tmp_path):
    settings = kit(demo_sandbox, tmp_path)
    plant_ticket(demo_sandbox, host="old-server", expiry_s=60)
    autoid, incoming = demo_sandbox.rows("autoid"), demo_sandbox.rows("incoming")
    demo_sandbox.reset_counts()
    blocked = run_autoid(settings)
    assert blocked.error.type == "LeaseHeld" and "old-server" in blocked.error.message
    # ticket, REDCap's clock, AutoID (names, chunk), give it back
    assert demo_sandbox.total_requests() == 5
    assert demo_sandbox.rows("incoming") == incoming and demo_sandbox.rows("autoid") == autoid


def test_a_crashed_holder_blocks_no_longer_than_its_expiry(demo_sandbox, tmp_path):
    settings = kit(demo_sandbox, tmp_path)
    crashed = plant_ticket(demo_sandbox, expiry_s=2.5)
    assert run_autoid(settings).error.type == "LeaseHeld"
    time.sleep(2.6)
    result = run_autoid(settings)
    assert result.error is None and result.plan.transfers
    assert lease_rows(demo_sandbox) == []  # its own ticket and the crashed one are removed
    assert crashed not in {r["record_id"] for r in demo_sandbox.rows("autoid")}


def test_a_later_ticket_is_waited_for_once_then_given_way_to(demo_sandbox, tmp_path):
    settings = kit(demo_sandbox, tmp_path, lease={**FAST, "wait_s": 0.5})
    later = datetime.now(UTC) + timedelta(seconds=30)
    plant_ticket(demo_sandbox, host="newer", started=later, expiry_s=120)
    demo_sandbox.reset_counts()
    result = run_autoid(settings)
    assert result.error.type == "LeaseHeld" and "newer" in result.error.message
    # ticket, REDCap's clock, AutoID, AutoID again (2 each), give back
    assert demo_sandbox.total_requests() == 7


def test_live_runs_in_a_row_each_give_the_lease_back_redcap_15_7_6(demo_sandbox, tmp_path):
    """At a real REDCap 15.7.6 the first run could not delete its ticket (``records`` sent as
    a string) and every later run exited 3: with the default lease, each run here serves the
    study that arrived since the last one, and no ticket is left behind."""
    settings = kit(demo_sandbox, tmp_path, lease={})
    first = run_autoid(settings)
    assert first.error is None and lease_rows(demo_sandbox) == []
    ae = next(p.ae_title for p in first.plan.projects if p.capacity)
    for i in range(3):
        add_study(demo_sandbox, f"1.2.826.8.{i}", f"LATER{i}", ae=ae)
        again = run_autoid(settings)
        assert again.error is None and len(again.plan.transfers) == 1
        assert lease_rows(demo_sandbox) == []


def test_without_the_delete_right_runs_work_and_the_lease_table_stays_bounded(
    demo_sandbox, tmp_path
):
    settings = kit(demo_sandbox, tmp_path)
    weak = demo_sandbox.add_token("autoid", delete=False)
    (tmp_path / "tokens" / "autoid.token").write_text(weak)
    settings = load_settings(settings.path)
    first = run_autoid(settings)
    assert first.error is None and first.problems == []
    ae = next(p.ae_title for p in first.plan.projects if p.capacity)
    for i in range(6):
        add_study(demo_sandbox, f"1.2.826.7.{i}", f"NEWPATIENT{i}", ae=ae)
        demo_sandbox.reset_counts()
        again = run_autoid(settings)
        assert again.error is None and again.problems == [] and len(again.plan.transfers) == 1
        # the lease: 3 more, as with delete; the copy's fixed-name mark: read back, rewritten
        assert demo_sandbox.total_requests() <= 12 + 3 + 2
    rows = lease_rows(demo_sandbox)
    assert len(rows) <= 2 and all(r["autoid_hash"] == RELEASED for r in rows)
    # the released tickets never count as IDs
    assert all(r.project_name != LEASE_PROJECT for r in _gateway(settings).autoid_rows())


def _gateway(settings):
    from autoid_lib.redcap.gateway import RedcapGateway

    return RedcapGateway(settings.redcap)


@pytest.mark.parametrize("name", [LEASE_PROJECT, "[AUTOID-KIT:Lease]", "autoid-kit:hash-scheme"])
def test_a_reserved_project_name_is_never_served_and_is_reported_by_name(sandbox, tmp_path, name):
    """A Projects record named as the kit's own AutoID records (any case) with auto-ID on:
    its studies are skipped and the plan names it as misconfigured, never silently dropped."""
    row = {"record_id": "1", "project_name": name, "project_use_autoid": "1"}
    row |= {"project_autoid_aetitle": "X_AE", "project_patient_naming": r"X\d"}
    sandbox.add_rows("projects", [row])
    add_study(sandbox, "1.2.826.5.1", "SOMEONE", ae="X_AE")
    result = run_autoid(kit(sandbox, tmp_path), dry_run=True)
    assert result.plan.transfers == () and result.plan.new_ids == ()
    (anomaly,) = [a for a in result.plan.anomalies if a.kind == "project_misconfigured"]
    assert name.strip() in anomaly.message and "reserved" in anomaly.message


def test_rows_another_writer_adds_for_this_runs_patients_stop_the_transfers(sandbox, tmp_path):
    """The second line of defence: a writer without the lease gives the run's new patient an
    ID between the run's AutoID import and its transfers; the run writes no transfer."""
    from autoid_lib import apply

    sandbox.add_rows(
        "projects",
        [
            {
                "record_id": "1",
                "project_name": "KNEE",
                "project_use_autoid": "1",
                "project_autoid_aetitle": "KNEE_AE",
                "project_patient_naming": r"K\d{3}",
            }
        ],
    )
    add_study(sandbox, "1.2.3.4", "PAT1")
    settings = kit(sandbox, tmp_path)
    real = apply.RedcapGateway.create_autoid_rows

    def and_another_writer(self, new_ids):
        names = real(self, new_ids)
        sandbox.add_rows(  # what a second installation without a lease would write
            "autoid",
            [
                {
                    "record_id": "999",
                    "autoid_project_name": "KNEE",
                    "autoid_hash": sha512_hex("PAT1"),
                    "autoid_value": "K999",
                }
            ],
        )
        return names

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(apply.RedcapGateway, "create_autoid_rows", and_another_writer)
        result = run_autoid(settings)
    assert result.error.type == ConcurrentWriter.__name__ and result.error.step == "write"
    assert "KNEE" in result.error.message and "PAT1" not in result.error.message
    assert not [r for r in sandbox.rows("incoming") if r.get("redcap_repeat_instrument")]
    assert lease_rows(sandbox) == []


@pytest.mark.slow
def test_autoid_run_exits_3_naming_the_other_installation(demo_sandbox, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    settings = kit(demo_sandbox, tmp_path, lease={**FAST, "expiry_s": 60})
    plant_ticket(demo_sandbox, host="old-server", expiry_s=60)
    autoid = str(Path(sys.executable).with_name("autoid"))
    done = subprocess.run(
        [autoid, "run", "--config", str(settings.path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "old-server" in done.stderr and "nothing was written" in done.stderr
    assert demo_sandbox.tokens["autoid"] not in done.stderr


def test_check_lists_the_installations_in_the_lease_records(demo_sandbox, tmp_path, capsys):
    from autoid_lib.check import check_setup

    settings = kit(demo_sandbox, tmp_path)
    plant_ticket(demo_sandbox, host="old-server", expiry_s=60)
    plant_ticket(demo_sandbox, host="laptop", started=datetime.now(UTC) - timedelta(hours=2))
    lines = "\n".join(check_setup(settings).lines())
    assert "installations in the REDCap lease records: 2" in lines
    assert "old-server" in lines and "running now" in lines
    assert "laptop" in lines and "expired" in lines
