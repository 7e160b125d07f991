"""Security: secrets stay with the kit, nothing readable by other users, hostile answers bounded.

Each test runs the real thing: a real generator program, real local HTTP servers, real files.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import time

import pytest
from hostile import HostileServer

from autoid_lib.config import load_settings
from autoid_lib.errors import ConfigError, ExternalGeneratorError
from autoid_lib.ids.generate import ExternalGenerator

TOKEN = "0123456789ABCDEF0123456789ABCDEF"


# --- the external generator's environment ---------------------------------------------------


def _env_dumping_generator(tmp_path) -> list[str]:
    """A generator that writes its whole environment to env.json, then answers P_1."""
    script = tmp_path / "gen.py"
    script.write_text(
        textwrap.dedent(
            f"""\
            import json, os
            json.dump(dict(os.environ), open({str(tmp_path / "env.json")!r}, "w"))
            print("P_1")
            """
        )
    )
    return [sys.executable, str(script), "-r", "{pattern}", "-e", "{exclusion_file}"]


def test_the_generator_gets_no_secret_only_the_allow_list(tmp_path, monkeypatch):
    secrets = {
        "AUTOID_TOKEN_PROJECTS": TOKEN,
        "AUTOID_HASH_KEY": "k" * 40,
        "AUTOID_SMTP_PASSWORD": "smtp-secret",
        "SITE_TOKEN_FOR_SOMETHING": "site-secret",  # not listed, so not passed either
        "AUTOID_LOCK_HELD_BY": "1:/x",
    }
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GEN_ID_HOME", "/opt/gen")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    command = _env_dumping_generator(tmp_path)
    generator = ExternalGenerator(command, env_names=("GEN_ID_HOME", "AUTOID_TOKEN_PROJECTS"))
    assert generator.generate_ids("P_[1-3]", []) == ["P_1"]
    seen = json.loads((tmp_path / "env.json").read_text())
    assert not set(secrets) & set(seen)
    assert not any(value in seen.values() for value in secrets.values())
    assert seen["GEN_ID_HOME"] == "/opt/gen" and seen["LC_ALL"] == "C.UTF-8"
    assert seen["PATH"] == os.environ["PATH"]
    allowed = {"PATH", "LANG", "LANGUAGE", "HOME", "TMPDIR", "TZ", "USER", "LOGNAME", "GEN_ID_HOME"}
    # the interpreter itself may add a few (e.g. LC_CTYPE on some systems); nothing else
    assert {name for name in seen if not name.startswith("LC_")} <= allowed | {"PWD"}


def test_a_pattern_starting_with_a_dash_is_not_passed_as_an_option(tmp_path):
    generator = ExternalGenerator(_env_dumping_generator(tmp_path))
    with pytest.raises(ExternalGeneratorError, match="starts with '-'"):
        generator.generate_ids("-rf", [])
    assert not (tmp_path / "env.json").exists()


def _config(tmp_path, monkeypatch, run_lines: str) -> os.PathLike:
    for name in ("PROJECTS", "INCOMING", "AUTOID"):
        monkeypatch.setenv(f"AUTOID_TOKEN_{name}", TOKEN)
    monkeypatch.setenv("SITE_KEY", "k" * 40)
    path = tmp_path / "autoid.toml"
    path.write_text(
        textwrap.dedent(
            """\
            [redcap]
            url = "https://redcap.example.org/api/"
            [redcap.tokens]
            projects = "env:AUTOID_TOKEN_PROJECTS"
            incoming = "env:AUTOID_TOKEN_INCOMING"
            autoid = "env:AUTOID_TOKEN_AUTOID"
            [run]
            lock_file = "run.lock"
            """
        )
        + run_lines
    )
    return path


def test_the_config_refuses_to_pass_a_secret_to_the_generator(tmp_path, monkeypatch):
    ok = _config(tmp_path, monkeypatch, 'external_generator_env = ["GEN_ID_HOME"]\n')
    assert load_settings(ok).run.external_generator_env == ("GEN_ID_HOME",)
    for line in (
        'external_generator_env = ["AUTOID_TOKEN_AUTOID"]',
        'hash = "hmac-sha256"\nhash_key = "env:SITE_KEY"\nexternal_generator_env = ["SITE_KEY"]',
        'external_generator_env = "GEN_ID_HOME"',
    ):
        with pytest.raises(ConfigError, match="external_generator_env"):
            load_settings(_config(tmp_path, monkeypatch, line + "\n"))


# --- hostile REDCap answers -------------------------------------------------------------------


def _kit_config(tmp_path, url: str, extra: str = "") -> tuple[str, dict]:
    """A config whose four databases live at ``url``; the environment with the tokens."""
    path = tmp_path / "autoid.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [redcap]
            url = "{url}"
            timeout_s = 2
            read_retries = 0
            {extra}
            [redcap.tokens]
            projects = "env:AUTOID_TOKEN_PROJECTS"
            incoming = "env:AUTOID_TOKEN_INCOMING"
            autoid = "env:AUTOID_TOKEN_AUTOID"
            [run]
            lock_file = "state/run.lock"
            reports_dir = "reports"
            """
        )
    )
    env = {
        **os.environ,
        **{f"AUTOID_TOKEN_{db}": TOKEN for db in ("PROJECTS", "INCOMING", "AUTOID")},
    }
    return str(path), env


