"""The non-record endpoints, the token check, the request counter and scripted faults."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests
import semantic_version
from redcap import Project, RedcapError


def project(sb, db: str) -> Project:
    return Project(sb.url, sb.tokens[db], timeout=10)


def post(sb, timeout: float = 5, **params) -> requests.Response:
    return requests.post(sb.url, data=params, timeout=timeout)


def test_tokens_are_distinct_32_character_upper_hex(sandbox):
    tokens = list(sandbox.tokens.values())
    assert sorted(sandbox.tokens) == ["autoid", "incoming", "projects"]
    assert len(set(tokens)) == 3
    for token in tokens:
        assert len(token) == 32 and token == token.upper() and int(token, 16) >= 0


@pytest.mark.parametrize("token", ["", "0" * 32, "not-a-token"])
def test_missing_or_wrong_token_is_refused_with_403(sandbox, token):
    answer = post(sandbox, token=token, content="record", format="json")
    assert answer.status_code == 403
    assert answer.json() == {"error": "You do not have permissions to use the API"}
    assert sandbox.request_counts() == Counter({("unknown", "record", "export"): 1})


def test_metadata_matches_the_data_dictionary(sandbox):
    meta = project(sandbox, "incoming").export_metadata()
    names = [m["field_name"] for m in meta]
    assert names[0] == "study_instance_uid" and len(names) == 26
    error = next(m for m in meta if m["field_name"] == "transfer_error")
    assert error["field_type"] == "checkbox"
    assert error["select_choices_or_calculations"].startswith("1, Anonymization error | 2, ")
    assert error["field_annotation"] == " @READONLY"
    autoid = project(sandbox, "autoid")
    assert autoid.def_field == "record_id"
    assert [m["field_name"] for m in autoid.export_metadata(forms=["autoid"])][
        -1
    ] == "autoid_method"
    only = project(sandbox, "projects").export_metadata(fields=["project_use_autoid"])
    assert [(m["field_type"], m["custom_alignment"]) for m in only] == [("yesno", "RH")]


def test_project_info_version_and_repeating_instruments(sandbox):
    incoming, autoid = project(sandbox, "incoming"), project(sandbox, "autoid")
    info = incoming.export_project_info()
    assert info["is_longitudinal"] == 0
    assert info["has_repeating_instruments_or_events"] == 1
    assert autoid.export_project_info()["has_repeating_instruments_or_events"] == 0
    assert info["project_id"] != autoid.export_project_info()["project_id"]
    assert incoming.export_version() == semantic_version.Version("15.7.6")
    assert post(sandbox, token=sandbox.tokens["autoid"], content="version").text == "15.7.6"
    assert incoming.export_repeating_instruments_events() == [
        {"form_name": "series", "custom_form_label": ""},
        {"form_name": "transfers", "custom_form_label": ""},
    ]
    assert autoid.export_repeating_instruments_events() == []


def test_classic_projects_refuse_form_event_mapping(sandbox):
    answer = post(
        sandbox, token=sandbox.tokens["incoming"], content="formEventMapping", format="json"
    )
    assert answer.status_code == 400
    assert answer.json() == {"error": "You cannot export form/event mappings for classic projects"}
    assert project(sandbox, "incoming").is_longitudinal is False


def test_unknown_content_is_an_error_in_the_requested_format(sandbox):
    token = sandbox.tokens["autoid"]
    assert "error" in post(sandbox, token=token, content="nonsense", format="json").json()
    assert post(sandbox, token=token, content="nonsense", format="csv").text.startswith("ERROR:")
    assert "<error>" in post(sandbox, token=token, content="nonsense").text


def test_request_counter_counts_by_database_content_and_action(sandbox):
    autoid = project(sandbox, "autoid")
    autoid.export_records(fields=["record_id"])
    autoid.import_records([{"record_id": "1"}])
    autoid.generate_next_record_name()
    assert sandbox.request_counts() == Counter(
        {
            ("autoid", "metadata", "export"): 1,  # PyCap reads it once to learn the id field
            ("autoid", "record", "export"): 1,
            ("autoid", "record", "import"): 1,
            ("autoid", "generateNextRecordName", "export"): 1,
        }
    )
    assert sandbox.total_requests() == 4
    sandbox.rows("autoid")  # the handle's own reads are not requests
    sandbox.reset_counts()
    assert sandbox.total_requests() == 0


def test_answer_bytes_are_the_bodies_sent_per_database_content_and_action(sandbox):
    bodies = [
        post(sandbox, token=sandbox.tokens["incoming"], content="version").content,
        post(sandbox, token=sandbox.tokens["autoid"], content="record", format="json").content,
        post(sandbox, token=sandbox.tokens["autoid"], content="record", format="json").content,
        post(sandbox, token="0" * 32, content="record", format="json").content,
    ]
    assert sandbox.answer_bytes() == Counter(
        {
            ("incoming", "version", "export"): len(bodies[0]),
            ("autoid", "record", "export"): len(bodies[1]) + len(bodies[2]),
            ("unknown", "record", "export"): len(bodies[3]),
        }
    )
    sandbox.rows("autoid")  # the handle's own reads send nothing
    assert sum(sandbox.answer_bytes().values()) == sum(map(len, bodies))
    sandbox.reset_counts()
    assert sandbox.answer_bytes() == Counter()


def test_http500_fault_answers_html_and_writes_nothing(sandbox):
    sandbox.inject_fault("http500", database="autoid", action="import")
    autoid = project(sandbox, "autoid")
    autoid.export_records()  # does not match: answered normally
    with pytest.raises(json.JSONDecodeError):
        autoid.import_records([{"record_id": "1", "autoid_value": "X"}])
    answer = post(sandbox, token=sandbox.tokens["autoid"], content="version")
    assert answer.status_code == 200  # the fault was used up
    assert sandbox.rows("autoid") == []
    assert sandbox.request_counts()[("autoid", "record", "import")] == 1


def test_nth_and_times_choose_which_requests_fail(sandbox):
    sandbox.inject_fault("http500", nth=2, times=2)
    token = sandbox.tokens["projects"]
    codes = [post(sandbox, token=token, content="version").status_code for _ in range(5)]
    assert codes == [200, 500, 500, 200, 200]
    sandbox.inject_fault("http500", content="metadata", times=None)
    assert [
        post(sandbox, token=token, content="metadata", format="json").status_code for _ in range(3)
    ] == [500] * 3
    sandbox.clear_faults()
    assert post(sandbox, token=token, content="metadata", format="json").status_code == 200


def test_timeout_fault_sleeps_and_writes_nothing(sandbox):
    sandbox.inject_fault("timeout", database="autoid", delay_s=1.0)
    started = time.monotonic()
    with pytest.raises(requests.Timeout):
        post(
            sandbox,
            timeout=0.2,
            token=sandbox.tokens["autoid"],
            content="record",
            format="json",
            data='[{"record_id": "1"}]',
        )
    assert time.monotonic() - started < 1.0
    time.sleep(1.0)  # let the faulted request finish: it must still have written nothing
    assert sandbox.rows("autoid") == []


def test_truncated_fault_cuts_a_real_answer_and_writes_nothing(demo_sandbox):
    demo_sandbox.inject_fault("truncated", database="projects", times=2)
    projects = project(demo_sandbox, "projects")
    with pytest.raises(json.JSONDecodeError):
        projects.export_records()
    answer = post(
        demo_sandbox,
        token=demo_sandbox.tokens["projects"],
        content="record",
        format="json",
        data='[{"record_id": "99", "project_name": "X"}]',
    )
    assert answer.status_code == 200 and answer.text.startswith('{"co')
    with pytest.raises(ValueError):
        answer.json()
    assert {r["record_id"] for r in projects.export_records()} == {str(n) for n in range(1, 9)}


def test_unknown_fault_kinds_are_refused(sandbox):
    with pytest.raises(ValueError, match="unknown fault kind"):
        sandbox.inject_fault("meltdown")


def test_pycap_raises_on_refusals(sandbox):
    with pytest.raises(RedcapError):
        project(sandbox, "projects").import_records([{"record_id": "1", "bogus": "x"}])


@pytest.mark.parametrize("data", ["[{", '[{"record_id": ' + "1" * 5000 + "}]"])
def test_an_import_that_is_not_json_python_can_read_is_refused_with_400(sandbox, data):
    # json.loads raises a plain ValueError (not JSONDecodeError) for an integer past Python's
    # int_max_str_digits; the sandbox read `.msg` from it and answered a 500 (found by mypy)
    token = sandbox.tokens["autoid"]
    answer = post(sandbox, token=token, content="record", action="import", format="json", data=data)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("The data being imported is not valid JSON")
    assert project(sandbox, "autoid").export_records() == []
