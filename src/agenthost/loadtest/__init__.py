"""`agenthost loadtest`: drive sessions at a server and prove afterwards that every turn it
acknowledged is in the history once, in order, with its own answer."""

from agenthost.loadtest.config import LoadConfig
from agenthost.loadtest.report import LoadReport
from agenthost.loadtest.runner import run_load

__all__ = ["LoadConfig", "LoadReport", "run_load"]
