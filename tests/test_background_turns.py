"""Background turns: `"background": true` answers 202 with the turn id and a Location to
poll; the turn runs on (here with `--role all`, on a worker with `--role api`), its stream
is readable, and its `callback_url` receives a signed POST of the outcome, retried with
back-off, never to a private address unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import assemble
from agenthost.stores.base import TurnRecord
from agenthost.stores.memory import MemoryStore
from agenthost.turns.callbacks import CallbackSender, public_address
from tests.fixtures.agenthost import AgentHostProcess, async_wait_until, free_port
from tests.fixtures.aiohttp_server import served
from tests.test_stream_resume import read_events, sid

Factory = Callable[..., AgentHostProcess]
SECRET = "callback-test-secret"


class Receiver:
    """A callback receiver on 127.0.0.1 that fails its first `failures` requests with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook?token=x"

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append(
            ({k.lower(): v for k, v in request.headers.items()}, await request.read())
        )
        if len(self.requests) <= self.failures:
            return web.Response(status=503)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver(failures=2)
    app = web.Application()
    app.router.add_post("/hook", hook.handle)
    async with served(app, port=hook.port):
        yield hook


def start(role: str, factory: Factory, request: pytest.FixtureRequest, **settings: Any) -> str:
    """The URL clients use: one `all` process, or an api process with two workers."""
    if role == "all":
        return factory(**settings).url
    redis_url = request.getfixturevalue("redis_url")
    api = factory(role="api", store=redis_url, **settings)
    for _ in range(2):
        factory(role="worker", store=redis_url, **settings)
    return api.url


async def poll(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    status: dict[str, Any] = {}

    async def fetch() -> None:
        async with http.get(url) as resp:
            assert resp.status == 200, await resp.text()
            status.update(await resp.json())

    while True:
        await fetch()
        if status["status"] in ("completed", "failed"):
            return status


@pytest.mark.parametrize("role", ["all", "api"])
async def test_a_background_turn_answers_202_and_is_polled_to_its_answer(
    role: str, agenthost_factory: Factory, request: pytest.FixtureRequest
) -> None:
    base = start(role, agenthost_factory, request,
                 llm="sim://?ttft_ms=50&tokens_per_s=40&words=20")  # fmt: skip
    s = sid()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/v1/sessions/{s}/turns", json={"message": "hello", "background": True}
        ) as resp:
            assert resp.status == 202, await resp.text()
            accepted = await resp.json()
            location = resp.headers["Location"]
        tid = accepted["turn_id"]
        assert accepted == {"session_id": s, "turn_id": tid, "status": "pending"}
        assert location == f"/v1/sessions/{s}/turns/{tid}"
        async with http.get(f"{base}{location}") as resp:
            assert resp.status == 200
            assert (await resp.json())["status"] in ("pending", "running", "completed")
        async with http.get(f"{base}{location}/stream") as resp:
            assert resp.status == 200
            events = await read_events(resp)
        assert events[-1][1] == "done"
        done = await poll(http, f"{base}{location}")
        assert done["status"] == "completed"
        assert done["response"] == events[-1][2]["response"]


@pytest.mark.parametrize("role", ["all", "api"])
async def test_the_callback_is_signed_and_retried_until_delivered(
    role: str,
    agenthost_factory: Factory,
    request: pytest.FixtureRequest,
    receiver: Receiver,
) -> None:
    base = start(role, agenthost_factory, request, callback_secret=SECRET,
                 callback_allow_private="true")  # fmt: skip
    s = sid()
    body = {"message": "hi", "background": True, "callback_url": receiver.url}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/sessions/{s}/turns", json=body) as resp:
            assert resp.status == 202
            tid = (await resp.json())["turn_id"]
        await async_wait_until(lambda: len(receiver.requests) >= 3, 60, "three callback POSTs")
        done = await poll(http, f"{base}/v1/sessions/{s}/turns/{tid}")
    bodies = {raw for _, raw in receiver.requests}
    assert len(bodies) == 1, "every retry sends the same body"
    headers, raw = receiver.requests[-1]
    sent = json.loads(raw)
    assert sent == {"event": "turn.completed", "session_id": s, "turn_id": tid,
                    "status": "completed", "response": done["response"]}  # fmt: skip
    parts = dict(p.split("=", 1) for p in headers["x-agenthost-signature"].split(","))
    stamp, mac = parts["t"], parts["sha256"]
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)


