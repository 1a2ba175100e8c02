"""Runs the ASGI app on uvicorn with uvloop and httptools, after checking the settings can
work (store URL, LLM URL, agent import) so a mistake fails at start with a clear message."""

from __future__ import annotations

import logging
import math
import sys

import uvicorn

from agenthost.agents import load_agent
from agenthost.app import build_app
from agenthost.llm import create_llm
from agenthost.settings import Settings
from agenthost.stores import create_store

__all__ = ["run"]

log = logging.getLogger("agenthost")


def run(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM. Exits with status 2 on a configuration error."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        agent = load_agent(settings.app)
        store = create_store(settings.store)
        llm = create_llm(settings.llm, model=settings.llm_model, api_key=settings.llm_api_key)
    except (ValueError, TypeError) as exc:
        print(f"agenthost: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app = build_app(settings, store=store, agent=agent, llm=llm)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        ws="none",
        lifespan="on",
        access_log=False,
        # Nothing here reads the client address; skipping the proxy-header rewrite saves
        # work on every request.
        proxy_headers=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.turn_timeout),
    )
    log.info(
        "agenthost serving on http://%s:%d (store %s, llm %s)",
        settings.host,
        settings.port,
        store.url,
        settings.llm,
    )
    uvicorn.Server(config).run()
