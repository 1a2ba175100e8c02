"""A small contract-following chat server for the load-test tests, with faults on demand:
`drop` loses a turn, `duplicate` stores one twice, `reorder` swaps two, `mismatch` stores an
answer that is not the one returned, `flaky` answers 503 + Retry-After to first attempts.
A background turn (`background: true`) is stored the same way and answered 202; its answer
is read with `GET .../turns/{tid}` (completed at once) or its one-event stream."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fixtures.agenthost import free_port


def build(fault: str | None) -> tuple[Starlette, dict[str, Any]]:
    histories: dict[str, list[dict[str, Any]]] = {}
    answers: dict[tuple[str, str], str] = {}
    seen_keys: dict[str, int] = {}
    stats: dict[str, Any] = {"turns": 0, "keys": seen_keys}

    async def turn(request: Request) -> JSONResponse:
        sid = request.path_params["sid"]
        body = await request.json()
        tid = request.headers["idempotency-key"]
        seen_keys[tid] = seen_keys.get(tid, 0) + 1
        if fault == "flaky" and seen_keys[tid] == 1:
            return JSONResponse({"error": {"code": "unavailable", "message": "try again"}},
                                status_code=503, headers={"Retry-After": "0"})  # fmt: skip
        if (sid, tid) in answers:
            return answered(sid, tid, body)
        stats["turns"] += 1
        n = stats["turns"]
        answer = f"echo {body['message']}"
        answers[sid, tid] = answer
        history = histories.setdefault(sid, [])
        pair = [
            {"role": "user", "content": body["message"], "turn_id": tid},
            {"role": "assistant", "content": answer, "turn_id": tid},
        ]
        if fault == "drop" and n == 3:
            pass
        elif fault == "duplicate" and n == 3:
            history += pair + [dict(m) for m in pair]
        elif fault == "mismatch" and n == 3:
            history += [pair[0], {**pair[1], "content": "someone else's answer"}]
        elif fault == "reorder" and len(history) >= 2 and n == 5:
            history[-2:-2] = pair  # insert before the previous turn
        else:
            history += pair
        for seq, m in enumerate(history):
            m["seq"] = seq
            m.setdefault("created_at", time.time())
        return answered(sid, tid, body)

    def answered(sid: str, tid: str, body: dict[str, Any]) -> JSONResponse:
        if body.get("background"):
            return JSONResponse(
                {"session_id": sid, "turn_id": tid, "status": "pending"},
                status_code=202,
                headers={"Location": f"/v1/sessions/{sid}/turns/{tid}"},
            )
        return JSONResponse({"session_id": sid, "turn_id": tid, "response": answers[sid, tid]})

    async def status(request: Request) -> JSONResponse:
        sid, tid = request.path_params["sid"], request.path_params["tid"]
        return JSONResponse({"turn_id": tid, "status": "completed", "response": answers[sid, tid]})

    async def stream(request: Request) -> Response:
        sid, tid = request.path_params["sid"], request.path_params["tid"]
        done = json.dumps({"session_id": sid, "turn_id": tid, "response": answers[sid, tid]})
        return Response(f"id: 1\nevent: done\ndata: {done}\n\n",
                        media_type="text/event-stream")  # fmt: skip

    async def messages(request: Request) -> JSONResponse:
        history = histories.get(request.path_params["sid"])
        if history is None:
            return JSONResponse({"error": {"code": "session_not_found", "message": "no"}}, 404)
        limit = int(request.query_params.get("limit", 100))
        before = int(request.query_params.get("before", len(history)))
        page = [m for m in history if m["seq"] < before][-limit:]
        return JSONResponse({"messages": page})

    app = Starlette(routes=[
        Route("/v1/sessions/{sid}/turns", turn, methods=["POST"]),
        Route("/v1/sessions/{sid}/messages", messages),
        Route("/v1/sessions/{sid}/turns/{tid}", status),
        Route("/v1/sessions/{sid}/turns/{tid}/stream", stream),
    ])  # fmt: skip
    return app, stats


@contextmanager
def serving(fault: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Run the server on a free loopback port in a thread; yield (base URL, stats)."""
    app, stats = build(fault)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", stats
    finally:
        server.should_exit = True
        thread.join(10)
