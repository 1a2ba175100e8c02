"""An HTTP transport that serves requests from an ASGI app in this process and streams its
answer as the app writes it: how a framework's OpenAI client reaches the simulator for
`--llm sim://` with no socket, token by token (httpx's own `ASGITransport` hands over the
body only once the app has finished, which would turn a paced stream into one burst).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx2

__all__ = ["StreamingASGITransport"]

_ASGIApp = Any


class _BodyStream(httpx2.AsyncByteStream):
    """The app's body parts as they come; closing it tells the app the client left."""

    def __init__(
        self, parts: asyncio.Queue[bytes | None], task: asyncio.Task[None], left: asyncio.Event
    ) -> None:
        self.parts = parts
        self.task = task
        self.left = left

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (part := await self.parts.get()) is not None:
            yield part

    async def aclose(self) -> None:
        self.left.set()
        if not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class StreamingASGITransport(httpx2.AsyncBaseTransport):
    """`httpx2.AsyncClient(transport=StreamingASGITransport(app))`: each request runs the app
    in a task; the response is returned at `http.response.start` and its body streams."""

    def __init__(self, app: _ASGIApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
        url = request.url
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?")[0],
            "query_string": url.query,
            "server": (url.host, url.port),
            "client": ("127.0.0.1", 0),
            "root_path": "",
        }
        loop = asyncio.get_running_loop()
        started: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = loop.create_future()
        parts: asyncio.Queue[bytes | None] = asyncio.Queue()
        left = asyncio.Event()
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result((message["status"], list(message.get("headers", []))))
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    parts.put_nowait(message["body"])
                if not message.get("more_body", False):
                    parts.put_nowait(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except Exception as exc:
                if not started.done():
                    started.set_exception(exc)
            finally:
                parts.put_nowait(None)  # the body ends even if the app did not say so

        task = asyncio.ensure_future(run())
        try:
            status, headers = await started
        except BaseException:
            task.cancel()
            raise
        return httpx2.Response(status, headers=headers, stream=_BodyStream(parts, task, left))
