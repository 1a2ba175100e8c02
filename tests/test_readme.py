"""The README's shell snippets, run as written against servers the test starts: the tour's
curls, "Your agent" (its mybot.py and both ways of serving it) and the fleet with keys.
Only what a machine needs changes: ports become free ones, `.venv/bin/` and `make run`
become this checkout's `agenthost serve`, the fleet's Redis is the test's, OpenAI is a
local simulator, and a server started in a snippet is waited for before the next line."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agenthost.core.settings import DEFAULT_LLM
from tests.fixtures.agenthost import AGENTHOST, free_port, http_status, wait_until
from tests.fixtures.llm import LLMSimServer
from tests.test_streaming import parse_sse

README = Path(__file__).resolve().parent.parent / "README.md"
BIN = str(Path(AGENTHOST).parent)


def sh_blocks(section: str) -> list[str]:
    """The ```sh blocks under the README heading that starts with `section`."""
    text = README.read_text()
    body = text.split("\n## " + section, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", body, re.S)


def python_block(section: str) -> str:
    text = README.read_text()
    body = text.split("\n## " + section, 1)[1].split("\n## ", 1)[0]
    blocks: list[str] = re.findall(r"```python\n(.*?)```", body, re.S)
    return blocks[0]


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines left out."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        code = line.split("   #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
        if code:
            out.append(code)
    return out


class Shell:
    """Runs README lines one by one the way a reader types them: `export` sets variables,
    `cmd &` (and a server command) runs in the background until the test ends."""

    def __init__(self, cwd: Path, ports: dict[int, int], extra: dict[str, str]) -> None:
        self.cwd = cwd
        self.ports = ports
        self.replace = extra
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTHOST_")}
        self.env["PATH"] = f"{BIN}:{self.env['PATH']}"
        self.env["AGENTHOST_LOG_LEVEL"] = "warning"
        self.background: list[subprocess.Popen[bytes]] = []

    def adapt(self, line: str) -> str:
        line = line.replace(".venv/bin/", BIN + "/")
        line = re.sub(
            r"^make run ARGS=(.*)$", lambda m: "agenthost serve " + shlex.split(m[1])[0], line
        )
        if line == "make run":
            line = "agenthost serve"
        for old, new in self.replace.items():
            line = line.replace(old, new)
        for readme_port, port in self.ports.items():
            line = re.sub(rf"(?<=[: ]){readme_port}\b", str(port), line)
        if re.search(r"\bagenthost serve\b", line) and "--port" not in line:
            line = (
                line.rstrip(" &")
                + f" --port {self.ports[8000]}"
                + (" &" if line.endswith("&") else "")
            )
        return line

    def run(self, line: str) -> str:
        line = self.adapt(line)
        if line.startswith("export "):
            for pair in shlex.split(line)[1:]:
                name, _, value = pair.partition("=")
                self.env[name] = value
            return ""
        serving = re.search(r"\bagenthost (serve|llm-sim)\b", line)
        if line.endswith("&") or serving:
            self.start(line.rstrip(" &"))
            return ""
        proc = subprocess.run(
            line, shell=True, cwd=self.cwd, env=self.env, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
        return proc.stdout

    def start(self, line: str) -> None:
        proc = subprocess.Popen(
            line, shell=True, cwd=self.cwd, env=self.env, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.background.append(proc)
        port = int(re.findall(r"--port (\d+)", line)[-1])
        path = "/v1/models" if "llm-sim" in line else "/readyz"

        def up() -> bool:
            assert proc.poll() is None, f"{line!r} exited with {proc.returncode}"
            return http_status(f"http://127.0.0.1:{port}{path}") == 200

        wait_until(up, 30, line)

    def stop_all(self) -> None:
        for proc in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        self.background.clear()


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    ports = {p: free_port() for p in (8000, 8001, 8002, 9000)}
    sh = Shell(tmp_path, ports, {})
    yield sh
    sh.stop_all()


def turn(port: int, message: str, **headers: str) -> dict[str, Any]:
    request = ["curl", "-s", f"127.0.0.1:{port}/v1/sessions/readme/turns", "-d"]
    request.append(json.dumps({"message": message}))
    for name, value in headers.items():
        request += ["-H", f"{name}: {value}"]
    out = subprocess.run(request, capture_output=True, text=True, timeout=30, check=True)
    answer: dict[str, Any] = json.loads(out.stdout)
    return answer


def test_the_tour_runs_as_written_against_make_run(shell: Shell) -> None:
    shell.run("make run")  # the tour's other terminal
    (block,) = sh_blocks("A 30-second tour")
    first, again, history, session, stream, openapi = (shell.run(c) for c in commands(block))
    assert json.loads(first) == json.loads(again), "the same Idempotency-Key, the same answer"
    assert "hello" in json.loads(first)["response"]
    assert json.loads(history)["messages"][0]["content"] == "hello"
    assert json.loads(session)["turns"] == 1
    events = parse_sse(stream)
    chunks = [data["text"] for _, kind, data in events if kind == "chunk"]
    # The default simulated model streams at a human pace: several chunks, not one.
    assert len(chunks) >= 5 and events[-1][1] == "done"
    assert "".join(chunks) == events[-1][2]["response"]
    assert openapi.startswith('{"openapi":"3.1.0"')
    assert DEFAULT_LLM.startswith("sim://")


def test_your_agent_is_found_in_the_current_directory_both_ways(
    shell: Shell, llm_sim_server: LLMSimServer
) -> None:
    (shell.cwd / "mybot.py").write_text(python_block("Your agent"))
    shell.replace["https://api.openai.com/v1"] = llm_sim_server.base_url
    shell.env["OPENAI_API_KEY"] = "sk-test"
    (block,) = sh_blocks("Your agent")
    lines = commands(block)
    assert len(lines) == 2 and "serve mybot:agent" in lines[0] and "mybot:agent" in lines[1]
    for line in lines:
        shell.run(line)
        answer = turn(shell.ports[8000], "hi there")
        assert answer["response"].startswith("sim: hi there"), answer
        shell.stop_all()


def test_a_model_to_develop_against_runs_as_written(shell: Shell) -> None:
    (block,) = sh_blocks("A model to develop against")
    for line in commands(block):
        shell.run(line)
    assert turn(shell.ports[8000], "to the sim")["response"].startswith("sim: to the sim")


def test_api_and_worker_processes_run_as_written_and_a_background_turn_completes(
    shell: Shell, redis_url: str
) -> None:
    shell.replace["redis://127.0.0.1:6379/0"] = redis_url
    fleet, split = sh_blocks("A fleet on Redis")
    key = ""
    for line in commands(fleet):
        if "keys create" in line or line.startswith("export"):
            out = shell.run(line)
            key = out.strip() or key
    accepted: dict[str, Any] = {}
    for line in commands(split):
        out = shell.run(line.replace("ahk_...", key))
        if line.startswith("curl"):
            accepted = json.loads(out)
    assert accepted["status"] == "pending" and accepted["session_id"] == "s2"
    url = f"http://127.0.0.1:{shell.ports[8000]}/v1/sessions/s2/turns/{accepted['turn_id']}"
    status: dict[str, Any] = {}

    def completed() -> bool:
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=5) as resp:
            status.update(json.loads(resp.read()))
        return status["status"] == "completed"

    wait_until(completed, 30, "the background turn to complete")
    assert status["response"].startswith("sim: hi")


def test_the_fleet_with_keys_runs_as_written_and_a_second_turn_is_not_refused(
    shell: Shell, redis_url: str
) -> None:
    shell.replace["redis://127.0.0.1:6379/0"] = redis_url
    block, _ = sh_blocks("A fleet on Redis")
    lines = commands(block)
    key = ""
    for line in lines:
        if key:
            line = line.replace("ahk_...", key)
        out = shell.run(line)
        if "keys create" in line:
            key = out.strip()
            assert key.startswith("ahk_")
        if line.startswith("curl"):
            assert json.loads(out)["response"].startswith("sim: hi"), out
    # The README's curl again, right after: a person typing is within the key's burst.
    curl = next(line for line in lines if line.startswith("curl")).replace("ahk_...", key)
    for _ in range(3):
        assert json.loads(shell.run(curl))["response"].startswith("sim: hi")
