"""The command line: every setting is a flag and an env var, and mistakes fail clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from agenthost.cli import app
from agenthost.core.settings import SETTINGS_HELP, Settings, env_name

AGENTHOST = str(Path(sys.executable).with_name("agenthost"))


def test_serve_help_lists_every_setting_with_its_env_var_and_default() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = result.output
    for field in Settings.__struct_fields__:
        assert env_name(field) in text, field
        if field != "app":
            assert "--" + field.replace("_", "-") in text, field
    assert "sqlite:///./agenthost.db" in text and "3600" in text


def test_every_setting_has_help() -> None:
    assert set(SETTINGS_HELP) == set(Settings.__struct_fields__)


def test_settings_from_env_parse_types_and_validate() -> None:
    s = Settings.from_env({"AGENTHOST_PORT": "9001", "AGENTHOST_SESSION_TTL": "1.5"})
    assert s.port == 9001 and s.session_ttl == 1.5
    assert Settings.from_env({}, port=7000).port == 7000
    try:
        Settings(port=0)
    except ValueError as exc:
        assert "port" in str(exc)
    else:
        raise AssertionError("port 0 accepted")


def test_serve_refuses_a_bad_store_url_at_start() -> None:
    proc = subprocess.run(
        [AGENTHOST, "serve", "--store", "mongodb://x", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown store URL" in proc.stderr


def test_serve_refuses_an_agent_it_cannot_import() -> None:
    proc = subprocess.run(
        [AGENTHOST, "serve", "no_such_module_xyz:agent"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "cannot import agent module" in proc.stderr