def _autoid(
    args: list[str], env: dict, timeout: float = 60
) -> tuple[subprocess.CompletedProcess, float, int]:
    """Run the real command line; (process, seconds, peak memory of the child in MB)."""
    code = (
        "import sys, time\n"
        "from autoid_lib.cli.main import main\n"
        "start = time.monotonic()\n"
        "try:\n    status = main(sys.argv[1:])\n"
        "finally:\n"
        # VmHWM, not ru_maxrss: the latter keeps the forking parent's size across exec
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
        "    peak = int(hwm.split()[1]) // 1024\n"
        "    print(f'@@ {time.monotonic() - start:.2f} {peak}', file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, *args], env=env, text=True,
                          capture_output=True, timeout=timeout)  # fmt: skip
    seconds, peak = proc.stderr.rsplit("@@ ", 1)[1].split()
    return proc, float(seconds), int(peak)


@pytest.fixture
def hostile():
    servers: list[HostileServer] = []

    def start(behaviour: str, **options) -> HostileServer:
        servers.append(HostileServer(behaviour, **options))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("status", [307, 308, 302])
def test_a_redirect_sends_the_other_port_nothing_and_names_where_it_pointed(
    tmp_path, hostile, status
):
    elsewhere = hostile("silent")
    server = hostile("redirect", status=status, location=elsewhere.url)
    config, env = _kit_config(tmp_path, server.url)
    proc, _, _ = _autoid(["check", "--config", config], env)
    assert proc.returncode == 1
    assert f"the server answered {status}, a redirect to {elsewhere.url}" in proc.stdout
    assert "set [redcap] url" in proc.stdout
    assert elsewhere.connections == 0 and elsewhere.received == b""
    assert server.connections == 1  # the other databases on that server are not tried again
    assert TOKEN not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("command", "http10"),
    [("check", False), ("run", False)] + [(c, True) for c in ("check", "run", "audit", "repair")],
)
def test_a_dripping_server_ends_the_command_within_the_timeout(tmp_path, hostile, command, http10):
    """Every entry point that asks REDCap keeps the total deadline, also against an HTTP/1.0
    answer of no declared length, which ``http.client`` reads from a socket it has detached
    from the connection (a hostile server held ``check`` for 150 s with timeout_s = 5)."""
    # every byte well within the 2 s per-read timeout
    server = hostile("drip", every_s=0.2, http10=http10)
    config, env = _kit_config(tmp_path, server.url)
    proc, seconds, _ = _autoid([command, "--config", config], env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no complete answer within 3 s" in proc.stdout + proc.stderr
    # the message shows the deadline fired; this bound only tells "ended" from "dripped on for
    # minutes" (a loaded 2-core CI machine took 9 s for the 3 s deadline plus start-up)
    assert seconds < 60
    assert server.connections == 1


def test_a_dripping_server_ends_explores_reads_within_the_timeout(tmp_path, hostile, monkeypatch):
    from autoid_lib.config import load_settings
    from autoid_lib.errors import RedcapError
    from autoid_lib.explore.widgets import ExploreSession

    server = hostile("drip", every_s=0.2, http10=True)
    config, _ = _kit_config(tmp_path, server.url)
    for name in ("PROJECTS", "INCOMING", "AUTOID"):
        monkeypatch.setenv(f"AUTOID_TOKEN_{name}", TOKEN)
    session = ExploreSession(load_settings(config))
    started = time.monotonic()
    with pytest.raises(RedcapError, match="no complete answer within 3 s"):
        session.projects()
    assert time.monotonic() - started < 30  # dripped on, it would take 40 s per request


@pytest.mark.parametrize("declared", [True, False])
def test_a_huge_answer_fails_closed_in_bounded_memory(tmp_path, hostile, declared):
    server = hostile("flood", megabytes=200, declared=declared)
    config, env = _kit_config(tmp_path, server.url, "max_answer_mb = 5")
    proc, _, peak_mb = _autoid(["check", "--config", config], env)
    assert proc.returncode == 1
    assert "answer larger than 5 MB; see [redcap] max_answer_mb" in proc.stdout
    assert peak_mb < 150  # the answer alone would be 200 MB, parsed several times that


def test_a_deeply_nested_answer_fails_with_one_line(tmp_path, hostile):
    server = hostile("nested", depth=200_000)
    config, env = _kit_config(tmp_path, server.url)
    proc, _, _ = _autoid(["check", "--config", config], env)
    assert proc.returncode == 1
    assert "export project info failed: answer nests too deeply to parse" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_an_escape_sequence_in_a_redcap_error_reaches_no_output_raw(tmp_path, hostile):
    forged = "\x1b[2J\x1b[31mall fine\r\n2026-01-01 INFO forged line\x07"
    server = hostile("error", message=forged)
    config, env = _kit_config(tmp_path, server.url)
    proc, _, _ = _autoid(["check", "--config", config], env)
    assert proc.returncode == 1
    out = proc.stdout + proc.stderr
    assert "\\x1b[2J\\x1b[31mall fine\\r\\n2026-01-01 INFO forged line\\x07" in proc.stdout
    assert not any(c in out.replace("\n", "") for c in "\x1b\r\x07")


# --- the notebook kernel's transport ----------------------------------------------------------

_PROBE = """\
import json, os, stat, psutil
from ipykernel.connect import get_connection_file
connection_file = get_connection_file()
info = json.load(open(connection_file))
folder = os.path.dirname(info["ip"])
json.dump({
    "transport": info["transport"],
    "ip": info["ip"],
    "connection_file": connection_file,
    "folder_mode": stat.S_IMODE(os.stat(folder).st_mode),
    "inet": [(c.laddr.ip, c.laddr.port, c.status, c.raddr or None)
             for c in psutil.Process().net_connections(kind="inet")],
    "iopub_pipe_port": get_ipython().kernel.iopub_thread._pipe_port,
    "sockets": sorted(os.listdir(folder)),
}, open(probe, "w"))
"""


def test_the_run_kernel_listens_on_no_tcp_port_only_in_a_private_folder(tmp_path):
    from tiny_notebooks import write_notebook

    from autoid_lib.records.notebook_run import execute_notebook

    notebook = write_notebook(tmp_path / "probe.ipynb", 'probe = ""\noutput_dir = ""', _PROBE)
    probe = tmp_path / "probe.json"
    record = execute_notebook(
        notebook, {"probe": str(probe)}, mode="dry", reports_dir=tmp_path / "reports",
        progress=False,
    )  # fmt: skip
    assert record.summary["error"] is None or record.summary["error"]["step"] != "notebook"
    seen = json.loads(probe.read_text())
    assert seen["transport"] == "ipc"
    # ipykernel's one TCP listener is its IOPub *pipe*: a PULL socket for forked children that
    # only receives, and drops what lacks its random key; nothing can be read from it
    assert seen["inet"] == [["127.0.0.1", seen["iopub_pipe_port"], "LISTEN", None]]
    assert seen["folder_mode"] & 0o777 == 0o700  # (jupyter_client adds the sticky bit)
    folder = os.path.dirname(seen["ip"])
    assert os.path.isabs(seen["ip"]) and len(seen["ip"]) < 80
    assert os.path.dirname(seen["connection_file"]) == folder  # the signing key is in there too
    assert len([name for name in seen["sockets"] if name.startswith("k-")]) == 5
    assert not os.path.exists(folder)  # removed after the run


# --- the lock, and the files the kit writes ---------------------------------------------------


def test_a_symlink_as_lock_file_is_refused_and_its_target_untouched(tmp_path):
    from autoid_lib.lock import run_lock

    private = tmp_path / "state"
    private.mkdir(mode=0o700)
    target = tmp_path / "precious.txt"
    target.write_text("keep me\n")
    (private / "run.lock").symlink_to(target)
    with pytest.raises(ConfigError, match="is a symbolic link"), run_lock(private / "run.lock"):
        pass
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize("problem", ["shared folder", "writable file", "another owner"])
def test_an_unsafe_lock_is_refused(tmp_path, problem):
    from autoid_lib.lock import run_lock

    folder = tmp_path / "state"
    folder.mkdir(mode=0o700)
    lock = folder / "run.lock"
    if problem == "shared folder":
        folder.chmod(0o1777)  # like /var/lock or /tmp
        match = "can be written by other users; set \\[run\\] lock_file"
    else:
        lock.write_text("")
        if problem == "writable file":
            lock.chmod(0o666)
            match = "can be written by other users; refused"
        else:
            if os.geteuid() != 0:
                pytest.skip("needs root to give a file to another user")
            os.chown(lock, 65534, 65534)
            match = "belongs to another user"
    with pytest.raises(ConfigError, match=match), run_lock(lock):
        pass


def test_the_lock_folder_is_created_private_under_umask_022(tmp_path):
    from autoid_lib.lock import run_lock

    old = os.umask(0o022)
    try:
        with run_lock(tmp_path / "new" / "state" / "run.lock"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "state" / "run.lock").stat().st_mode) == 0o600