async def test_a_callback_to_a_private_address_is_refused_by_default(
    agenthost_factory: Factory, receiver: Receiver
) -> None:
    server = agenthost_factory()
    body = {"message": "hi", "background": True, "callback_url": receiver.url}
    url = f"{server.url}/v1/sessions/{sid()}/turns"
    async with aiohttp.ClientSession() as http, http.post(url, json=body) as resp:
        assert resp.status == 202
    await async_wait_until(
        lambda: "not a public address" in server.log(), 30, "the callback refused"
    )
    assert receiver.requests == []


async def test_a_name_that_resolves_to_a_private_address_is_not_called(
    receiver: Receiver,
) -> None:
    # Names are resolved where the connection is made, and private addresses dropped: the
    # same check covers every hop of a redirect.
    sender = CallbackSender(attempts=1)
    url = f"http://localhost:{receiver.port}/hook"
    assert not await sender.deliver(url, b"{}")
    assert receiver.requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_a_redirect_to_a_private_address_is_not_followed(
    receiver: Receiver, host: str
) -> None:
    # 127.0.0.2 stands in for a public address (the rule of what a callback may reach is
    # the sender's `allowed`): its server redirects to the private receiver, by address or
    # by a name resolving to it; every hop is checked, so the receiver is never called.
    hops: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hops.append(request.path)
        raise web.HTTPTemporaryRedirect(f"http://{host}:{receiver.port}/hook")

    app = web.Application()
    app.router.add_post("/{tail:.*}", redirect)
    async with served(app, "127.0.0.2") as port:
        sender = CallbackSender(attempts=1, allowed=lambda address: address == "127.0.0.2")
        assert not await sender.deliver(f"http://127.0.0.2:{port}/start", b"{}")
    assert hops == ["/start"]  # the allowed first hop was called...
    assert receiver.requests == []  # ...and the private one it pointed at never was


async def test_redirects_are_followed_at_most_three_times() -> None:
    hops: list[str] = []

    async def loop(request: web.Request) -> web.Response:
        hops.append(request.path)
        raise web.HTTPTemporaryRedirect(f"/hop{len(hops)}")

    app = web.Application()
    app.router.add_post("/{tail:.*}", loop)
    async with served(app) as port:
        sender = CallbackSender(allow_private=True, attempts=1)
        assert not await sender.deliver(f"http://127.0.0.1:{port}/start", b"{}")
    assert hops == ["/start", "/hop1", "/hop2", "/hop3"]


def test_public_addresses_are_told_from_private_ones() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "172.16.0.1", "169.254.169.254",
                    "::1", "fe80::1", "fc00::1", "0.0.0.0", "::ffff:127.0.0.1", "224.0.0.1",
                    "100.64.0.1"):  # fmt: skip
        assert not public_address(address), address
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert public_address(address), address


async def test_a_bad_callback_url_is_refused_with_422(agenthost_factory: Factory) -> None:
    server = agenthost_factory()
    async with aiohttp.ClientSession() as http:
        for url in ("ftp://example.com/x", "not a url", "http://" + "a" * 3000):
            body = {"message": "hi", "background": True, "callback_url": url}
            async with http.post(f"{server.url}/v1/sessions/{sid()}/turns", json=body) as resp:
                assert resp.status == 422, (url, await resp.text())


async def test_background_turns_of_a_tenant_are_bounded_with_role_all(
    agenthost_factory: Factory,
) -> None:
    server = agenthost_factory(llm="sim://?latency_ms=3000", max_queued_turns=2)
    async with aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            body = {"message": "hi", "background": True}
            async with http.post(f"{server.url}/v1/sessions/{sid()}/turns", json=body) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert (await resp.json())["error"]["code"] == "queue_full"
        assert statuses == [202, 202, 429]


class _ReadBeforeItBegan(MemoryStore):
    """A store whose next read of a turn answers as it would have before a worker began it:
    the interleaving where a poll reads no record, then the worker runs and commits the
    turn and drops its queued mark, then the poll asks whether it is queued."""

    miss_next = False

    async def get_turn(self, session_id: str, turn_id: str) -> TurnRecord | None:
        if self.miss_next:
            self.miss_next = False
            return None
        return await super().get_turn(session_id, turn_id)


def test_a_poll_racing_the_turns_commit_finds_its_record_not_404() -> None:
    store = _ReadBeforeItBegan()
    assembly = assemble(Settings(store="memory://"), store=store)
    with TestClient(assembly.app, raise_server_exceptions=False) as client:
        done = client.post("/v1/sessions/race/turns", json={"message": "hi"})
        assert done.status_code == 200, done.text
        turn_id = done.json()["turn_id"]
        store.miss_next = True
        polled = client.get(f"/v1/sessions/race/turns/{turn_id}")
    assert polled.status_code == 200, polled.text
    assert polled.json()["status"] == "completed"
