"""Each way a run fails names its cause and what to do: summary.json's error.kind, the stderr
outcome line, the report, the index. Real runs (``autoid run`` in-process, the real notebook)
against the sandbox; the wrong token's value never appears anywhere."""

from __future__ import annotations

import argparse
import json

import pytest
from stamped import unstamped

from autoid_lib.cli import run as run_cli
from autoid_lib.failures import CAUSES, FailureKind
from autoid_lib.records.folders import run_folders
from autoid_lib.status import ExitStatus

WRONG_TOKEN = "0123456789ABCDEF0123456789ABCDEF"


def autoid_run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="autoid run")
    run_cli.add_arguments(parser)
    return run_cli.run(parser.parse_args(list(argv)))


def kit_config(sb, tmp_path, **redcap):
    config = sb.write_kit_files(tmp_path / "kit", reports_dir=tmp_path / "reports")
    extra = "".join(f"\n{key} = {value}" for key, value in {"read_retries": 0, **redcap}.items())
    config.write_text(config.read_text().replace("timeout_s = 10\n", extra.lstrip("\n") + "\n"))
    return config


def failed_run(config, tmp_path, capsys) -> tuple[dict, str, str, str]:
    """(summary, stderr without time stamps, report.html, index.html) of a run that failed."""
    assert autoid_run("--config", str(config), "--quiet") == ExitStatus.FAILED
    err = unstamped(capsys.readouterr().err)
    ((folder, _),) = run_folders(tmp_path / "reports")
    summary = json.loads((folder / "summary.json").read_text())
    return (
        summary,
        err,
        (folder / "report.html").read_text(),
        (tmp_path / "reports" / "index.html").read_text(),
    )


def assert_named(kind: FailureKind, summary, err, report, index) -> None:
    cause = CAUSES[kind]
    assert summary["error"]["kind"] == kind.value
    assert summary["error"]["cause"] == cause.label and summary["error"]["action"] == cause.action
    assert len(err.strip().splitlines()) == 1 and f"what to do: {cause.action}" in err
    for page in (report, index):
        assert cause.label in page and cause.action.replace("'", "&#x27;")[:40] in page
    for text in (json.dumps(summary), err, report, index):
        assert WRONG_TOKEN not in text


def test_a_wrong_token_is_named_with_its_reference_never_its_value(demo_sandbox, tmp_path, capsys):
    config = kit_config(demo_sandbox, tmp_path)
    token_file = tmp_path / "kit" / "tokens" / "projects.token"
    token_file.write_text(WRONG_TOKEN)
    found = failed_run(config, tmp_path, capsys)
    assert_named(FailureKind.TOKEN_REFUSED, *found)
    assert f"file:{token_file}" in found[0]["error"]["message"]


def test_a_stopped_redcap_is_unreachable_and_names_its_host(demo_sandbox, tmp_path, capsys):
    config = kit_config(demo_sandbox, tmp_path)
    host = demo_sandbox.url.split("/")[2]
    demo_sandbox.stop()
    found = failed_run(config, tmp_path, capsys)
    assert_named(FailureKind.UNREACHABLE, *found)
    assert host in found[0]["error"]["message"]


def test_tls_to_a_plain_http_server_is_a_tls_failure(demo_sandbox, tmp_path, capsys):
    config = kit_config(demo_sandbox, tmp_path)
    config.write_text(config.read_text().replace('url = "http://', 'url = "https://'))
    assert_named(FailureKind.TLS, *failed_run(config, tmp_path, capsys))


def test_a_silent_redcap_times_out_and_names_timeout_s(demo_sandbox, tmp_path, capsys):
    config = kit_config(demo_sandbox, tmp_path, timeout_s=1)
    demo_sandbox.inject_fault("timeout", delay_s=3, times=None)
    found = failed_run(config, tmp_path, capsys)
    assert_named(FailureKind.TIMEOUT, *found)
    assert "timeout_s" in found[0]["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("oom", FailureKind.OUT_OF_MEMORY), ("http500", FailureKind.REDCAP_ERROR)],
)
def test_redcap_errors_and_out_of_memory_answers(demo_sandbox, tmp_path, capsys, fault, kind):
    config = kit_config(demo_sandbox, tmp_path, timeout_s=10)
    demo_sandbox.inject_fault(fault, database="autoid", action="export", times=None)
    assert_named(kind, *failed_run(config, tmp_path, capsys))


def test_failed_counts_read_as_a_dash_in_the_index_never_as_0(demo_sandbox, tmp_path, capsys):
    config = kit_config(demo_sandbox, tmp_path)
    demo_sandbox.stop()
    summary, _, _, index = failed_run(config, tmp_path, capsys)
    assert summary["status"] == "failed" and not summary["studies_in_window"]
    row = index.split("<tbody>")[1]
    assert '<td class="num">0</td>' not in row and '<td class="num">—</td>' in row
