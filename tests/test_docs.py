"""Docs that cannot drift: every command and every config key is documented, and only those."""

import re
import tomllib
from pathlib import Path

import pytest

from autoid_lib.cli.main import COMMANDS, main
from autoid_lib.config import KNOWN_KEYS

ROOT = Path(__file__).resolve().parent.parent


OPTIONAL = re.compile(r"^# ?(\[[a-z.]+\].*|[a-z_]+ *=.*)$", re.M)  # "# chunk_size = 500"


def documented_config() -> dict:
    """docs/run.md's config example, optional (commented-out) keys included, with the [email]
    table from docs/operations.md."""
    text = (ROOT / "docs" / "run.md").read_text(encoding="utf-8")
    block = re.search(r"## Configuration\s+```toml\n(.*?)```", text, re.S).group(1)
    config = tomllib.loads(OPTIONAL.sub(r"\1", block))
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(\[email\]\n.*?)```", text, re.S).group(1)
    config["email"] = tomllib.loads(OPTIONAL.sub(r"\1", block))["email"]
    return config


def keys_at(data: dict, where: str) -> set[str]:
    for part in filter(None, where.split(".")):
        data = data.get(part, {})
    return set(data)


@pytest.mark.parametrize("where", sorted(KNOWN_KEYS))
def test_every_config_key_is_documented_and_every_documented_key_is_known(where):
    documented = keys_at(documented_config(), where)
    known = set(KNOWN_KEYS[where])
    if where == "redcap.urls":  # one example stands for every database
        assert documented and documented <= known
    else:
        assert documented == known


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_is_in_the_readme_and_has_help(command, capsys):
    assert f"`autoid {command}" in (ROOT / "README.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert "usage: autoid " + command in capsys.readouterr().out
