"""``autoid check``: reaches every database and describes the auto-ID projects."""

from autoid_lib.cli.main import main
from autoid_lib.status import ExitStatus


def test_check_lists_projects_with_capacity_and_problems(demo_sandbox, tmp_path, capsys):
    config = demo_sandbox.write_kit_files(tmp_path)
    assert main(["check", "--config", str(config)]) == ExitStatus.OK
    out = capsys.readouterr().out
    for database in ("projects", "incoming", "autoid", "transfers"):
        assert f"REDCap {database}: ok" in out
    assert "SmallPilot: AE title SPILOT, pattern S[0-9]{2}" in out
    assert "widen the pattern soon" in out
    assert "auto-ID projects: 6" in out
    assert "  ! AE title CARDIO is used by 2 auto-ID projects" in out
    assert demo_sandbox.total_requests() == 4 + 2  # project info x4, projects, AutoID table


def test_check_names_a_refused_database_without_its_token(demo_sandbox, tmp_path, capsys):
    config = demo_sandbox.write_kit_files(tmp_path)
    token_file = tmp_path / "tokens" / "autoid.token"
    wrong = "F" * 32
    token_file.write_text(wrong)
    assert main(["check", "--config", str(config)]) == ExitStatus.FAILED
    out = capsys.readouterr().out
    assert "REDCap autoid: FAILED" in out and "You do not have permissions" in out
    assert wrong not in out and demo_sandbox.tokens["projects"] not in out


def test_check_with_a_broken_config_exits_2(tmp_path, capsys):
    (tmp_path / "autoid.toml").write_text("[redcap]\n")
    assert main(["check", "--config", str(tmp_path / "autoid.toml")]) == ExitStatus.CONFIG
    assert "autoid check:" in capsys.readouterr().err


def test_check_fails_when_the_reports_folder_cannot_be_written(demo_sandbox, tmp_path, capsys):
    config = demo_sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "file" / "reports")
    (tmp_path / "file").write_text("a file where a folder should be")
    assert main(["check", "--config", str(config)]) == ExitStatus.FAILED
    out = capsys.readouterr().out
    assert "reports folder: FAILED" in out and "lock folder: ok" in out
