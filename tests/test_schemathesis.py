"""schemathesis against a running server's /openapi.json: on every route, generated requests
(valid and invalid) get no 5xx, only documented statuses, and bodies that match the schema.

Valid data is taken: a request the document allows gets 2xx, or 401/404/409 (credentials,
a resource that does not exist, a conflict with the session's state), or one of three
refusals the document names in words because OpenAPI cannot state them as a schema: an
Idempotency-Key sent before with another request (422 `idempotency_key_reused`: the key's
state), a streamed turn with Last-Event-ID but no Idempotency-Key (400 `turn_id_required`:
parameters cannot require each other), and an adapter request whose newest user message has
no text or id (422, "the newest user message ...": JSON Schema can require a user message
but cannot name the newest one).

The schema is built at import, from the same endpoint table the server serves (a test checks
the running server's /openapi.json is that document), because schemathesis parametrizes
tests at collection time, before any server runs.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    CheckContext,
    allow_header_conformance,
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from schemathesis.core.failures import Failure
from schemathesis.core.transport import Response
from schemathesis.generation.case import Case
from schemathesis.schemas import APIOperation
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app
from agenthost.web.adapters.newest_user import NEWEST_USER
from tests.fixtures.agenthost import AgentHostProcess

# The document as the app serves it (building the app opens nothing).
DOCUMENT = (
    TestClient(build_app(Settings(llm="sim://", store="memory://"))).get("/openapi.json").content
)
schema = schemathesis.openapi.from_dict(json.loads(DOCUMENT))
# The coverage phase also sends a query parameter twice (`?limit=1&limit=2`).
schema.config.phases.coverage.generate_duplicate_query_parameters = True
schema.config.checks.positive_data_acceptance.expected_statuses = [
    "2xx",
    "401",
    "404",
    "409",
    "426",  # 401: admin off; 426: a WebSocket route over HTTP
]


def refused_by_a_rule_in_words(response: Response) -> bool:
    """One of the three refusals of a schema-valid request (see the module's docstring)."""
    if response.status_code not in (400, 422):
        return False
    error = response.json()["error"]
    return error["code"] in ("idempotency_key_reused", "turn_id_required") or (
        error["code"] == "validation_error" and error["message"].startswith(NEWEST_USER)
    )


def valid_data_is_taken(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """schemathesis' positive-data acceptance, but for those three refusals."""
    try:
        return positive_data_acceptance(ctx, response, case)
    except Failure:
        if refused_by_a_rule_in_words(response):
            return None
        raise


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    # What the document forbids, the server refuses (4xx): the document says exactly what
    # the server accepts (e.g. an integer Last-Event-ID, `before` within its maximum).
    negative_data_rejection,
    # What the document allows, the server takes (a conflict with the session's state aside):
    # e.g. a `before` past the server's cap must be outside the document's maximum too.
    valid_data_is_taken,
    # A method a path does not have gets 405 whose Allow header lists every one it has.
    unsupported_method,
    allow_header_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHostProcess]:
    logs = Path(tmp_path_factory.mktemp("schemathesis"))
    # The defaults of an embedded server (no auth, no admin token), on the in-memory store.
    proc = AgentHostProcess({"store": "memory://", "llm": "sim://"}, logs / "agenthost.log")
    proc.start()
    yield proc
    proc.stop()


def test_the_server_serves_this_document(server: AgentHostProcess) -> None:
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=5) as resp:
        assert json.loads(resp.read()) == json.loads(DOCUMENT)


# One pytest test per operation, by name: schemathesis' own `schema.parametrize()` gives all
# of them one node id, which pytest-xdist would run once instead of thirteen times.
OPERATIONS = [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize(
    "operation", OPERATIONS, ids=[f"{op.method.upper()} {op.path}" for op in OPERATIONS]
)
def test_every_route_conforms(operation: APIOperation, server: AgentHostProcess) -> None:
    @given(operation.as_strategy())
    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: Case[Any]) -> None:
        # Path parameters are often "0": with that session present, the routes answer 200
        # rather than 404, so what they accept is tested, not only refusals.
        ensure_session(server, "0")
        case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=10)

    conforms()


def ensure_session(server: AgentHostProcess, session_id: str) -> None:
    request = urllib.request.Request(
        server.url + "/v1/sessions",
        data=json.dumps({"session_id": session_id}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert resp.status == 201
    except urllib.error.HTTPError as exc:
        assert exc.code == 409, exc.code  # it exists already
