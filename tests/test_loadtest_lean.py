"""The load tester's own HTTP client (`agenthost.loadtest.lean_http`): against a real server
every answer is verified as with aiohttp; failures come back as counted attempts; a keep-alive
connection the server dropped is replaced without losing or doubling the turn."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from agenthost.loadtest import LoadConfig, run_load
from agenthost.loadtest import runner as loadtest_runner
from agenthost.loadtest.lean_http import LeanHttpClient, lean_http_usable
from tests.fixtures.agenthost import AgentHostProcess, async_wait_until, free_port


async def _aiohttp_not_used(*_: Any) -> Any:
    raise AssertionError("a --mode http turn went over aiohttp")


async def test_against_the_real_server_every_answer_is_verified(
    agenthost_factory: Callable[..., AgentHostProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=20")
    monkeypatch.setattr(loadtest_runner, "send_turn", _aiohttp_not_used)
    report = await run_load(LoadConfig(url=server.url, sessions=20, turns=3))
    assert report.ok and report.answered == 60 and report.failed == 0 and report.retries == 0
    v = report.verification
    assert v is not None and v.sessions == 20 and v.acknowledged == 60
    assert v.lost == v.duplicated == v.out_of_order == v.mismatched == v.unreadable == 0


async def test_a_server_that_is_not_there_is_counted_as_failed_turns() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    report = await run_load(LoadConfig(url=url, sessions=3, turns=1, max_retries=1))
    assert report.answered == 0 and report.failed == 3 and report.retries == 3
    assert report.failed_by_kind == {"ConnectionRefusedError": 3}
    assert report.retried_by_kind == {"ConnectionRefusedError": 3}
    assert not report.ok


def test_only_plain_http_goes_over_the_lean_client() -> None:
    assert lean_http_usable("http://127.0.0.1:8000")
    assert not lean_http_usable("https://example.com")
    with pytest.raises(ValueError, match="plain http"):
        LeanHttpClient("https://example.com", {}, 1.0)


_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"


@asynccontextmanager
async def raw_server(
    answer: Callable[[int, bytes], bytes | None],
    close_after: frozenset[int] | set[int] = frozenset(),
) -> AsyncIterator[tuple[str, list[tuple[int, bytes]]]]:
    """A bare HTTP server: for the n-th request (counted over all connections) `answer`
    gives the bytes to write back, or None to close the connection without a word; after
    the requests numbered in `close_after` it closes the connection. Yields
    its URL and the (connection number, request head) of every request it read."""
    seen: list[tuple[int, bytes]] = []
    connections = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        this = connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                seen.append((this, head))
                reply = answer(len(seen), head)
                if reply is None:
                    break
                writer.write(reply)
                await writer.drain()
                if len(seen) in close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


def _ok(response: str) -> bytes:
    body = b'{"response": "%s"}' % response.encode()
    return _OK % (len(body), body)


async def test_a_keep_alive_connection_dropped_unanswered_is_replaced_and_resent() -> None:
    # The second request finds its connection closed by the server without an answer (as
    # when an idle timeout and the request cross): it goes again, same key, on a new one.
    def answer(n: int, _: bytes) -> bytes | None:
        return None if n == 2 else _ok(f"answer {n}")

    async with raw_server(answer) as (url, seen):
        client = LeanHttpClient(url, {"Authorization": "Bearer k"}, 5.0)
        first = await client.send("s1", "t1", {"message": "one"})
        second = await client.send("s1", "t2", {"message": "two"})
        client.close()
    assert (first.status, first.response) == (200, "answer 1")
    assert (second.status, second.response) == (200, "answer 3")
    assert [conn for conn, _ in seen] == [1, 1, 2]
    keys = [head.split(b"Idempotency-Key: ")[1].split(b"\r\n")[0] for _, head in seen]
    assert keys == [b"t1", b"t2", b"t2"]
    assert all(b"Authorization: Bearer k\r\n" in head for _, head in seen)
    assert seen[0][1].startswith(b"POST /v1/sessions/s1/turns HTTP/1.1\r\n")


async def test_an_answer_cut_short_is_a_failed_attempt_not_a_resend() -> None:
    # Bytes of the answer arrived before the connection closed: the turn may have run, so
    # the runner decides (it retries with the same key); the client does not resend.
    def answer(n: int, _: bytes) -> bytes | None:
        return _ok("x") if n == 1 else b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"

    async with raw_server(answer, close_after={2}) as (url, seen):
        client = LeanHttpClient(url, {}, 5.0)
        first = await client.send("s1", "t1", {"message": "one"})
        cut = await client.send("s1", "t2", {"message": "two"})
        client.close()
    assert first.status == 200
    assert (cut.status, cut.error) == (0, "ServerDisconnectedError")
    assert len(seen) == 2


async def test_no_answer_within_the_timeout_is_a_timeout() -> None:
    async with raw_server(lambda n, head: b"") as (url, seen):
        client = LeanHttpClient(url, {}, 0.2)
        attempt = await client.send("s1", "t1", {"message": "one"})
        client.close()
    assert (attempt.status, attempt.error) == (0, "timeout")
    assert len(seen) == 1


async def test_a_refusal_carries_its_code_and_retry_after() -> None:
    body = b'{"error": {"code": "overloaded", "message": "later"}}'
    refusal = (
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 2\r\ncontent-length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    async with raw_server(lambda n, head: refusal if n == 1 else b"HTTP/1.1 500 x\r\n"
                          b"content-length: 0\r\n\r\n") as (url, seen):  # fmt: skip
        client = LeanHttpClient(url, {}, 5.0)
        refused = await client.send("s1", "t1", {"message": "one"})
        failed = await client.send("s1", "t2", {"message": "two"})
        client.close()
    assert (refused.status, refused.error, refused.retry_after) == (503, "overloaded", 2.0)
    assert (failed.status, failed.error, failed.retry_after) == (500, "http_500", None)
    assert [conn for conn, _ in seen] == [1, 1]  # kept alive after a refusal


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    async with raw_server(lambda n, head: None if n == 1 else _ok("x")) as (url, seen):
        client = LeanHttpClient(url, {}, 5.0)
        attempt = await client.send("s1", "t1", {"message": "one"})
        # Closed with no answer on a new connection: a failed attempt, counted by the runner.
        assert (attempt.status, attempt.error) == (0, "ServerDisconnectedError")
        again = await client.send("s1", "t1", {"message": "one"})
        assert again.status == 200
        idle = client._idle["s1"]
        client.close()
        await async_wait_until(lambda: idle.closed, 5, "the connection to close")
    assert [conn for conn, _ in seen] == [1, 2]
