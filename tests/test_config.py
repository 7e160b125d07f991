"""Configuration: secrets by reference, refused when unsafe, never shown."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from autoid_lib.config import load_settings
from autoid_lib.errors import ConfigError, LockHeld
from autoid_lib.lock import environment_for_child, run_lock
from autoid_lib.secret import Secret, redact, resolve_secret

TOKEN = "0123456789ABCDEF0123456789ABCDEF"


def write_config(tmp_path: Path, tokens: str, extra: str = "") -> Path:
    path = tmp_path / "autoid.toml"
    path.write_text(
        f"""
[redcap]
url = "https://redcap.example.org/api/"
timeout_s = 5
[redcap.tokens]
{tokens}
[run]
lock_file = "run.lock"
{extra}
"""
    )
    return path


def env_tokens(monkeypatch, value=TOKEN):
    for name in ("PROJECTS", "INCOMING", "AUTOID"):
        monkeypatch.setenv(f"AUTOID_TOKEN_{name}", value)
    return "\n".join(
        f'{db} = "env:AUTOID_TOKEN_{db.upper()}"' for db in ("projects", "incoming", "autoid")
    )


def test_documented_shape_loads_and_transfers_default_to_incoming(tmp_path, monkeypatch):
    settings = load_settings(write_config(tmp_path, env_tokens(monkeypatch)))
    assert settings.redcap.tokens["transfers"].reveal() == TOKEN
    assert settings.redcap.same_database("incoming", "transfers")
    assert settings.redcap.verify is True
    assert settings.redcap.timeout_s == 5
    assert settings.run.lookback_days == 14
    assert settings.run.lock_file == tmp_path / "run.lock"
    assert settings.run.reports_dir == tmp_path / "reports"


def test_tokens_never_show_in_repr_or_str(tmp_path, monkeypatch):
    settings = load_settings(write_config(tmp_path, env_tokens(monkeypatch)))
    assert TOKEN not in repr(settings)
    assert TOKEN not in str(settings.redcap.tokens["autoid"])


def test_inline_token_is_refused_without_echoing_it(tmp_path):
    path = write_config(tmp_path, f'projects = "{TOKEN}"\nincoming = "x"\nautoid = "y"')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert TOKEN not in str(caught.value)


def test_malformed_token_is_refused_before_pycap_can_print_it(tmp_path, monkeypatch):
    path = write_config(tmp_path, env_tokens(monkeypatch, value="SECRET-but-too-short"))
    with pytest.raises(ConfigError, match="not a REDCap API token") as caught:
        load_settings(path)
    assert "SECRET" not in str(caught.value)


def test_token_file_readable_by_others_is_refused(tmp_path):
    token_file = tmp_path / "autoid.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        resolve_secret(f"file:{token_file}", "the autoid token")
    token_file.chmod(0o600)
    assert resolve_secret(f"file:{token_file}", "the autoid token").reveal() == TOKEN


def test_missing_variable_and_unknown_scheme_name_the_problem(monkeypatch):
    with pytest.raises(ConfigError, match="AUTOID_NOPE is not set"):
        resolve_secret("env:AUTOID_NOPE", "the autoid token")
    with pytest.raises(ConfigError, match="unknown secret scheme"):
        resolve_secret("vault:x", "the autoid token")


def test_bad_url_hash_scheme_and_toml_are_config_errors(tmp_path, monkeypatch):
    tokens = env_tokens(monkeypatch)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_settings(tmp_path / "missing.toml")
    bad = write_config(tmp_path, tokens)
    bad.write_text(bad.read_text().replace("/api/", "/"))
    with pytest.raises(ConfigError, match="ending in '/api/'"):
        load_settings(bad)
    bad = write_config(tmp_path, tokens, 'hash = "md5"')
    with pytest.raises(ConfigError, match="unknown hash scheme"):
        load_settings(bad)
    bad.write_text("[redcap\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_hmac_needs_a_key(tmp_path, monkeypatch):
    tokens = env_tokens(monkeypatch)
    with pytest.raises(ConfigError, match="hash_key"):
        load_settings(write_config(tmp_path, tokens, 'hash = "hmac-sha256"'))
    monkeypatch.setenv("AUTOID_HASH_KEY", "k" * 40)
    extra = 'hash = "hmac-sha256"\nhash_key = "env:AUTOID_HASH_KEY"'
    settings = load_settings(write_config(tmp_path, tokens, extra))
    assert settings.run.hasher().scheme == "hmac-sha256"


def test_redact_masks_every_secret():
    secret = Secret("env:X", TOKEN)
    assert redact(f"Incorrect token format '{TOKEN}'", [secret]) == "Incorrect token format '***'"


def test_second_lock_holder_is_refused_at_once(tmp_path):
    lock = tmp_path / "run.lock"
    with run_lock(lock), pytest.raises(LockHeld), run_lock(lock):
        pass
    with run_lock(lock):  # released after the block
        pass


def test_a_direct_child_runs_under_its_parents_lock_and_a_stranger_does_not(tmp_path):
    lock = tmp_path / "run.lock"
    child = (
        "import sys; from autoid_lib.lock import run_lock; from autoid_lib.errors import LockHeld\n"
        "try:\n    with run_lock(sys.argv[1]): print('ran')\n"
        "except LockHeld: print('locked')\n"
    )
    with run_lock(lock):
        env = {**os.environ, **environment_for_child(lock)}
        inherited = subprocess.run([sys.executable, "-c", child, str(lock)], env=env, text=True,
                                   capture_output=True)  # fmt: skip
        stranger = subprocess.run([sys.executable, "-c", child, str(lock)], text=True,
                                  capture_output=True)  # fmt: skip
    assert inherited.stdout.strip() == "ran"
    assert stranger.stdout.strip() == "locked"


def test_a_misspelt_key_is_refused_with_the_known_ones(tmp_path, monkeypatch):
    path = write_config(tmp_path, env_tokens(monkeypatch), "lookback_day = 30")
    with pytest.raises(ConfigError, match=r"unknown config key \[run\] lookback_day; known keys"):
        load_settings(path)
    path.write_text(path.read_text().replace("lookback_day = 30", "") + "\n[reddcap]\n")
    with pytest.raises(ConfigError, match="unknown config key reddcap"):
        load_settings(path)


def test_transfers_follow_the_incoming_url_as_they_follow_its_token(tmp_path, monkeypatch):
    extra = '\n[redcap.urls]\nincoming = "https://other.example.org/api/"\n'
    path = write_config(tmp_path, env_tokens(monkeypatch))
    path.write_text(path.read_text() + extra)
    settings = load_settings(path)
    assert settings.redcap.urls["transfers"] == "https://other.example.org/api/"
    assert settings.redcap.same_database("incoming", "transfers")
    assert settings.redcap.urls["autoid"] == "https://redcap.example.org/api/"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('server_timezone = "Europe/Olso"', "not a known time zone"),
        ("capacity_warn_at = 80", "is a fraction"),
        ("lookback_days = 1.5", "whole number"),
        ("lookback_days = 0", "must be positive"),
        ("lookback_days = 1000000", "at most 3660"),  # issue 15, case 9: OverflowError before
        ("cell_timeout_s = nan", "finite number"),
        ("cell_timeout_s = inf", "finite number"),
        ("capacity_warn_at = nan", "finite number"),
        ("external_generator = 5", "list of arguments"),
        ('external_generator = "gen-id.py"', "list of arguments"),
        ("external_generator_env = 5", "list of variable names"),
        ('previous_hash = "md5"', "unknown hash scheme"),
        ('previous_hash = "hmac-sha256"', "needs"),
        ("max_catchup_days = 3", "at least lookback_days"),
    ],
)
def test_run_settings_are_checked_when_the_config_is_read(tmp_path, monkeypatch, line, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(write_config(tmp_path, env_tokens(monkeypatch), line))


@pytest.mark.parametrize("line", ["timeout_s = nan", "timeout_s = inf"])
def test_a_non_finite_timeout_is_refused(tmp_path, monkeypatch, line):
    path = write_config(tmp_path, env_tokens(monkeypatch))
    path.write_text(path.read_text().replace("timeout_s = 5", line))
    with pytest.raises(ConfigError, match="finite number"):
        load_settings(path)


def test_a_config_that_is_not_utf8_is_one_config_error(tmp_path, monkeypatch):
    path = write_config(tmp_path, env_tokens(monkeypatch), "# caf\xe9")
    path.write_bytes(path.read_text().replace("\\xe9", "").encode() + b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path)


def test_a_rotation_names_the_previous_key_and_keeps_it_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOID_HASH_KEY", "new-key-" + "n" * 32)
    monkeypatch.setenv("AUTOID_OLD_KEY", "old-key")
    extra = (
        'hash = "hmac-sha256"\nhash_key = "env:AUTOID_HASH_KEY"\n'
        'previous_hash = "hmac-sha256"\nprevious_hash_key = "env:AUTOID_OLD_KEY"'
    )
    settings = load_settings(write_config(tmp_path, env_tokens(monkeypatch), extra))
    hasher = settings.run.hasher()
    assert hasher.previous is not None
    assert hasher.previous.fingerprint in hasher.accepted_fingerprints
    assert "old-key" not in repr(settings) and any(
        s.reveal() == "old-key" for s in settings.secrets()
    )


def test_the_local_copy_is_on_by_default_beside_the_reports(tmp_path, monkeypatch):
    cache = load_settings(write_config(tmp_path, env_tokens(monkeypatch))).cache
    assert cache.enabled and cache.dir == tmp_path / "autoid-state"
    assert (cache.full_read_hours, cache.overlap_minutes) == (24, 120)
    extra = '[cache]\nenabled = false\ndir = "state"\nfull_read_hours = 6\noverlap_minutes = 90'
    cache = load_settings(write_config(tmp_path, env_tokens(monkeypatch), extra)).cache
    assert not cache.enabled and cache.dir == tmp_path / "state"
    assert (cache.full_read_hours, cache.overlap_minutes) == (6, 90)


@pytest.mark.parametrize(
    "table, message",
    [
        ("enabled = 1", "[cache] enabled must be true or false"),
        ("overlap_minutes = 30", "at least 75"),  # the repeated DST hour
        ("full_read_hours = 0", "[cache] full_read_hours must be positive"),
        ("full_read = 1", "unknown config key [cache] full_read"),
        ('dir = ""', "expected a path"),
    ],
)
def test_a_bad_cache_setting_is_refused(tmp_path, monkeypatch, table, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(write_config(tmp_path, env_tokens(monkeypatch), f"[cache]\n{table}"))


def test_the_overlap_must_cover_a_lease_tickets_life(tmp_path, monkeypatch):
    """A live ticket is then always among the changes a run reads (docs/run.md)."""
    extra = "[cache]\noverlap_minutes = 100\n[lease]\nexpiry_s = 7200"
    with pytest.raises(ConfigError, match=r"must cover a lease ticket's life"):
        load_settings(write_config(tmp_path, env_tokens(monkeypatch), extra))
    extra += "\nenabled = false"  # no lease: no tickets to cover
    assert load_settings(write_config(tmp_path, env_tokens(monkeypatch), extra))
