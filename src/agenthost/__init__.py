"""agenthost: host anyone's AI agent for thousands of concurrent chat sessions."""

__version__ = "0.1.0"
