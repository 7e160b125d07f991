"""The REDCap lease: the pure rule, checked over every interleaving hypothesis can find, then
against the sandbox (expiry, a token without the delete right, the second line of defence)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
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
    holder_text,
    lease_settings,
    may_still_write,
    not_released_anomaly,
    parse_ticket,
    renewal_due,
    ticket_fields,
)
from autoid_lib.run import run_autoid

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def ticket(
    record, run_id, started=T0, state=LIVE, expiry_s=600, node="", pid=1, installation="i"
) -> Ticket:
    fields = ticket_fields(
        run_id=run_id,
        installation=installation,
        host="h",
        pid=pid,
        started=started,
        expiry_s=expiry_s,
        node=node,
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


def test_a_dead_run_of_this_machine_blocks_nobody_once_its_requests_have_settled():
    """A SIGKILLed run's ticket (this machine, process gone) is dead as soon as every request
    it sent has ended, and is removed by the holder; before that it is waited for, never
    deferred to — even when it comes first in ticket order."""
    killed = ticket("3", "killed", started=T0 - timedelta(seconds=5), node="n1", pid=4242)
    mine = ticket("4", "me", node="n1")
    quiet = decide("4", "me", [killed, mine], T0, last_look=False, ended={"3": T0}, settle_s=0)
    assert quiet.verdict is Verdict.PROCEED and quiet.dead == ("3",) and quiet.gone == ("3",)
    settling = decide("4", "me", [killed, mine], T0, last_look=False, ended={"3": T0}, settle_s=60)
    assert settling.verdict is Verdict.WAIT
    assert settling.until == T0 + timedelta(seconds=60) and settling.other == killed
    later = T0 + timedelta(seconds=60)
    again = decide("4", "me", [killed, mine], later, last_look=True, ended={"3": T0}, settle_s=60)
    assert again.verdict is Verdict.PROCEED and again.dead == ("3",)


def test_a_dead_run_beside_a_live_earlier_ticket_still_means_back_off():
    killed = ticket("3", "killed", node="n1", pid=4242)
    other = ticket("5", "other", started=T0 - timedelta(seconds=1), node="n2")
    mine = ticket("6", "me", node="n1")
    d = decide("6", "me", [killed, other, mine], T0, last_look=False, ended={"3": T0})
    assert d.verdict is Verdict.BACK_OFF and d.other == other


@dataclass
class _Run2:
    """A run in the crash model: on a node, may be killed at any step; ``last_send`` is when
    it last sent a request (its ticket, or a write while holding)."""

    name: str
    node: str
    pc: str = "assign"
    record: str = ""
    started: datetime = T0
    looked: bool = False
    killed: bool = False
    last_send: int = -1
    dead: tuple[str, ...] = ()


SETTLE = 3  # seconds a request may still take after it was sent (timeout_s + clock_skew_s)


# the holder r0 (later in ticket order) is killed right after a write, while r1 waits for it:
# r1 may go on only once that write can no longer land
_KILLED_WHILE_WRITING = [(0, 0), (0, 0), (0, 0), (1, 0), (1, 0), (1, 0), (0, 0), (0, 1)] + [
    (1, 0)
] * 4


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(nodes=["n1", "n1"], starts=[3, -3, 0, 0], schedule=_KILLED_WHILE_WRITING)
@given(
    nodes=st.lists(st.sampled_from(["n1", "n2"]), min_size=2, max_size=3),
    starts=st.lists(st.integers(-3, 3), min_size=4, max_size=4),
    schedule=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 7)), min_size=1, max_size=50),
)
def test_no_interleaving_with_killed_runs_lets_two_runs_write_at_once(nodes, starts, schedule):
    """As above, on two machines, and any run may be SIGKILLed at any step (a ticket import
    under way may still land within SETTLE). A run judges a ticket of its own machine whose
    process is gone by the time that run last sent a request (what the edge knows: the
    installation's LeaseState, or when it first saw the process gone). At no moment may two
    runs write: a live holder, or a killed one whose last write may still be under way."""
    store: dict[str, Ticket] = {}
    counter, clock = [0], [0]
    runs = [
        _Run2(f"r{i}", node, started=T0 + timedelta(seconds=starts[i]))
        for i, node in enumerate(nodes)
    ]
    by_name = {r.name: r for r in runs}

    def now() -> datetime:
        return T0 + timedelta(seconds=clock[0])

    def ended_for(run: _Run2) -> dict[str, datetime]:
        return {
            t.record: T0 + timedelta(seconds=by_name[t.run_id].last_send)
            for t in store.values()
            if by_name[t.run_id].killed and by_name[t.run_id].node == run.node
        }

    def step(run: _Run2, kill: bool) -> None:
        if kill and not run.killed:
            run.killed = True
            return
        if run.killed:  # only a ticket import already sent may still land, within SETTLE
            if run.pc == "commit" and clock[0] < run.last_send + SETTLE:
                store[run.record] = ticket(run.record, run.name, started=run.started, node=run.node)
                run.pc = "read"
            return
        if run.pc == "assign":
            counter[0] += 1
            run.record, run.pc, run.last_send = str(counter[0]), "commit", clock[0]
        elif run.pc == "commit":
            store[run.record] = ticket(run.record, run.name, started=run.started, node=run.node)
            run.pc = "read"
        elif run.pc == "read":
            d = decide(
                run.record,
                run.name,
                list(store.values()),
                now(),
                last_look=run.looked,
                ended=ended_for(run),
                settle_s=SETTLE,
            )
            if d.verdict is Verdict.PROCEED:
                run.pc, run.dead = "hold", d.dead
            elif d.verdict is Verdict.WAIT:
                run.looked = True
            else:
                run.pc = "release"
        elif run.pc == "hold":  # one more write; or give the lease back
            if clock[0] % 2:
                run.last_send = clock[0]
            else:
                for record in (run.record, *run.dead):
                    store.pop(record, None)
                run.pc = "done"
        elif run.pc == "release":
            store.pop(run.record, None)
            run.pc = "done"

    for pick, dice in schedule:
        clock[0] += 1
        step(runs[pick % len(runs)], kill=dice == 1)  # 1 in 8: SIGKILL
        writing = [
            r for r in runs if r.pc == "hold" and (not r.killed or clock[0] < r.last_send + SETTLE)
        ]
        assert len(writing) <= 1, [r.name for r in writing]


def test_renewal_is_due_only_when_the_next_import_could_not_be_sent():
    s = LeaseSettings(expiry_s=100, clock_skew_s=10)
    assert not renewal_due(0, s, timeout_s=10) and not renewal_due(69.9, s, timeout_s=10)
    assert renewal_due(70, s, timeout_s=10) and may_still_write(70, s, timeout_s=10)


def test_an_exit_3_never_blames_this_run_or_this_installation_for_another():
    """Item 3 of the lease: an exit 3 names a different installation, or says none is known."""
    args = {"installation": "vm", "host": "vm", "node": "n1"}
    known, text = holder_text(None, "37", **args)
    assert not known and "no other installation's live ticket is known" in text
    stale = ticket("37", "an-earlier-run", installation="vm", node="n1")
    known, text = holder_text(stale, "37", **args)
    assert not known and "stale" in text and "another installation" not in text
    here = ticket("38", "orphan", installation="vm", node="n1", pid=77)
    known, text = holder_text(here, "39", **args)
    assert known and "on this machine" in text and "77" in text
    elsewhere = parse_ticket(
        "40",
        LIVE,
        ticket_fields(run_id="x", installation="vm", host="vm", pid=5, started=T0, expiry_s=60)[
            "autoid_value"
        ],
    )
    known, text = holder_text(elsewhere, "39", **args)
    assert known and "cannot be checked from here" in text
    other = ticket("41", "x", installation="gatekeeper-2", node="n2")
    assert holder_text(other, "39", **args) == (True, other.describe())


def test_a_failed_release_names_the_rights_or_the_setting_and_never_a_token():
    refused = not_released_anomaly(
        "37",
        "REDCap autoid: delete 1 lease record(s) failed: Insufficient user privileges: You "
        "must have 'API Import/Update' privileges and 'Delete Records' privileges",
        T0,
        kind="redcap_error",
        token="file:/etc/autoid/autoid.token",
        tried_delete=True,
    )
    assert refused.kind == "lease_not_released" and "ticket 37" in refused.message
    assert "Insufficient user" in refused.message and "2026-12-01 08:00 UTC" in refused.message
    assert "'Delete Records'" in refused.action and "'API Import/Update'" in refused.action
    assert "[lease] delete = false" in refused.action and "file:/etc/autoid" in refused.action
    away = not_released_anomaly(
        "37", "timed out", None, kind="timeout", token="env:T", tried_delete=True
    )
    assert "next run that writes removes" in away.action and "Delete Records" not in away.action
    odd = not_released_anomaly(
        "37", "Incorrect format for 'records'", None, kind="redcap_error", token="env:T",
        tried_delete=True,
    )  # fmt: skip
    assert odd.action.startswith("This installation's next run that writes removes the ticket.")
    assert "'Delete Records'" in odd.action and "env:T" in odd.action


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
    table = "".join(
        f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}\n"
        for k, v in (FAST if lease is None else lease).items()
    )
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


def test_a_held_lease_stops_the_run_before_any_write_and_names_the_holder(demo_sandbox, tmp_path):
    settings = kit(demo_sandbox, tmp_path)
    plant_ticket(demo_sandbox, host="old-server", expiry_s=60)
    autoid, incoming = demo_sandbox.rows("autoid"), demo_sandbox.rows("incoming")
    demo_sandbox.reset_counts()
    blocked = run_autoid(settings)
    assert blocked.error.type == "LeaseHeld" and "old-server" in blocked.error.message
    # the first look (a cold copy: AutoID, Projects and the window, names and chunk each), then
    # as the plan writes: ticket, REDCap's clock, AutoID again (one request), give it back
    assert demo_sandbox.total_requests() == 10
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
    # the first look (6), ticket, REDCap's clock, AutoID again, once more after the wait, give
    # back
    assert demo_sandbox.total_requests() == 11


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


# -- a lease that recovers on its own -----------------------------------------------------------


def knee(sb, studies: int = 1, first: int = 0) -> None:
    """One auto-ID project and ``studies`` new studies of new patients: a run that is OK."""
    from scenarios import project

    if not sb.rows("projects"):
        sb.add_rows("projects", [project("1", "KNEE", "KNEE_AE", r"K\d{4}")])
    for i in range(first, first + studies):
        add_study(sb, f"1.2.826.9.{i}", f"PATIENT{i}")


def gone_pid() -> int:
    """The process ID of a process that has ended (and been reaped)."""
    import subprocess

    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def own_ticket(sb, settings, *, pid: int, record_run: bool, started=None) -> tuple[str, str]:
    """A live ticket as a run of this installation on this machine leaves it when killed:
    this installation's label and host, this machine's node; recorded in its LeaseState
    (``record_run``) with a last send an hour ago. Returns (record, run ID)."""
    import socket

    from autoid_lib.redcap.lease import LeaseState, node_id, state_path

    chosen = lease_settings(settings.lease, timeout_s=settings.redcap.timeout_s)
    started = started or datetime.now(UTC) - timedelta(seconds=1)
    fields = ticket_fields(
        run_id="killed-run",
        installation=chosen.installation,
        host=socket.gethostname(),
        pid=pid,
        started=started,
        expiry_s=600,
        node=node_id(),
    )
    name = str(sb.store.max_numeric_name("autoid") + 1)
    sb.add_rows("autoid", [{"record_id": name, **fields}])
    if record_run:
        sent = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="seconds")
        LeaseState(state_path(settings.run.lock_file)).note_run(
            "killed-run", record=name, pid=pid, node=node_id(), sent=sent
        )
    return name, "killed-run"


def test_a_killed_runs_ticket_recorded_by_this_installation_does_not_block_the_next_run(
    sandbox, tmp_path
):
    """Measured at a site: 13 SIGKILLs in 40 runs made 26 runs exit 3 for 30 minutes each.
    A ticket this installation recorded, whose process is gone, is dead at once (its last
    request was sent long ago): the next run goes on and removes it in its release."""
    from autoid_lib.redcap.lease import LeaseState, state_path

    knee(sandbox)
    settings = kit(sandbox, tmp_path, lease={**FAST, "expiry_s": 600})
    own_ticket(sandbox, settings, pid=gone_pid(), record_run=True)
    sandbox.reset_counts()
    result = run_autoid(settings)
    assert result.error is None and len(result.plan.transfers) == 1
    assert result.lease == {"ticket": result.lease["ticket"], "renewals": 0, "released": True}
    assert lease_rows(sandbox) == []  # its own ticket and the killed run's: one delete
    assert sandbox.request_counts()[("autoid", "record", "delete")] == 1
    state = state_path(settings.run.lock_file)
    assert LeaseState(state).runs == {} and state.stat().st_mode & 0o777 == 0o600


def test_a_ticket_of_this_machine_whose_process_is_gone_is_waited_for_only_until_quiet(
    sandbox, tmp_path
):
    """Not recorded (another lock file, or the state file lost): when the process went is
    unknown, so the run waits timeout_s + clock_skew_s from seeing it gone, reads AutoID once
    more, and goes on."""
    knee(sandbox)
    settings = kit(sandbox, tmp_path, lease={**FAST, "expiry_s": 600})
    own_ticket(sandbox, settings, pid=gone_pid(), record_run=False)
    sandbox.reset_counts()
    result = run_autoid(settings)
    assert result.error is None and len(result.plan.transfers) == 1
    assert lease_rows(sandbox) == []
    assert result.timings["lease"] >= 1.0  # timeout_s 1 + clock_skew_s 0: waited that long


def test_a_ticket_of_this_machine_whose_process_runs_is_respected(sandbox, tmp_path):
    """A process of this machine that still runs (a kernel that outlived its parent) holds
    its ticket: exit 3, naming it as a run on this machine, not as another installation."""
    import os

    knee(sandbox)
    settings = kit(sandbox, tmp_path, lease={**FAST, "expiry_s": 600})
    own_ticket(
        sandbox,
        settings,
        pid=os.getppid(),  # alive: pytest's parent
        record_run=True,
        started=datetime.now(UTC) - timedelta(seconds=30),
    )
    result = run_autoid(settings)
    assert result.error.type == "LeaseHeld" and "a run on this machine" in result.error.message
    assert f"process {os.getppid()} is still running" in result.error.message


def test_without_the_delete_right_a_killed_runs_numbered_ticket_is_marked_released(
    sandbox, tmp_path
):
    """At the site, `[lease] delete = false` exited 3 for 30 minutes blaming "installation vm
    on host vm" — itself: the numbered ticket of a run from before. Now the run goes on and
    marks that ticket released (it cannot delete it), so no installation waits for it."""
    knee(sandbox)
    settings = kit(sandbox, tmp_path, lease={**FAST, "expiry_s": 600, "delete": False})
    weak = sandbox.add_token("autoid", delete=False)
    (tmp_path / "tokens" / "autoid.token").write_text(weak)
    settings = load_settings(settings.path)
    stale, _ = own_ticket(sandbox, settings, pid=gone_pid(), record_run=True)
    result = run_autoid(settings)
    assert result.error is None and len(result.plan.transfers) == 1
    states = {r["record_id"]: r["autoid_hash"] for r in lease_rows(sandbox)}
    assert states[stale] == RELEASED and set(states.values()) == {RELEASED}
    knee(sandbox, first=1)
    again = run_autoid(settings)  # the slot is reused: still one record of its own
    assert again.error is None and len(lease_rows(sandbox)) == 2


def test_without_the_delete_right_a_killed_runs_slot_is_not_overwritten_while_it_may_write(
    sandbox, tmp_path
):
    """Without the delete right each run reuses its slot record; had the next run simply
    overwritten the slot of a run killed a moment ago, a write of that run still under way
    would have gone unseen. The run takes a new slot, waits until the killed run's last request
    can no longer land, and marks the old slot released."""
    from autoid_lib.redcap.lease import LeaseState, state_path

    knee(sandbox)
    settings = kit(sandbox, tmp_path, lease={**FAST, "expiry_s": 600, "delete": False})
    weak = sandbox.add_token("autoid", delete=False)
    (tmp_path / "tokens" / "autoid.token").write_text(weak)
    settings = load_settings(settings.path)
    assert run_autoid(settings).error is None  # creates and releases its slot
    state = LeaseState(state_path(settings.run.lock_file))
    (slot,) = [r["record_id"] for r in lease_rows(sandbox)]
    assert state.slot == slot
    chosen = lease_settings(settings.lease, timeout_s=settings.redcap.timeout_s)
    _overwrite_slot(sandbox, slot, chosen.installation)
    just_now = datetime.now(UTC).isoformat()
    state.note_run("killed-run", record=slot, pid=gone_pid(), node=_node(), sent=just_now)
    knee(sandbox, first=1)
    result = run_autoid(settings)
    assert result.error is None and len(result.plan.transfers) == 1
    assert result.timings["lease"] >= 0.5  # waited for the killed run's last request
    states = {r["record_id"]: r["autoid_hash"] for r in lease_rows(sandbox)}
    assert len(states) == 2 and set(states.values()) == {RELEASED} and states[slot] == RELEASED


def _node() -> str:
    from autoid_lib.redcap.lease import node_id

    return node_id()


def _overwrite_slot(sb, slot: str, installation: str) -> None:
    """The slot as a run killed while holding it leaves it: live, its process gone."""
    import socket

    fields = ticket_fields(
        run_id="killed-run",
        installation=installation,
        host=socket.gethostname(),
        pid=gone_pid(),
        started=datetime.now(UTC) - timedelta(seconds=1),
        expiry_s=600,
        node=_node(),
    )
    sb.add_rows("autoid", [{"record_id": slot, **fields}], overwrite=True)


def test_a_failed_release_is_an_anomaly_and_the_next_run_clears_the_ticket(sandbox, tmp_path):
    """Until now one stderr line: the release's failure is a `lease_not_released` anomaly
    with REDCap's cause (no token), the run needs attention, and the next run of this
    installation recognises the ticket as its own and removes it."""
    from autoid_lib.records.summary import run_summary

    knee(sandbox)
    settings = kit(sandbox, tmp_path, lease={**FAST, "expiry_s": 600})
    sandbox.inject_fault("http500", database="autoid", content="record", action="delete")
    result = run_autoid(settings)
    assert result.error is None and result.status == "attention"
    (anomaly,) = result.run_anomalies
    assert anomaly.kind == "lease_not_released" and result.lease["released"] is False
    assert f"ticket {result.lease['ticket']} was not given back" in anomaly.message
    assert "delete 1 lease record(s) failed" in anomaly.message
    assert "'Delete Records'" in anomaly.action and "[lease] delete = false" in anomaly.action
    summary = run_summary(result)
    assert summary["status"] == "attention" and summary["lease"]["released"] is False
    assert [a["kind"] for a in summary["anomalies"]] == ["lease_not_released"]
    assert "was not given back" in summary["headline"]
    text = str(summary)
    assert all(token not in text for token in sandbox.tokens.values())
    (left,) = lease_rows(sandbox)
    knee(sandbox, first=1)
    after = run_autoid(settings)
    assert after.error is None and after.status == "ok" and len(after.plan.transfers) == 1
    assert lease_rows(sandbox) == []
    assert left["record_id"] not in {r["record_id"] for r in sandbox.rows("autoid")}


def test_a_back_off_whose_release_fails_still_exits_3_and_reports_the_ticket(
    demo_sandbox, tmp_path
):
    """At the site every later run failed at `lease` with the delete's error instead of
    exiting 3: the back-off's release failing is an anomaly, the outcome stays LeaseHeld."""
    settings = kit(demo_sandbox, tmp_path)
    plant_ticket(demo_sandbox, host="old-server", expiry_s=60)
    demo_sandbox.inject_fault("http500", database="autoid", content="record", action="delete")
    blocked = run_autoid(settings)
    assert blocked.error.type == "LeaseHeld" and "old-server" in blocked.error.message
    assert [a.kind for a in blocked.run_anomalies] == ["lease_not_released"]


def test_refused_lease_ticket_advice_names_the_token_rights_and_the_setting(sandbox, tmp_path):
    """A REDCap refusal of the ticket itself fails the run at `lease` with advice that can be
    followed: which token, which rights, which setting."""
    from autoid_lib.failures import FailureKind

    knee(sandbox)
    settings = kit(sandbox, tmp_path)
    sandbox.inject_fault("http500", database="autoid", content="record", action="import")
    result = run_autoid(settings)
    assert result.error.step == "lease" and result.error.kind == FailureKind.LEASE_REFUSED
    assert result.lease == {"ticket": None, "renewals": 0, "released": False}
    entry = result.error.as_entry()
    assert "[redcap.tokens] autoid" in entry["action"]
    assert "'Delete Records'" in entry["action"] and "[lease] delete = false" in entry["action"]


def test_a_write_longer_than_the_tickets_life_renews_it(sandbox_factory, tmp_path):
    """REDCap imports cost about 8 ms a row: with a 2.5 s ticket, 1 s timeout and 50-row
    imports, writing 800 rows takes longer than the ticket lives. The run renews its ticket
    (same record, later expiry) and finishes; another installation that tries after the
    first expiry still finds the ticket live and exits 3."""
    sb = sandbox_factory(seed="empty", import_row_cost_s=0.008)
    knee(sb, studies=400)
    settings = small_imports(kit(sb, tmp_path / "a"))
    other = kit(sb, tmp_path / "b", lease={**FAST, "installation": "second"})
    outcome: dict = {}
    writer = threading.Thread(target=lambda: outcome.update(a=run_autoid(settings)))
    writer.start()
    try:
        renewed = _wait_for_renewal(sb, expiry_s=FAST["expiry_s"], alive=writer.is_alive)
        assert renewed is not None, "the writer finished before its first expiry"
        late = run_autoid(other)  # past the ticket's first expiry, during the write
    finally:
        writer.join(120)
    assert late.error.type == "LeaseHeld" and late.lease["released"] is True
    result = outcome["a"]
    assert result.error is None and result.problems == [] and len(result.plan.transfers) == 400
    assert result.lease["renewals"] >= 2 and result.lease["released"] is True
    assert lease_rows(sb) == []


def small_imports(settings):
    """The same installation with 50-row imports: each takes 0.4 s at 8 ms a row, well
    inside its 1 s timeout."""
    text = settings.path.read_text().replace("timeout_s = 1", "timeout_s = 1\nchunk_size = 50")
    settings.path.write_text(text)
    return load_settings(settings.path)


def _wait_for_renewal(sb, *, expiry_s: float, alive) -> Ticket | None:
    """The writer's ticket once it was renewed and its first expiry has passed."""
    from autoid_lib.redcap.lease import tickets_of

    while alive():
        for t in tickets_of(lease_rows(sb)):
            first_expiry = t.started + timedelta(seconds=expiry_s)
            now = datetime.now(UTC)
            renewed = t.live(now) and t.expires > first_expiry
            if renewed and now > first_expiry + timedelta(seconds=1):
                return t
        time.sleep(0.05)
    return None


@pytest.mark.slow
def test_a_sigkilled_autoid_run_does_not_block_the_next_run(sandbox_factory, tmp_path):
    """The real thing: `autoid run` and its notebook kernel (which writes the ticket) are
    SIGKILLed while it holds the lease; the next run of the installation goes on at once
    (after at most timeout_s + clock_skew_s), completes the work and leaves no ticket."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    sb = sandbox_factory(seed="empty", import_row_cost_s=0.008)
    knee(sb, studies=300)
    settings = small_imports(kit(sb, tmp_path, lease={**FAST, "expiry_s": 600}))
    autoid = str(Path(sys.executable).with_name("autoid"))
    run = subprocess.Popen(
        [autoid, "run", "--config", str(settings.path), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not [
        r for r in sb.rows("autoid") if r["autoid_project_name"] == "KNEE"
    ]:
        time.sleep(0.05)  # until it writes: it holds the lease
    from autoid_lib.redcap.lease import tickets_of

    (holding,) = [t for t in tickets_of(lease_rows(sb)) if t.state == LIVE]
    # as systemd stops the unit's whole control group: `autoid run` and its kernel (the
    # kernel has a session of its own, and writes the ticket)
    os.killpg(run.pid, signal.SIGKILL)
    os.kill(int(holding.pid), signal.SIGKILL)
    run.wait()
    assert [r for r in lease_rows(sb) if r["autoid_hash"] == LIVE], "killed before its ticket"
    result = run_autoid(settings)
    assert result.error is None and result.problems == []
    assert lease_rows(sb) == []
    served = [r for r in sb.rows("incoming") if r.get("redcap_repeat_instrument") == "transfers"]
    assert len(served) == len({r["study_instance_uid"] for r in served}) == 300


@pytest.mark.slow
def test_a_failed_release_shows_in_the_report_summary_index_and_mail(sandbox, tmp_path):
    """Issue 24, item 1: the failed release is visible wherever people look, with REDCap's
    cause and what to change, and the run needs attention; never a token."""
    from autoid_lib.mail.compose import compose_message
    from autoid_lib.mail.settings import EmailSettings
    from autoid_lib.records.notebook_run import execute_run

    knee(sandbox)
    settings = kit(sandbox, tmp_path, lease={**FAST, "expiry_s": 600})
    sandbox.inject_fault("http500", database="autoid", content="record", action="delete")
    record = execute_run(settings, progress=False)
    summary = record.summary
    assert record.exit_status == 0 and summary["status"] == "attention"
    (entry,) = summary["anomalies"]
    assert entry["kind"] == "lease_not_released" and "'Delete Records'" in entry["action"]
    assert summary["lease"]["released"] is False and "not given back" in summary["headline"]
    report = record.report.read_text()
    assert "was not given back" in report and "lease not released" in report
    index = (tmp_path / "reports" / "index.html").read_text()
    state = index[: index.index("<table")]
    assert "The REDCap lease ticket" in state and "'Delete Records'" in state.replace("&#x27;", "'")
    assert "ticket not given back" in index[index.index("<table") :]
    mail = compose_message(
        summary,
        EmailSettings("127.0.0.1", "autoid@example.org", ("ops@example.org",)),
        record.report,
    )
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert "1 anomaly" in mail["Subject"]
    assert "was not given back" in text and "was not given back" in html
    for page in (report, index, text, html, json.dumps(summary)):
        assert all(token not in page for token in sandbox.tokens.values())
