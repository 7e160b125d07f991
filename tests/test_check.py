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
    assert "\n    runs out around " in out  # each project's forecast under its line
    assert "\n    no forecast: 0 new IDs" in out  # CardioB: nothing requested lately
    # project info x4; projects, AutoID table and the look-back window's transfer requests,
    # each a names-only export and one chunk
    assert demo_sandbox.total_requests() == 4 + 2 * 3


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


EMAIL = """
[email]
smtp_host = "smtp.example.org"
sender = "autoid@example.org"
recipients = ["ops@example.org"]
"""


def test_check_names_a_misspelt_email_key_and_the_known_ones(demo_sandbox, tmp_path, capsys):
    config = demo_sandbox.write_kit_files(tmp_path)
    config.write_text(config.read_text() + EMAIL + "recipient = 'pi@example.org'\n")
    assert main(["check", "--config", str(config)]) == ExitStatus.CONFIG
    err = capsys.readouterr().err
    assert "[email] recipient;" in err and "known keys: smtp_host, smtp_port" in err
    assert demo_sandbox.total_requests() == 0  # stopped before reaching REDCap


def test_check_names_a_badly_typed_email_value(demo_sandbox, tmp_path, capsys):
    config = demo_sandbox.write_kit_files(tmp_path)
    config.write_text(config.read_text() + EMAIL + "smtp_port = 'five-eight-seven'\n")
    assert main(["check", "--config", str(config)]) == ExitStatus.CONFIG
    assert "[email] smtp_port must be a port number" in capsys.readouterr().err


def test_check_accepts_a_good_email_table(demo_sandbox, tmp_path, capsys):
    config = demo_sandbox.write_kit_files(tmp_path)
    config.write_text(config.read_text() + EMAIL)
    assert main(["check", "--config", str(config)]) == ExitStatus.OK


def test_check_names_a_misspelt_key_in_every_table(demo_sandbox, tmp_path, capsys):
    from autoid_lib.config import KNOWN_KEYS

    original = demo_sandbox.write_kit_files(tmp_path).read_text() + EMAIL
    config = tmp_path / "typo.toml"
    for where in KNOWN_KEYS:
        header = f"[{where}]\n"
        if not where:
            text = "misspelt_key = 1\n" + original
        elif header in original:
            text = original.replace(header, header + "misspelt_key = 1\n")
        else:
            text = original + header + "misspelt_key = 1\n"
        config.write_text(text)
        assert main(["check", "--config", str(config)]) == ExitStatus.CONFIG, where
        err = capsys.readouterr().err
        assert "misspelt_key; known keys: " in err, (where, err)
