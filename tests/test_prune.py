"""Report retention (``autoid prune``) and the shipped scheduling files."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from autoid_lib.cli import prune as prune_cli
from autoid_lib.errors import ConfigError
from autoid_lib.mail.settings import SEND_POLICIES, EmailSettings
from autoid_lib.records.folders import RUN_MODES, RunFolder, new_run_folder, parse_run_folder
from autoid_lib.records.prune import prune_reports
from autoid_lib.status import ExitStatus

NOW = datetime(2026, 11, 28, 6, 30, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

OLD = ["20261001T000000Z-live", "2026-11-01T06-00-00Z-live", "20261020T120000Z-dry"]
RECENT = ["20261125T000000Z-live", "20261128T062500Z-live", "20261127T000000Z-dry"]
NOT_RUNS = ["notes", "20261001T000000Z-live.bak", "20261301T000000Z-live", "old-live"]


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    for name in OLD + RECENT + NOT_RUNS:
        (root / name).mkdir(parents=True)
        (root / name / "summary.json").write_text("{}")
    (root / "index.html").write_text("<html></html>")
    (root / "20261002T000000Z-live").symlink_to(root / "notes")  # a link is never followed
    return root


class IndexSpy:
    def __init__(self):
        self.calls = []

    def __call__(self, reports_dir):
        self.calls.append(Path(reports_dir))


def names(paths) -> set[str]:
    return {Path(p).name for p in paths}


def test_prune_removes_only_old_run_folders_and_rebuilds_the_index(reports):
    spy = IndexSpy()
    removed = prune_reports(reports, keep_days=7, now=NOW, rebuild_index=spy)

    assert names(removed) == set(OLD)
    left = names(reports.iterdir())
    assert left == set(RECENT + NOT_RUNS) | {"index.html", "20261002T000000Z-live"}
    assert (reports / "notes" / "summary.json").exists()  # the symlink target is untouched
    assert spy.calls == [reports]


def test_dry_run_removes_nothing_and_leaves_the_index(reports):
    spy = IndexSpy()
    before = names(reports.iterdir())
    would = prune_reports(reports, keep_days=7, now=NOW, dry_run=True, rebuild_index=spy)
    assert names(would) == set(OLD)
    assert names(reports.iterdir()) == before
    assert spy.calls == []


def test_newest_run_of_each_mode_is_kept_however_old(tmp_path):
    for name in ("20250101T000000Z-live", "20250102T000000Z-live", "20250103T000000Z-dry"):
        (tmp_path / name).mkdir()
    spy = IndexSpy()
    removed = prune_reports(tmp_path, keep_days=30, now=NOW, rebuild_index=spy)
    assert names(removed) == {"20250101T000000Z-live"}
    assert names(tmp_path.iterdir()) == {"20250102T000000Z-live", "20250103T000000Z-dry"}


def test_nothing_to_remove_does_not_touch_the_index(reports):
    spy = IndexSpy()
    assert prune_reports(reports, keep_days=400, now=NOW, rebuild_index=spy) == []
    assert spy.calls == []


def test_missing_index_writer_is_logged_not_fatal(reports, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "autoid_lib.records.index", None)  # import fails
    with caplog.at_level(logging.INFO, logger="autoid.prune"):
        removed = prune_reports(reports, keep_days=7, now=NOW)
    assert names(removed) == set(OLD)
    assert "index not rebuilt" in caplog.text


def test_leftovers_of_an_interrupted_prune_are_finished(reports):
    leftover = reports / ".pruning-20260901T000000Z-live"
    leftover.mkdir()
    foreign = reports / ".pruning-something-else"
    foreign.mkdir()
    prune_reports(reports, keep_days=7, now=NOW, rebuild_index=IndexSpy())
    assert not leftover.exists() and foreign.exists()


@pytest.mark.parametrize("keep_days", [0, -1, 1.5, True])
def test_keep_days_must_be_a_positive_whole_number(reports, keep_days):
    with pytest.raises(ConfigError, match="keep_days"):
        prune_reports(reports, keep_days=keep_days, now=NOW, rebuild_index=IndexSpy())


def test_missing_reports_dir_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--reports-dir"):
        prune_reports(tmp_path / "nope", keep_days=7, now=NOW, rebuild_index=IndexSpy())


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("20261128T063000Z-live", RunFolder(datetime(2026, 11, 28, 6, 30, tzinfo=UTC), "live")),
        ("2026-11-28T06-30-00Z-dry", RunFolder(datetime(2026, 11, 28, 6, 30, tzinfo=UTC), "dry")),
        (
            "2026-11-28T063000.250Z-live",
            RunFolder(datetime(2026, 11, 28, 6, 30, 0, 250000, UTC), "live"),
        ),
        ("20261128_063000-live", RunFolder(datetime(2026, 11, 28, 6, 30, tzinfo=UTC), "live")),
        ("20261128T063000Z-wet", None),
        ("20261128T063000Z-live-copy", None),
        ("20261340T063000Z-live", None),
        ("index.html", None),
    ],
)
def test_run_folder_names(name, expected):
    assert parse_run_folder(name) == expected


def _cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autoid prune")
    prune_cli.add_arguments(parser)
    return parser.parse_args(argv)


def test_run_folders_are_created_only_for_the_modes_prune_reads(tmp_path):
    """A folder prune, the index and the mail could not parse would never be pruned or
    compared with; notebook_run refuses to create one."""
    assert RUN_MODES == ("live", "dry", "audit", "repair")
    for mode in RUN_MODES:
        folder = new_run_folder(tmp_path, mode, datetime.now(UTC))
        assert parse_run_folder(folder.name).mode == mode
    for mode in ("weekly", "test", "Live", "live-dry"):
        with pytest.raises(ValueError, match="live, dry, audit"):
            new_run_folder(tmp_path, mode, datetime.now(UTC))
    folders = [p for p in tmp_path.iterdir() if p.is_dir()]  # beside them: run-sequence.json
    assert sorted(p.name.rpartition("-")[2] for p in folders) == sorted(RUN_MODES)


def test_cli_dry_run_lists_and_keeps(reports, capsys):
    status = prune_cli.run(
        _cli(["--reports-dir", str(reports), "--keep-days", "3650", "--dry-run"])
    )
    assert status == ExitStatus.OK
    assert "would remove 0 run folder(s) older than 3650 days" in capsys.readouterr().out


def test_cli_reports_a_bad_directory_as_configuration_error(tmp_path, capsys):
    status = prune_cli.run(_cli(["--reports-dir", str(tmp_path / "nope"), "--keep-days", "7"]))
    assert status == ExitStatus.CONFIG
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("days", ["0", "seven"])
def test_cli_rejects_bad_keep_days(days, tmp_path):
    with pytest.raises(SystemExit) as caught:
        _cli(["--reports-dir", str(tmp_path), "--keep-days", days])
    assert caught.value.code == ExitStatus.CONFIG


# --- the shipped scheduling files and their documentation cannot drift ----------------------


def _unit(name: str) -> dict[str, str]:
    return dict(
        line.split("=", 1)
        for line in (DEPLOY / name).read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )


def test_systemd_units_match_the_exit_statuses_and_schedule():
    service, timer = _unit("autoid.service"), _unit("autoid.timer")
    assert service["Type"] == "oneshot" and service["User"] == "autoid"
    assert service["SuccessExitStatus"] == str(int(ExitStatus.LOCKED))
    assert (
        "--email" in service["ExecStart"]
        and "--config /etc/autoid/autoid.toml" in service["ExecStart"]
    )
    for hardening in ("ProtectSystem", "ReadWritePaths", "PrivateTmp", "NoNewPrivileges"):
        assert hardening in service
    assert service["ProtectSystem"] == "strict"
    assert timer["OnCalendar"] == "*:0/5" and timer["Persistent"] == "true"
    assert "autoid prune" in _unit("autoid-prune.service")["ExecStart"]


def test_both_services_create_the_state_directory_alike():
    """Whichever unit runs first creates /var/lib/autoid: it must not be world-readable."""
    service, prune = _unit("autoid.service"), _unit("autoid-prune.service")
    for key in ("StateDirectory", "StateDirectoryMode", "UMask", "User", "Group"):
        assert prune.get(key) == service.get(key), key
    assert service["StateDirectoryMode"] == "0700"


def test_cron_runs_every_five_minutes_with_email_and_prunes_daily():
    lines = [
        line
        for line in (DEPLOY / "autoid.cron").read_text().splitlines()
        if line and not line.startswith("#") and "=" not in line.split()[0]
    ]
    run, prune = lines
    assert (
        run.startswith("*/5 * * * *")
        and "autoid run --config /etc/autoid/autoid.toml --email" in run
    )
    assert "autoid prune" in prune and "%" not in run + prune  # cron treats % as newline


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_accepts_the_units(tmp_path):
    for unit in DEPLOY.glob("autoid*.*"):
        if unit.suffix in (".service", ".timer"):
            text = unit.read_text().replace("/opt/autoid/.venv/bin/autoid", "/bin/true")
            (tmp_path / unit.name).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
    )
    problems = [line for line in done.stderr.splitlines() if "autoid" in line]
    assert not problems, done.stderr


def test_operations_doc_covers_every_email_key_policy_and_exit_status():
    doc = (ROOT / "docs" / "operations.md").read_text()
    for field in dataclasses.fields(EmailSettings):
        assert re.search(rf"\b{field.name}\b", doc), field.name
    for policy in SEND_POLICIES:
        assert f"`{policy}`" in doc
    for status in ExitStatus:
        assert f"| {int(status)} |" in doc
    assert "autoid prune --reports-dir" in doc