def _hold_lock(lock) -> subprocess.Popen:
    """Another process holding the run lock (as a hung run or a hostile user would)."""
    code = (
        "import sys, time\nfrom autoid_lib.lock import run_lock\n"
        "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_held_past_any_run_is_a_mailed_failure_not_a_silent_3(
    sandbox, smtp_server, tmp_path, capsys
):
    from test_run_email import autoid_run, email_table, kit_config

    from autoid_lib.status import ExitStatus

    inbox, port = smtp_server()
    config = kit_config(sandbox, tmp_path, email_table(port, send='"always"'))
    lock = load_settings(config).run.lock_file
    holder = _hold_lock(lock)
    try:
        assert autoid_run("--config", str(config), "--email", "--quiet") == ExitStatus.LOCKED
        assert not (tmp_path / "reports").exists() and inbox.messages() == []  # an overlap
        two_hours_ago = time.time() - 7200
        os.utime(lock, (two_hours_ago, two_hours_ago))  # as if taken two hours ago
        status = autoid_run("--config", str(config), "--email", "--quiet")
    finally:
        holder.kill()
        holder.wait()
    assert status == ExitStatus.FAILED
    err = capsys.readouterr().err
    assert "run failed at lock: the lock" in err and "held for 120 min" in err
    [folder] = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"]["step"] == "lock"
    assert summary["email"]["sent"] is True
    [message] = inbox.messages()
    assert "FAILED" in message["Subject"]
    assert sandbox.total_requests() == 0


