"""The command line: every setting is a flag and an env var, and mistakes fail clearly."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agenthost.cli import SERVE_PANELS, app
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


def test_worker_help_names_its_own_command() -> None:
    result = CliRunner().invoke(app, ["worker", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert result.output.startswith("Usage: agenthost worker [OPTIONS] [APP]")
    assert "--role worker" in result.output and "--worker-concurrency" in result.output


def test_every_setting_has_help_and_exactly_one_panel() -> None:
    assert set(SETTINGS_HELP) == set(Settings.__struct_fields__)
    placed = [field for fields in SERVE_PANELS.values() for field in fields]
    assert sorted(placed) == sorted(Settings.__struct_fields__)
    assert set(SERVE_PANELS) == {
        "Server", "Store", "LLM", "Streams", "Limits", "Auth", "Observability", "Pages",
        "Queue",
    }  # fmt: skip


def test_serve_help_reads_at_80_columns() -> None:
    """Panels, one or two lines of description per option, every environment variable
    whole, no line past 80 columns, no `<bool>`."""
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "<bool>" not in result.output and "…" not in result.output
    for field in Settings.__struct_fields__:
        assert len(textwrap.wrap(SETTINGS_HELP[field], 72)) <= 2, field
        assert re.search(rf"\b{env_name(field)}\b", result.output), field
    for title in SERVE_PANELS:
        assert any(line.startswith(f"╭─ {title} ") for line in lines), title
    assert len(lines) < 3 * len(Settings.__struct_fields__) + 20


def test_every_boolean_setting_turns_on_and_off_from_the_command_line() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    booleans = [f for f in Settings.__struct_fields__ if isinstance(getattr(Settings(), f), bool)]
    assert "access_log" in booleans and "log_content" in booleans
    for field in booleans:
        flag = field.replace("_", "-")
        assert f"--{flag}/--no-{flag}" in result.output, field


@pytest.mark.parametrize(
    ("args", "env", "line"),
    [
        (["--auth", "keyz"], {}, "agenthost: --auth keyz: must be none, keys or jwt"),
        (["--log-format", "xml"], {}, "agenthost: --log-format xml: must be auto, json or console"),
        (["--port", "notanumber"], {"AGENTHOST_PORT": "9000"},
         "agenthost: --port notanumber: expected a whole number"),
        ([], {"AGENTHOST_PORT": "notanumber"},
         "agenthost: AGENTHOST_PORT=notanumber: expected a whole number"),
        ([], {"AGENTHOST_ACCESS_LOG": "maybe"},
         "agenthost: AGENTHOST_ACCESS_LOG=maybe: expected true or false"),
        (["--store", "foo://"], {},
         "agenthost: --store foo://: unknown store URL 'foo://': expected memory://, "
         "sqlite:///path, redis://host:port/db, redis+cluster://host:port or "
         "postgresql://user:pass@host:port/db"),
        (["--llm", "sim://", "--admin-token", "s3cret", "--drain-timeout", "-1"], {},
         "agenthost: --drain-timeout -1: must be >= 0"),
    ],
)  # fmt: skip
def test_a_configuration_mistake_is_one_line_naming_the_value_and_its_origin(
    args: list[str], env: dict[str, str], line: str
) -> None:
    proc = subprocess.run(
        [AGENTHOST, "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [line] and proc.stdout == ""


def test_a_secret_given_wrongly_is_not_echoed() -> None:
    proc = subprocess.run(
        [AGENTHOST, "serve", "--auth", "jwt", "--store", "redis://:hunter2@127.0.0.1:1/0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "AGENTHOST_ADMIN_TOKEN": "tok3n"},
    )
    assert proc.returncode == 2 and "agenthost: --auth jwt: jwt needs" in proc.stderr
    assert "hunter2" not in proc.stderr and "tok3n" not in proc.stderr


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
    assert "agenthost: --store mongodb://x: unknown store URL" in proc.stderr


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


def test_the_serve_path_leaves_optional_clients_unimported() -> None:
    """`agenthost serve` on the embedded default starts without redis-py, aiohttp or PyJWT
    (a large share of a start-up's CPU): each is imported by the part that uses it, and the
    other verbs' modules are loaded when they are asked for."""
    probe = (
        "import sys, agenthost.cli, agenthost.runtime.server, agenthost.runtime.supervisor;"
        "print(' '.join(sorted(m for m in ('redis', 'aiohttp', 'jwt', 'agenthost.loadtest',"
        " 'agenthost.cluster', 'agenthost.auth.keystores') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


def _loaded(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of `names` a fresh interpreter has imported after running `code`."""
    probe = code + f"\nimport sys; print(' '.join(m for m in {names!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_building_the_app_leaves_the_api_documents_for_their_first_request() -> None:
    """The OpenAPI document and the /docs page are built when first asked for (their tests:
    test_app), not by every start."""
    code = (
        "from agenthost.core.settings import Settings\n"
        "from agenthost.runtime.assembly import assemble\n"
        "assemble(Settings(store='memory://'))"
    )
    documents = ("agenthost.web.openapi", "agenthost.web.docs_page")
    assert _loaded(code, documents) == []


def test_the_command_list_imports_no_verb_s_module() -> None:
    """`agenthost --help` lists every verb by the help `agenthost.cli` keeps for it."""
    code = (
        "from typer.testing import CliRunner\n"
        "from agenthost.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'], env={'COLUMNS': '200'})\n"
        "assert result.exit_code == 0, result.output\n"
        "for verb in ('serve', 'worker', 'llm-sim', 'loadtest', 'cluster', 'k8s', 'keys', 'db'):\n"
        "    assert f' {verb} ' in result.output, verb"
    )
    modules = ("agenthost.llm.cli", "agenthost.loadtest.cli", "agenthost.cluster.cli",
               "agenthost.k8s.cli", "agenthost.auth.cli", "agenthost.stores.db_cli")  # fmt: skip
    assert _loaded(code, modules) == []


@pytest.mark.parametrize("verb", ["llm-sim", "loadtest", "cluster", "k8s", "keys", "db"])
def test_a_verb_s_help_is_the_one_the_command_list_shows(verb: str) -> None:
    listed = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "400"}).output
    own = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "400"}).output
    line = next(line for line in listed.splitlines() if f" {verb} " in line)
    text = line.split(f" {verb} ", 1)[1].strip(" │")
    assert text and text in " ".join(own.split())


def test_a_supervisor_checks_the_settings_without_loading_the_server() -> None:
    """`serve --workers N`: the supervisor builds the app once to check it and serves
    nothing, so it does not import uvicorn or the protocols its processes run."""
    code = (
        "from agenthost.core.settings import Settings\n"
        "from agenthost.runtime.assembly import assemble\n"
        "import agenthost.cli, agenthost.runtime.supervisor\n"
        "assemble(Settings(store='memory://'))"
    )
    assert _loaded(code, ("uvicorn", "websockets", "agenthost.runtime.server")) == []
