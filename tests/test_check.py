"""``autoid check``: reaches every database and describes the auto-ID projects."""

import re

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
    # project info x4; version, the delete right, REDCap's clock (probe written, measured,
    # deleted); projects, AutoID table and the look-back window's transfer requests, each a
    # names-only export and one chunk
    # (the bisection takes 6 or 7 requests, by the offset)
    assert demo_sandbox.total_requests() - (4 + 2 + 2 + 2 * 3) in (6, 7)
    assert "REDCap's clock: ok" in out and "AutoID token may delete records: yes" in out


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
    assert "reports folder: FAILED" in out and "lock file: ok" in out


def test_check_refuses_the_lock_file_a_run_refuses_and_says_the_runs_words(
    demo_sandbox, tmp_path, capsys
):
    """Issue 24, item 3: with lock_file in a folder others may write (like /tmp), check said
    "lock folder: ok" and exited 0 while every run exited 2. check runs the run's own check."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    config = demo_sandbox.write_kit_files(tmp_path, reports_dir=tmp_path / "reports")
    text = config.read_text()
    config.write_text(re.sub(r"lock_file = .*", f'lock_file = "{shared}/autoid.lock"', text))
    assert main(["check", "--config", str(config)]) == ExitStatus.FAILED
    out = capsys.readouterr().out
    assert f"lock file: FAILED: lock folder {shared} can be written by other users" in out
    assert main(["run", "--config", str(config), "--quiet"]) == ExitStatus.CONFIG
    assert f"lock folder {shared} can be written by other users" in capsys.readouterr().err


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


def test_check_accepts_a_good_email_table(demo_sandbox, smtp_server, tmp_path, capsys):
    _, port = smtp_server()  # check now opens the mail session (nothing is sent)
    config = demo_sandbox.write_kit_files(tmp_path)
    good = EMAIL.replace('"smtp.example.org"', f'"127.0.0.1"\nsmtp_port = {port}')
    config.write_text(config.read_text() + good + 'security = "none"\n')
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


def _zone(config, zone: str) -> None:
    """Set (or change) ``[run] server_timezone`` in a sandbox-written config."""
    lines = [line for line in config.read_text().splitlines() if "server_timezone" not in line]
    at = lines.index("[run]") + 1
    config.write_text("\n".join([*lines[:at], f'server_timezone = "{zone}"', *lines[at:]]) + "\n")


def test_check_fails_on_a_server_timezone_8_hours_ahead_and_names_the_right_one(
    sandbox_factory, tmp_path, capsys
):
    sb = sandbox_factory(seed="demo", timezone="Europe/Paris")  # REDCap's PHP date.timezone
    config = sb.write_kit_files(tmp_path)
    _zone(config, "Asia/Tokyo")  # 8 hours ahead of Paris in winter, 7 in summer
    rows = sb.rows("autoid")
    assert main(["check", "--config", str(config)]) == ExitStatus.FAILED
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("REDCap's clock:"))
    assert line.startswith("REDCap's clock: FAILED: REDCap's clock is UTC+0")
    assert "server_timezone (Asia/Tokyo)" in line and '"Europe/Paris"' in line
    assert sb.rows("autoid") == rows  # the probe record is deleted again

    _zone(config, "Europe/Paris")  # the advice, followed
    assert main(["check", "--config", str(config)]) == ExitStatus.OK
    assert "REDCap's clock: ok: REDCap's clock is UTC+0" in capsys.readouterr().out


def test_check_behind_redcaps_clock_passes_with_a_warning(sandbox_factory, tmp_path, capsys):
    sb = sandbox_factory(seed="demo", timezone="Asia/Tokyo")
    config = sb.write_kit_files(tmp_path)
    _zone(config, "UTC")  # behind: reads only get wider, so it is not a failure
    assert main(["check", "--config", str(config)]) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "REDCap's clock: ok: REDCap's clock is UTC+09:00 but [run] server_timezone" in out
    assert "9 h behind" in out and '"Asia/Tokyo"' in out


def test_check_finds_a_token_without_the_delete_right_and_keeps_one_probe_record(
    demo_sandbox, tmp_path, capsys
):
    config = demo_sandbox.write_kit_files(tmp_path)
    (tmp_path / "tokens" / "autoid.token").write_text(
        demo_sandbox.add_token("autoid", delete=False)
    )
    rows = demo_sandbox.rows("autoid")
    for _ in range(2):  # the probe record is rewritten under its one name, never a second one
        assert main(["check", "--config", str(config)]) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "AutoID token may delete records: no" in out and "[lease] delete = false" in out
    kept = [r for r in demo_sandbox.rows("autoid") if r not in rows]
    assert [r["record_id"] for r in kept] == ["autoid-kit-clock"]
    assert kept[0]["autoid_project_name"] == "[autoid-kit:clock]"
    assert "auto-ID projects: 6" in out  # the probe's reserved name is never a project


def test_check_names_a_database_in_development_status(demo_sandbox, tmp_path, capsys):
    from autoid_lib.check import _status

    assert _status({"in_production": 1}) == "production"
    assert "50 records" in _status({"in_production": 0})
    config = demo_sandbox.write_kit_files(tmp_path)
    assert main(["check", "--config", str(config)]) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "REDCap autoid: ok ('" in out and ", production)" in out
    assert "REDCap version: " in out


def test_check_warns_about_a_database_redcap_keeps_in_development(
    sandbox_factory, tmp_path, capsys
):
    """REDCap 15.7.6 refuses imports past 50 records in Development status: check says so for
    the database the sandbox keeps in development, as REDCap's project info reports it."""
    sb = sandbox_factory(seed="demo", status={"autoid": "development"})
    config = sb.write_kit_files(tmp_path)
    main(["check", "--config", str(config)])
    out = capsys.readouterr().out
    assert "REDCap autoid is in Development status" in out and "50 records" in out
    (incoming,) = [line for line in out.splitlines() if line.startswith("REDCap incoming:")]
    assert incoming.endswith(", production)")