def test_files_the_run_writes_are_private_under_umask_022(demo_sandbox, tmp_path):
    from test_run_email import kit_config

    from autoid_lib.records.notebook_run import execute_run

    settings = load_settings(kit_config(demo_sandbox, tmp_path))
    old = os.umask(0o022)
    try:
        record = execute_run(settings, detail="full", progress=False)
    finally:
        os.umask(old)
    assert record.summary["error"] is None
    reports = tmp_path / "reports"
    found = [reports, *reports.rglob("*")]
    assert len(found) >= 7  # the folder, index.html, the run folder and its files
    loose = {
        str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in found
        if stat.S_IMODE(p.stat().st_mode) & 0o077
    }
    assert loose == {}
    names = {p.name for p in found}
    assert {"report.html", "summary.json", "run.ipynb", "run.log", "index.html"} <= names
    assert not [n for n in names if n.endswith(".partial")]


def test_a_planted_symlink_is_replaced_never_written_through(tmp_path):
    from autoid_lib.private_files import write_private

    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    (tmp_path / "index.html").symlink_to(target)
    for name in (".index.html.partial", ".summary.json.partial"):  # the old fixed names
        (tmp_path / name).symlink_to(target)
    write_private(tmp_path / "index.html", "<p>new</p>")
    assert target.read_text() == "keep me\n"
    assert not (tmp_path / "index.html").is_symlink()
    assert (tmp_path / "index.html").read_text() == "<p>new</p>"
    assert stat.S_IMODE((tmp_path / "index.html").stat().st_mode) == 0o600


