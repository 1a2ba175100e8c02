"""No input gets a 500: random bodies, headers and ids against every route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from agenthost.core.settings import Settings
from agenthost.runtime.assembly import build_app

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
turn_like = st.fixed_dictionaries(
    {},
    optional={
        "message": json_values,
        "metadata": json_values,
        "on_busy": st.sampled_from(["reject", "enqueue", "interrupt", "x"]) | json_values,
        "stream": json_values,
    },
)
# Printable ASCII a client can put in a path (the client library refuses control characters).
ids = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
    min_size=1,
    max_size=140,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db = Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.db"
    settings_ = Settings(
        llm="sim://", store=f"sqlite:///{db}", max_body_bytes=2048, enqueue_timeout=0.5
    )
    with TestClient(build_app(settings_), raise_server_exceptions=False) as c:
        yield c


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=turn_like | json_values, session_id=ids, key=st.none() | st.text(max_size=20))
def test_turn_route_never_answers_5xx(
    client: TestClient, body: object, session_id: str, key: str | None
) -> None:
    headers = {} if key is None or not key.isascii() else {"Idempotency-Key": key}
    resp = client.post(f"/v1/sessions/{session_id}/turns", json=body, headers=headers)
    assert resp.status_code < 500, resp.text
    assert resp.status_code in (200, 400, 404, 405, 409, 413, 422), resp.text


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=300), session_id=ids)
def test_raw_bytes_never_answer_5xx(client: TestClient, raw: bytes, session_id: str) -> None:
    for path in (f"/v1/sessions/{session_id}/turns", "/v1/sessions", f"/chat/{session_id}"):
        resp = client.post(path, content=raw, headers={"content-type": "application/json"})
        assert resp.status_code < 500, (path, resp.text)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(session_id=ids, limit=st.text(max_size=6), before=st.text(max_size=6))
def test_reads_never_answer_5xx(
    client: TestClient, session_id: str, limit: str, before: str
) -> None:
    for resp in (
        client.get(f"/v1/sessions/{session_id}"),
        client.get(
            f"/v1/sessions/{session_id}/messages", params={"limit": limit, "before": before}
        ),
        client.get(f"/v1/sessions/{session_id}/turns/{session_id}"),
        client.delete(f"/v1/sessions/{session_id}"),
    ):
        assert resp.status_code < 500, resp.text
