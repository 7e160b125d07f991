"""Security: secrets stay with the kit, nothing readable by other users, hostile answers bounded.

Each test runs the real thing: a real generator program, real local HTTP servers, real files.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from autoid_lib.config import load_settings
from autoid_lib.errors import ConfigError, ExternalGeneratorError
from autoid_lib.idgen import ExternalGenerator

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