def test_summary_detail_verification_names_no_study(demo_sandbox, tmp_path):
    """A verification problem names the study and its pseudonym; summary.json at detail =
    summary (which feeds the mail) keeps the problem but not which study."""
    from test_run import settings_for

    from autoid_lib.apply import apply_plan, verify_plan
    from autoid_lib.records.notebook_run import without_study_refs
    from autoid_lib.redcap.gateway import RedcapGateway
    from autoid_lib.run import run_autoid

    settings = settings_for(demo_sandbox, tmp_path)
    planned = run_autoid(settings, dry_run=True).plan
    target = planned.transfers[0]
    demo_sandbox.add_rows("incoming", [{
        "study_instance_uid": target.study_uid, "redcap_repeat_instrument": "transfers",
        "redcap_repeat_instance": str(target.instance), "transfer_project_name": "MANUAL",
    }])  # fmt: skip
    gateway = RedcapGateway(settings.redcap)
    apply_plan(planned, gateway)
    [problem] = verify_plan(planned, gateway)
    assert target.study_uid[-8:] in problem  # the full report keeps it
    [public] = without_study_refs([problem])
    assert target.study_uid[-8:] not in public and "…" not in public
    assert public.startswith(f"{target.project_name}: a study should hold one transfer request")


# --- the sandbox ------------------------------------------------------------------------------


def test_the_sandbox_database_is_private_and_refuses_a_symlink(tmp_path):
    from autoid_lib.sandbox.store import Store

    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "sandbox.db")
        store.close()
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes["sandbox.db"] == 0o600 and all(m & 0o077 == 0 for m in modes.values())
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    (tmp_path / "link.db").symlink_to(target)
    with pytest.raises(ValueError, match="symbolic link"):
        Store(tmp_path / "link.db")
    assert target.read_text() == "keep me\n"


# --- terminal and log injection ---------------------------------------------------------------


def test_a_project_name_with_escapes_is_printed_escaped_by_check(sandbox, tmp_path, capsys):
    from autoid_lib.cli.main import main

    name = "Evil\x1b[2J\r\n2026-01-01 autoid.run: all fine"
    sandbox.add_rows("projects", [{
        "record_id": "9", "project_name": name, "project_use_autoid": "1",
        "project_autoid_aetitle": "EVIL", "project_patient_naming": "E[0-9]{3}",
    }])  # fmt: skip
    main(["check", "--config", str(sandbox.write_kit_files(tmp_path))])
    out = capsys.readouterr().out
    assert "Evil\\x1b[2J\\r\\n2026-01-01 autoid.run: all fine" in out
    assert "\x1b" not in out and "\r" not in out


def test_log_lines_cannot_be_forged(tmp_path):
    import logging

    from autoid_lib.safe_text import PrintableFormatter

    stream = open(tmp_path / "run.log", "w")  # noqa: SIM115
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("autoid.test_forge")
    logger.addHandler(handler)
    try:
        logger.warning("REDCap said %s", "no\x1b[8m\nINFO autoid.run: run succeeded\rX")
    finally:
        logger.removeHandler(handler)
        stream.close()
    lines = (tmp_path / "run.log").read_text().split("\n")
    assert lines[0].startswith("WARNING autoid.test_forge: REDCap said no\\x1b[8m")
    assert lines[1] == "    INFO autoid.run: run succeeded\\rX"  # indented: visibly not ours


# --- hardening --------------------------------------------------------------------------------


def test_a_short_hash_key_is_refused(tmp_path, monkeypatch):
    path = _config(tmp_path, monkeypatch, 'hash = "hmac-sha256"\nhash_key = "env:SHORT_KEY"\n')
    monkeypatch.setenv("SHORT_KEY", "k" * 31)
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        load_settings(path)
    monkeypatch.setenv("SHORT_KEY", "k" * 32)
    assert load_settings(path).run.hasher().scheme == "hmac-sha256"


def test_check_warns_about_sha512_and_unverified_tls(demo_sandbox, tmp_path, capsys):
    from autoid_lib.cli.main import main

    config = demo_sandbox.write_kit_files(tmp_path)
    config.write_text(config.read_text().replace("verify = true", "verify = false"))
    main(["check", "--config", str(config)])
    out = capsys.readouterr().out
    assert "! hash = 'sha512' can be reversed by hashing every possible national ID" in out
    assert "! [redcap] verify = false: TLS certificates are NOT checked" in out


def test_gen_id_creates_its_exclusion_file_private(tmp_path):
    old = os.umask(0o022)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "autoid_lib.cli", "gen-id", "-r", "P[0-9]{3}", "-e",
             str(tmp_path / "used.txt"), "-a"],
            capture_output=True, text=True,
        )  # fmt: skip
    finally:
        os.umask(old)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE((tmp_path / "used.txt").stat().st_mode) == 0o600