def test_check_names_the_project_of_a_misconfiguration_and_an_empty_pattern(
    sandbox, tmp_path, capsys
):
    """Issue 24, item 3: "auto-ID is on but project_autoid_aetitle is empty" named no project,
    and an empty pattern read "empty pattern at position 0"."""
    from scenarios import project

    sandbox.add_rows("projects", [project("1", "NOTITLE", "", r"N\d{3}")])
    sandbox.add_rows("projects", [project("2", "NOPATTERN", "NOPAT_AE", "")])
    main(["check", "--config", str(sandbox.write_kit_files(tmp_path))])
    out = capsys.readouterr().out
    assert "! NOTITLE: auto-ID is on but project_autoid_aetitle is empty" in out
    assert "NOPATTERN: AE title NOPAT_AE, no pattern — project_patient_naming is empty" in out
    assert "position 0" not in out


def test_check_tries_the_mail_server_and_the_metrics_folder_a_run_would_use(
    demo_sandbox, smtp_server, tmp_path, capsys, monkeypatch
):
    """Issue 24, item 3: check did not try the SMTP server, the metrics folder or the ping a
    run would use. It now opens the mail session as a run does (nothing is sent), checks the
    metrics file's folder without creating it, and names the ping without calling it."""
    inbox, port = smtp_server()
    config = demo_sandbox.write_kit_files(tmp_path)
    monkeypatch.setenv("AUTOID_PING_URL", "http://127.0.0.1:9/ping")
    extra = (
        f'\n[email]\nsmtp_host = "127.0.0.1"\nsmtp_port = {port}\nsecurity = "none"\n'
        'sender = "autoid@example.org"\nrecipients = ["ops@example.org"]\n'
        f'[monitoring]\ntextfile = "{tmp_path}/absent/autoid.prom"\n'
        'ping_url = "env:AUTOID_PING_URL"\n'
    )
    config.write_text(config.read_text() + extra)
    assert main(["check", "--config", str(config)]) == ExitStatus.FAILED
    out = capsys.readouterr().out
    assert f"mail server: ok (127.0.0.1:{port} (none); nothing sent)" in out
    assert inbox.messages() == []
    assert f"metrics folder: FAILED: {tmp_path}/absent does not exist" in out
    assert not (tmp_path / "absent").exists()
    assert "ping: configured (env:AUTOID_PING_URL); not called by check" in out
    (tmp_path / "absent").mkdir()
    config.write_text(config.read_text().replace(f"smtp_port = {port}", "smtp_port = 9"))
    assert main(["check", "--config", str(config)]) == ExitStatus.FAILED
    out = capsys.readouterr().out
    assert "mail server: FAILED: cannot reach 127.0.0.1:9" in out
    assert f"metrics folder: ok ({tmp_path}/absent)" in out
