"""agenthost: host anyone's AI agent for thousands of concurrent chat sessions.

The user-facing API: `Turn` (what an agent is handed), `Settings` (what a server is told) and
`AgentHostError` (the base of every error with an HTTP status and code).
"""

__version__ = "0.1.0"

from agenthost.agents import Turn
from agenthost.errors import AgentHostError
from agenthost.settings import Settings

__all__ = ["AgentHostError", "Settings", "Turn", "__version__"]
