"""The OpenAPI 3.1 document, generated from the endpoint table (the /docs page that
renders it for people is `docs_page`).

Each `Endpoint` names the msgspec types its handler decodes and encodes; schemas come from
`msgspec.json.schema_components` over those same types, so the document matches the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from agenthost.web.endpoints import Endpoint
from agenthost.web.schemas import ErrorBody, TurnAccepted

__all__ = ["openapi_document"]

# Open API 3.1 has an event stream's `schema` describe each event (as 3.2's `itemSchema`).
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "The event number."},
        "event": {
            "type": "string",
            "enum": ["chunk", "tool", "interrupt", "reset", "done", "error"],
            "description": "chunk, tool, interrupt, then done or error (reset: a rerun).",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": (
                "chunk: {text}; tool: {call_id, name, arguments, result}; interrupt: "
                "{value, id}; reset: {reason}; done: the turn; error: {code, message}."
            ),
        },
    },
    "required": ["data"],
}

# A client protocol's stream (OpenAI, AI SDK, AG-UI): its own chunks as `data:` lines, the
# event named only where the protocol names it (the Responses API), `[DONE]` where it ends so.
PROTOCOL_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "description": "The protocol's event name, if it has one."},
        "data": {
            "type": "string",
            "description": "One of the protocol's chunks as JSON, or [DONE] where it ends so.",
        },
    },
    "required": ["data"],
}

FLEET_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["fleet"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "The fleet as GET /admin/fleet answers it.",
        },
    },
    "required": ["data"],
}

_EVENT_SCHEMAS = {
    "turn": SSE_EVENT_SCHEMA,
    "protocol": PROTOCOL_EVENT_SCHEMA,
    "fleet": FLEET_EVENT_SCHEMA,
}

_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    204: "No Content (a stream resumed after its final event: nothing more to send)",
    400: "Bad request: malformed JSON (invalid_json), JSON nested too deeply (json_too_deep), "
    "bad id (invalid_session_id, bad_request), Last-Event-ID without Idempotency-Key "
    "(turn_id_required)",
    401: "Missing or wrong credentials",
    404: "Not found",
    409: "Conflict: session busy, exists, or turn interrupted",
    413: "Over a size limit: the body (payload_too_large), the message (message_too_long) or "
    "the metadata encoded as JSON (metadata_too_large)",
    426: "A WebSocket route asked with a plain HTTP request (upgrade_required)",
    422: "A field is missing, of the wrong type or out of range (validation_error), the "
    "metadata nests too deeply (metadata_too_deep), an Idempotency-Key sent again with a "
    "different request (idempotency_key_reused), or Last-Event-ID beyond the end of a "
    "finished stream (event_beyond_end)",
    429: "Rate limited (see Retry-After)",
    502: "The agent or its LLM failed; the turn is recorded as failed",
    503: "Unavailable: store down, draining or overloaded (see Retry-After)",
}


def _path_params(path: str) -> list[dict[str, Any]]:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(
                {
                    "name": part[1:-1],
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._:-]{1,128}$"},
                }
            )
    return out


def openapi_document(endpoints: Sequence[Endpoint], *, title: str, version: str) -> bytes:
    """The OpenAPI 3.1 document for `endpoints`, encoded as JSON."""
    types: list[Any] = [ErrorBody, TurnAccepted]  # TurnAccepted: a background turn's 202
    for ep in endpoints:
        types += [t for t in (ep.body, ep.response) if t is not None]
    unique = list(dict.fromkeys(types))
    schemas, components = msgspec.json.schema_components(
        unique, ref_template="#/components/schemas/{name}"
    )
    ref = dict(zip(unique, schemas, strict=True))
    error_ref = ref[ErrorBody]

    paths: dict[str, dict[str, Any]] = {}
    for ep in endpoints:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
            "tags": list(ep.tags),
        }
        params = _path_params(ep.path) + [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "schema": p.schema,
                "description": p.description,
            }
            for p in ep.params
        ]
        if params:
            op["parameters"] = params
        if ep.websocket:
            op["responses"] = {
                "101": {"description": "Switching Protocols: the WebSocket is open"},
                **{
                    str(status): {
                        "description": _STATUS_TEXT.get(status, "Error"),
                        "content": {"application/json": {"schema": error_ref}},
                    }
                    for status in ep.errors
                },
            }
            op["x-websocket"] = {
                "client-frames": ref[ep.body] if ep.body is not None else {},
                "server-frames": ref[ep.response] if ep.response is not None else {},
            }
            op.update(ep.extra)
            paths.setdefault(ep.path, {})[ep.method.lower()] = op
            continue
        if ep.body is not None:
            op["requestBody"] = {
                "required": ep.method != "POST" or ep.body.__name__ != "CreateSession",
                "content": {"application/json": {"schema": ref[ep.body]}},
            }
        ok: dict[str, Any] = {"description": _STATUS_TEXT.get(ep.status, "OK")}
        content: dict[str, Any] = {}
        if ep.response is not None:
            content["application/json"] = {"schema": ref[ep.response]}
        if ep.streams:
            content["text/event-stream"] = {"schema": _EVENT_SCHEMAS[ep.events]}
        if content:
            ok["content"] = content
        responses: dict[str, Any] = {str(ep.status): ok}
        for status in ep.errors:
            if status == 204:  # an answer with no body, listed among the others
                responses["204"] = {"description": _STATUS_TEXT[204]}
                continue
            responses[str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": error_ref}},
            }
        # `extra` may add answers (a 204) beside the ones derived from the endpoint.
        responses.update(ep.extra.get("responses", {}))
        op["responses"] = responses
        op.update({k: v for k, v in ep.extra.items() if k != "responses"})
        paths.setdefault(ep.path, {})[ep.method.lower()] = op

    doc = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
    return msgspec.json.encode(doc)
