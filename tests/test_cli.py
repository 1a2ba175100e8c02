"""The command line: every setting is a flag and an env var, and mistakes fail clearly."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

from agenthost.cli import app
from agenthost.core.settings import SETTINGS_HELP, Settings, env_name
from tests.fixtures.agenthost import AgentHostProcess, http_status

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
    assert "cannot import agent module 'no_such_module_xyz'" in proc.stderr
    # where it looked: the --app-dir (the current directory) and the installed packages
    assert f"in {Path.cwd()} (--app-dir)" in proc.stderr and "installed packages" in proc.stderr


MYBOT = """
from agenthost import Turn

async def agent(turn: Turn) -> str:
    return "mybot heard " + turn.message
"""


def test_serve_finds_the_agent_in_the_current_directory_and_names_it_at_start(
    agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    workdir = tmp_path / "project"
    workdir.mkdir()
    (workdir / "mybot.py").write_text(MYBOT)
    server = agenthost_factory(cwd=workdir, app="mybot:agent", log_level="info")
    request = urllib.request.Request(
        f"{server.url}/v1/sessions/s/turns",
        data=json.dumps({"message": "hi"}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert json.load(resp)["response"] == "mybot heard hi"
    started = [line for line in server.log().splitlines() if "agenthost serving on" in line]
    assert len(started) == 1 and "agent mybot:agent" in started[0], started


def test_app_dir_points_at_the_agent_s_directory(
    agenthost_factory: Callable[..., AgentHostProcess], tmp_path: Path
) -> None:
    (tmp_path / "bots").mkdir()
    (tmp_path / "bots" / "mybot.py").write_text(MYBOT)
    server = agenthost_factory(cwd=tmp_path, app="mybot:agent", app_dir="bots")
    assert http_status(f"{server.url}/readyz") == 200


def test_a_second_server_on_a_taken_port_says_so_in_one_line_before_announcing(
    agenthost_factory: Callable[..., AgentHostProcess],
) -> None:
    first = agenthost_factory()
    proc = subprocess.run(
        [AGENTHOST, "serve", "--port", str(first.port), "--store", "memory://"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "serving on" not in proc.stderr + proc.stdout
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"agenthost: port {first.port} is taken on 127.0.0.1 (another server is listening "
        "there); choose another with --port or AGENTHOST_PORT"
    ]
