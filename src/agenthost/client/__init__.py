"""agenthost's async Python client: sessions, turns, streams (SSE and WebSocket) and history,
with idempotency keys, failover across processes, and streams that resume by themselves.

    async with AgentHostClient(["http://127.0.0.1:8001", "http://127.0.0.1:8002"]) as client:
        async for event in client.stream("demo", "hello"):
            if isinstance(event, Chunk):
                print(event.text, end="")
"""

from agenthost.client.client import AgentHostClient
from agenthost.client.errors import (
    AgentHostClientError,
    APIError,
    NotFound,
    RetriesExhausted,
    StreamProtocolError,
    TurnFailed,
)
from agenthost.client.models import (
    Chunk,
    Done,
    ErrorDetail,
    Interrupt,
    Message,
    Reset,
    Session,
    StreamEvent,
    ToolCall,
    TurnResult,
    TurnStatus,
)
from agenthost.client.response_stream import ResponseStream
from agenthost.client.retry import RetryPolicy

__all__ = [
    "APIError",
    "AgentHostClient",
    "AgentHostClientError",
    "Chunk",
    "Done",
    "ErrorDetail",
    "Interrupt",
    "Message",
    "NotFound",
    "Reset",
    "ResponseStream",
    "RetriesExhausted",
    "RetryPolicy",
    "Session",
    "StreamEvent",
    "StreamProtocolError",
    "ToolCall",
    "TurnFailed",
    "TurnResult",
    "TurnStatus",
]
