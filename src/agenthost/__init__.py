"""agenthost: host anyone's AI agent for thousands of concurrent chat sessions.

The user-facing API: `Turn` (what an agent is handed), `Settings` (what a server is told),
`AgentHostClient` (the async client that resumes streams by itself) and `AgentHostError` (the
base of every error with an HTTP status and code).
"""

from typing import TYPE_CHECKING, Any

from agenthost.core.errors import AgentHostError
from agenthost.core.settings import Settings
from agenthost.core.version import __version__
from agenthost.turns.agents import Turn

if TYPE_CHECKING:
    from agenthost.client import AgentHostClient

__all__ = ["AgentHostClient", "AgentHostError", "Settings", "Turn", "__version__"]


def __getattr__(name: str) -> Any:
    # The client (and aiohttp) is imported on first use, not by every server process.
    if name == "AgentHostClient":
        from agenthost.client import AgentHostClient

        return AgentHostClient
    raise AttributeError(f"module 'agenthost' has no attribute {name!r}")
