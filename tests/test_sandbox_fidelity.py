"""The sandbox's contract: each behaviour of REDCap the kit relies on, as REDCap 15.7.6 does it.

Measured on 2026-12-07 against a real REDCap 15.7.6 (PHP 8.2, MariaDB 10.11; the table in
docs/sandbox.md), or read in its API PHP code where marked. One test per behaviour, named for
it; each fails on a sandbox kinder than REDCap. Requests go over HTTP, as a client sends them.
"""

from __future__ import annotations

import requests


def post(sb, database: str, **params) -> requests.Response:
    form = {"token": sb.tokens[database], "format": "json", **params}
    return requests.post(sb.url, data=form, timeout=10)


def _two_records(sb) -> None:
    sb.add_rows("autoid", [{"record_id": "1"}, {"record_id": "2"}])


# -- delete (API/record/delete.php) ------------------------------------------------------------


def test_delete_refuses_records_as_a_plain_string_redcap_15_7_6(sandbox):
    """REDCap 15.7.6: ``records`` must be an array even for one name (api_136); nothing goes."""
    _two_records(sandbox)
    for records in ("1", "1,2"):
        answer = post(sandbox, "autoid", content="record", action="delete", records=records)
        assert answer.status_code == 400
        assert "must be passed as an array" in answer.json()["error"]
    assert [row["record_id"] for row in sandbox.rows("autoid")] == ["1", "2"]


def test_delete_takes_records_as_an_array_redcap_15_7_6(sandbox):
    _two_records(sandbox)
    answer = post(sandbox, "autoid", content="record", action="delete", **{"records[0]": "2"})
    assert answer.status_code == 200 and answer.json() == 1
    assert [row["record_id"] for row in sandbox.rows("autoid")] == ["1"]


def test_delete_without_records_is_an_empty_array_redcap_15_7_6(sandbox):
    """REDCap's API/index.php makes a missing ``records`` an empty array: api_137."""
    answer = post(sandbox, "autoid", content="record", action="delete")
    assert answer.status_code == 400 and "is an empty array" in answer.json()["error"]


def test_delete_of_an_unknown_record_deletes_nothing_redcap_15_7_6(sandbox):
    _two_records(sandbox)
    form = {"records[0]": "1", "records[1]": "nope"}
    answer = post(sandbox, "autoid", content="record", action="delete", **form)
    assert answer.status_code == 400
    assert answer.json()["error"].endswith("The following records do not exist: nope")
    assert len(sandbox.rows("autoid")) == 2


def test_delete_needs_the_delete_and_import_rights_redcap_15_7_6(sandbox):
    """REDCap 15.7.6 (source): without both rights, 400 and api_135, before any other check."""
    _two_records(sandbox)
    weak = sandbox.add_token("autoid", delete=False)
    form = {"token": weak, "format": "json", "content": "record", "action": "delete"}
    answer = requests.post(sandbox.url, data={**form, "records": "1"}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("Insufficient user privileges")
    assert "'Delete Records' privileges" in answer.json()["error"]
    assert len(sandbox.rows("autoid")) == 2
