"""``autoid init``: a commented autoid.toml that names every key with its real default, loads once
the tokens are set, and passes ``autoid check`` against a sandbox; the deploy files from package
data; nothing overwritten."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from autoid_lib.config import KNOWN_KEYS, load_settings
from autoid_lib.config_template import defaults, template
from autoid_lib.lease import lease_settings
from autoid_lib.mail.settings import email_settings_from_config
from autoid_lib.monitoring import monitoring_settings
from autoid_lib.status import ExitStatus

ROOT = Path(__file__).resolve().parent.parent
TOKENS = {"PROJECTS": "A" * 32, "INCOMING": "B" * 32, "AUTOID": "C" * 32}
SETTING = re.compile(r"^(# )?([a-z_]+) = ")
HEADER = re.compile(r"^(# )?\[([a-z.]+)\]")


def autoid(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autoid_lib.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def settings_in(text: str) -> dict[str, list[str]]:
    """``table`` → the keys written under it (commented out or not), in order."""
    found: dict[str, list[str]] = {}
    table = ""
    for line in text.splitlines():
        if header := HEADER.match(line):
            table = header.group(2)
            found[table] = []
        elif setting := SETTING.match(line):
            found[table].append(setting.group(2))
    return found


def with_defaults_uncommented(text: str, *, email: bool = False) -> str:
    """The template with every line that shows a default made live (``email``: [email] too)."""
    shown, table, lines = defaults(), "", []
    for line in text.splitlines():
        if header := HEADER.match(line):
            table = header.group(2)
            live = table != "email" or email
            lines.append(line[2:] if header.group(1) and live else line)
            continue
        setting = SETTING.match(line)
        name = f"{table}.{setting.group(2)}" if setting else ""
        required = setting and setting.group(2) in ("smtp_host", "sender", "recipients")
        in_email = table == "email"
        commented = setting and setting.group(1) and (email or not in_email)
        if commented and (name in shown or (in_email and required)):
            line = line[2:]
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_the_template_names_every_key_the_loader_knows_once():
    written = settings_in(template())
    for where, keys in KNOWN_KEYS.items():
        if not where:
            assert set(written) == set(keys) | {"redcap.urls", "redcap.tokens"}
            continue
        expected = [k for k in keys if not (where == "redcap" and k in ("urls", "tokens"))]
        assert sorted(written[where]) == sorted(expected), where
    assert not re.search(r"\b[0-9A-Za-z]{32}\b", template())  # no token value, ever


def test_the_defaults_shown_are_the_ones_the_loader_uses(tmp_path, monkeypatch):
    for name, token in TOKENS.items():
        monkeypatch.setenv(f"AUTOID_TOKEN_{name}", token)
    plain, explicit = tmp_path / "plain.toml", tmp_path / "explicit.toml"
    plain.write_text(template())
    explicit.write_text(with_defaults_uncommented(template(), email=True))
    live = plain.read_text().count("\n# ") - explicit.read_text().count("\n# ")
    assert live == len(defaults()) + 4  # every default, and [email] with its three required keys

    a, b = load_settings(plain), load_settings(explicit)
    assert (a.redcap, a.run, a.cache) == (b.redcap, b.run, b.cache)
    timeout = a.redcap.timeout_s
    assert lease_settings(a.lease, timeout_s=timeout) == lease_settings(b.lease, timeout_s=timeout)
    assert monitoring_settings(a.monitoring, tmp_path) == monitoring_settings(
        b.monitoring, tmp_path
    )
    assert a.email == {} and b.email  # [email] stays commented out unless a site fills it in
    required = {k: b.email[k] for k in ("smtp_host", "sender", "recipients")}
    assert asdict(email_settings_from_config(required)) == asdict(
        email_settings_from_config(b.email)
    )


def test_init_writes_a_config_that_autoid_check_accepts_and_names_the_next_command(
    demo_sandbox, tmp_path
):
    done = autoid("init", str(tmp_path / "site"))

    assert done.returncode == 0, done.stderr
    config = tmp_path / "site" / "autoid.toml"
    assert done.stdout.splitlines()[-1] == f"autoid check --config {config}"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    text = config.read_text().replace("https://redcap.example.org/api/", demo_sandbox.url)
    config.write_text(text)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    env |= {f"AUTOID_TOKEN_{db.upper()}": t for db, t in demo_sandbox.tokens.items()}
    checked = autoid("check", "--config", str(config), env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_init_deploy_writes_the_shipped_deploy_files(tmp_path):
    done = autoid("init", str(tmp_path / "site"), "--deploy", str(tmp_path / "deploy"))

    assert done.returncode == 0, done.stderr
    shipped = sorted(p.name for p in (ROOT / "deploy").iterdir() if not p.name.endswith(".py"))
    written = sorted(p.name for p in (tmp_path / "deploy").iterdir())
    assert written == shipped and "autoid.service" in written and "autoid.cron" in written
    for name in written:
        assert (tmp_path / "deploy" / name).read_text() == (ROOT / "deploy" / name).read_text()
        assert stat.S_IMODE((tmp_path / "deploy" / name).stat().st_mode) == 0o600


@pytest.mark.parametrize("existing", ["site/autoid.toml", "deploy/autoid.timer"])
def test_init_overwrites_nothing(tmp_path, existing):
    (tmp_path / existing).parent.mkdir(parents=True)
    (tmp_path / existing).write_text("mine\n")

    done = autoid("init", str(tmp_path / "site"), "--deploy", str(tmp_path / "deploy"))

    assert done.returncode == ExitStatus.CONFIG
    assert f"{tmp_path / existing} exists; nothing was written" in done.stderr
    assert (tmp_path / existing).read_text() == "mine\n"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [tmp_path / existing]
