"""Every request the kit sends has a shape REDCap 15.7.6's API code accepts.

The sandbox refuses what REDCap refuses (tests/test_sandbox_fidelity.py), but only where it was
taught to. This test is the other half: it records every request the kit sends over HTTP in
``check``, dry and live runs (whole, chunked and "changes since" reads, deletions seen, the
lease), the audit and ``repair``, and holds each one to REDCap's rules, read in REDCap
15.7.6's API PHP code (files named below) and measured (docs/redcap-api.md). A request of a
shape not listed here fails the test: check the new shape against REDCap's code first, then
add it, with the file that accepts it.
"""

from __future__ import annotations

import random
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest

from autoid_lib.audit.job import audit_history
from autoid_lib.check import check_setup
from autoid_lib.config import load_settings
from autoid_lib.redcap.gateway import RedcapGateway
from autoid_lib.repair.job import repair
from autoid_lib.run import run_autoid, server_time
from autoid_lib.sandbox.protocol import MAX_INPUT_VARS

# (content, action, the parameters sent besides token and data) -> where REDCap takes it.
# ``records``/``fields`` stand for both the plain and the indexed form; the rules below say
# which form each action may use.
SHAPES = {
    ("project", "", "format"): "API/project/export.php",
    ("version", "", ""): "API/version/export.php (autoid check)",
    (
        "record",
        "export",
        "dateRangeBegin eventName fields format rawOrLabel rawOrLabelHeaders records type",
    ): "API/record/export.php (did these records change since: REDCap's clock)",
    (
        "record",
        "export",
        "eventName fields format rawOrLabel rawOrLabelHeaders type",
    ): "API/record/export.php (a whole table, or a names-only record list)",
    (
        "record",
        "export",
        "eventName fields format rawOrLabel rawOrLabelHeaders records type",
    ): "API/record/export.php (a chunk of named records)",
    (
        "record",
        "export",
        "dateRangeBegin eventName fields format rawOrLabel rawOrLabelHeaders type",
    ): "API/record/export.php (what changed since)",
    (
        "record",
        "export",
        "dateRangeBegin dateRangeEnd eventName fields format rawOrLabel rawOrLabelHeaders type",
    ): "API/record/export.php (the studies of a window)",
    (
        "record",
        "import",
        "dateFormat forceAutoNumber format overwriteBehavior returnContent returnFormat type",
    ): "API/record/import.php",
    (
        "record",
        "delete",
        "delete_logging records returnFormat type",
    ): "API/record/delete.php",
}
REDCAP_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")  # other forms lose the time
TRUE_FALSE = {"True", "False", "true", "false", "1", "0"}  # API/index.php: '1' or 'true'


def shape(params: dict[str, str]) -> tuple[str, str, str]:
    keys = {re.sub(r"\[\d*\]$", "", key) for key in params} - {"token", "data", "content"}
    keys.discard("action")
    action = params.get("action") or ("import" if "data" in params else "export")
    return (
        params.get("content", ""),
        action if params.get("content") == "record" else "",
        " ".join(sorted(keys)),
    )


def refusals(params: dict[str, str], pairs: list[tuple[str, str]]) -> list[str]:
    """What REDCap 15.7.6 would refuse (or read otherwise than meant) in one request."""
    found = []
    _, action, _ = shape(params)
    indexed_records = any(re.fullmatch(r"records\[\d*\]", key) for key, _ in pairs)
    if len(pairs) > MAX_INPUT_VARS:
        found.append(f"{len(pairs)} form variables: PHP drops those past max_input_vars")
    if action == "delete" and not indexed_records:
        found.append("delete with records not an array (delete.php: api_136)")
    if action == "export" and "records" in params:
        names = params["records"].split(",")
        if any("'" in name or name != name.strip() for name in names):
            found.append("a records string whose names export.php would alter")
    for bound in ("dateRangeBegin", "dateRangeEnd"):
        if bound in params and not REDCAP_TIME.fullmatch(params[bound]):
            found.append(f"{bound} {params[bound]!r}: REDCap drops the time of other forms")
    if action == "import":
        if params.get("forceAutoNumber") not in TRUE_FALSE:
            found.append("forceAutoNumber not a boolean REDCap reads")
        automatic = params.get("forceAutoNumber", "").lower() in {"true", "1"}
        if params.get("returnContent") not in {"count", "ids", "auto_ids"}:
            found.append("returnContent REDCap does not know")
        if params.get("returnContent") == "auto_ids" and not automatic:
            found.append("auto_ids without forceAutoNumber: import.php answers a count")
        if params.get("overwriteBehavior") != "normal":
            found.append("overwriteBehavior other than normal: a blank would erase a value")
    return found


