"""`agenthost serve --workers N` on real processes: N servers on one port under a supervisor
that drains them all on SIGTERM (and when one of them is drained), restarts one that is
killed, answers /metrics for all of them, drains them if it dies itself, and refuses a store
its processes could not share, and spreads new connections evenly over its processes."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import urllib.request
from collections.abc import Callable

import aiohttp
import psutil
import pytest

from tests.fixtures.agenthost import AGENTHOST, AgentHostProcess, async_wait_until, wait_until
from tests.test_drain import drain_while_turns_run, wait_exit

TOKEN = "s3cret-admin"


def metrics(server: AgentHostProcess) -> str:
    with urllib.request.urlopen(server.url + "/metrics", timeout=5) as resp:
        text: str = resp.read().decode()
        return text


def processes_in(text: str) -> set[str]:
    return set(re.findall(r'agenthost_inflight_turns\{process="(\d+)"\}', text))


def children(server: AgentHostProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(server.pid).children() if p.status() != psutil.STATUS_ZOMBIE]


def completed_turns(text: str) -> int:
    found = re.findall(r'agenthost_turns_total\{process="\d+",outcome="completed"\} (\d+)', text)
    return sum(int(n) for n in found)


def every_process_answers(server: AgentHostProcess, count: int) -> bool:
    return processes_in(metrics(server)) == {str(i) for i in range(count)}


def draining_or_gone(server: AgentHostProcess, group: list[psutil.Process]) -> bool:
    """Every process of `group` either says it is draining or has exited."""
    gone = sum(1 for p in group if exited([p]))
    try:
        text = metrics(server)
    except OSError:
        return False  # a process exiting meanwhile took the connection: ask again
    draining = len(re.findall(r'agenthost_draining\{process="\d+"\} 1', text))
    return draining + gone >= len(group)


def exited(group: list[psutil.Process]) -> bool:
    def gone(p: psutil.Process) -> bool:
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return all(gone(p) for p in group)


def post_chat(server: AgentHostProcess, session_id: str) -> int:
    request = urllib.request.Request(
        f"{server.url}/chat/{session_id}",
        data=b'{"message": "hi"}',
        headers={"Content-Type": "application/json", "Connection": "close"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        status: int = resp.status
        return status


def test_metrics_cover_every_process_of_the_group(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    server = agenthost_factory(store=redis_url, workers=3)
    wait_until(lambda: every_process_answers(server, 3), 30, "every process in /metrics")
    assert len(children(server)) == 3
    for i in range(30):  # a new connection each: the processes take them as they come
        assert post_chat(server, f"s{i}") == 200
    text = metrics(server)
    assert completed_turns(text) == 30
    # One header per family, every series of every process under it.
    assert text.count("# TYPE agenthost_turns_total counter") == 1
    family = text.split("# TYPE agenthost_inflight_turns gauge\n", 1)[1].split("#", 1)[0]
    assert family.splitlines() == [f'agenthost_inflight_turns{{process="{i}"}} 0' for i in range(3)]


async def held_connection(port: int) -> asyncio.StreamWriter:
    """A kept-alive connection, asked /healthz once (so it was accepted)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return writer


def held_by(process: psutil.Process, port: int) -> int:
    return sum(
        1
        for c in process.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
    )


async def test_each_process_takes_its_share_of_new_connections(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    server = agenthost_factory(store=redis_url, workers=2)
    await async_wait_until(lambda: every_process_answers(server, 2), 30, "both processes")
    first, second = children(server)
    second.suspend()  # its loop stands still: the first still serves every new connection
    try:
        writers = await asyncio.gather(*(held_connection(server.port) for _ in range(200)))
    finally:
        second.resume()
    assert (held_by(first, server.port), held_by(second, server.port)) == (200, 0)
    # One at a time: both wake for each, and the second takes it until it holds as many.
    for _ in range(200):
        writers.append(await held_connection(server.port))
    held = held_by(first, server.port), held_by(second, server.port)
    assert sum(held) == 400
    # 200 each, give or take the slack and what the first takes if the second does not run
    # for 50 ms (a loaded machine); whichever woke first taking each: about 300 / 100.
    assert held[1] >= 175, held
    for writer in writers:
        writer.close()


def test_a_killed_process_is_started_again(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    server = agenthost_factory(store=redis_url, workers=2)
    wait_until(lambda: len(children(server)) == 2, 30, "two processes")
    victim = children(server)[0]
    victim.kill()
    victim.wait(10)

    def replaced() -> bool:
        pids = {p.pid for p in children(server)}
        return len(pids) == 2 and victim.pid not in pids

    wait_until(replaced, 30, "the killed process to be replaced")
    wait_until(lambda: every_process_answers(server, 2), 30, "both processes in /metrics")
    restarts = re.findall(r'agenthost_process_restarts\{process="\d"\} (\d+)', metrics(server))
    assert sorted(restarts) == ["0", "1"]
    for i in range(10):
        assert post_chat(server, f"after-{i}") == 200
    assert "died with signal 9" in server.log()


async def test_sigterm_drains_every_process_then_the_supervisor_exits(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    server = agenthost_factory(store=redis_url, workers=2, llm="sim://?latency_ms=1500")
    wait_until(lambda: every_process_answers(server, 2), 30, "both processes")
    group = children(server)

    async def sigterm_then_every_process_drains() -> None:
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # The supervisor passes the signal on: each process drains once it has it (one that
        # got none of the turns has nothing to wait for, and may have exited already).
        await async_wait_until(
            lambda: draining_or_gone(server, group), 30, "every process to drain"
        )

    await drain_while_turns_run(server, sigterm_then_every_process_drains)
    assert exited(group)


async def test_admin_drain_of_one_process_drains_the_group(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    server = agenthost_factory(store=redis_url, workers=2, admin_token=TOKEN)
    wait_until(lambda: len(children(server)) == 2, 30, "two processes")
    group = children(server)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{server.url}/admin/drain", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp,
    ):
        assert resp.status == 202
    assert await wait_exit(server, 30) == 0
    assert "drained and exited: draining the others" in server.log()
    assert exited(group)


def test_processes_drain_when_their_supervisor_dies(
    agenthost_factory: Callable[..., AgentHostProcess], redis_url: str
) -> None:
    server = agenthost_factory(store=redis_url, workers=2)
    wait_until(lambda: len(children(server)) == 2, 30, "two processes")
    group = children(server)
    server.kill()
    wait_until(lambda: exited(group), 30, "the orphaned processes to exit")
    assert "the supervisor is gone: draining" in server.log()


@pytest.mark.parametrize("store", ["sqlite:///x.db", "memory://"])
def test_workers_refuse_a_store_the_processes_cannot_share(store: str) -> None:
    proc = subprocess.run(
        [AGENTHOST, "serve", "--workers", "2", "--store", store, "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "agenthost: --workers 2: more than one process needs a store they share" in proc.stderr


@pytest.mark.parametrize("workers", ["0", "two"])
def test_workers_must_be_a_count_or_auto(workers: str) -> None:
    proc = subprocess.run(
        [AGENTHOST, "serve", "--workers", workers, "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"--workers {workers}: must be a whole number >= 1, or auto" in proc.stderr
