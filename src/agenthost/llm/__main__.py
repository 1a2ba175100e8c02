"""`python -m agenthost.llm [--port 9000 ...]`: the `agenthost llm-sim` server on its own,
for when the main CLI is not at hand (test fixtures run it this way)."""

from __future__ import annotations

import typer

from agenthost.llm.cli import llm_sim

if __name__ == "__main__":
    typer.run(llm_sim)