@pytest.fixture
def recorded(demo_sandbox):
    """The demo sandbox, recording each request's form as REDCap's PHP would parse it."""
    sent: list[list[tuple[str, str]]] = []
    handle = demo_sandbox.app.handle

    def record(body: bytes):
        sent.append(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        return handle(body)

    demo_sandbox.app.handle = record
    return demo_sandbox, sent


def test_every_request_the_kit_sends_has_a_shape_redcap_accepts(recorded, tmp_path):
    sb, sent = recorded
    settings = load_settings(sb.write_kit_files(tmp_path, reports_dir=tmp_path / "reports"))
    settings = replace(
        settings,
        redcap=replace(settings.redcap, read_chunk_records=64, max_requests_per_minute=6000),
    )  # every table takes several chunks; no pause for the request ceiling
    assert check_setup(settings).ok
    run_autoid(settings, dry_run=True)
    first = run_autoid(settings)
    assert first.error is None and first.plan.transfers
    ae = next(p.ae_title for p in first.plan.projects if p.capacity)
    new = {
        "study_aetitle_addressed": ae,
        "study_patient_id": "SHAPES^NEW",
        "study_date": "20261201",
    }
    sb.add_rows("incoming", [{**new, "study_instance_uid": "1.2.826.99.1"}])
    sb.app.delete_records("autoid", [sb.store.record_names("autoid")[0]])  # seen as deleted
    later = run_autoid(settings)  # through the local copy: changes, record list, vanished rows
    assert later.error is None
    now = server_time(datetime.now(UTC))
    audit_history(
        RedcapGateway(settings.redcap), settings.run.hasher(), now - timedelta(days=14), now, 14
    )
    repair(settings, apply=True, rng=random.Random(1))
    # small tables and windows in one export each (the copy and the last window say so):
    # a quiet run, then a writing one (issue 26)
    whole = replace(settings, redcap=replace(settings.redcap, read_chunk_records=5000))
    before = len(sent)
    assert run_autoid(whole).plan.is_empty and len(sent) - before == 3
    sb.add_rows("incoming", [{**new, "study_instance_uid": "1.2.826.99.2"}])
    assert run_autoid(whole).error is None

    assert len(sent) > 30
    seen = {shape(dict(pairs)) for pairs in sent}
    assert seen - set(SHAPES) == set(), "a new request shape: check it against REDCap's code"
    assert {s for s in SHAPES if s[1] == "delete"} <= seen  # the lease gave its ticket back
    problems = {p for pairs in sent for p in refusals(dict(pairs), pairs)}
    assert problems == set()


def test_the_shape_rules_catch_what_redcap_refuses():
    """The rules above can fail: each request REDCap 15.7.6 refused or misread is caught."""
    delete = [("content", "record"), ("action", "delete"), ("records", "7")]
    assert refusals(dict(delete), delete) == [
        "delete with records not an array (delete.php: api_136)"
    ]
    begin = [("content", "record"), ("dateRangeBegin", "2026-12-07 10:00:00.123456")]
    assert "REDCap drops the time" in refusals(dict(begin), begin)[0]
    ids = [("content", "record"), ("data", "[]"), ("forceAutoNumber", "False")]
    ids += [("returnContent", "auto_ids"), ("overwriteBehavior", "normal")]
    assert refusals(dict(ids), ids) == [
        "auto_ids without forceAutoNumber: import.php answers a count"
    ]
    many = [("content", "record")] + [(f"records[{i}]", str(i)) for i in range(MAX_INPUT_VARS)]
    assert "max_input_vars" in refusals(dict(many), many)[0]
