"""The browser the browser tests drive: Debian's Chromium through playwright, rendering a page
served by a real agenthost process."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Browser

from tests.fixtures.agenthost import AgentHostProcess


def test_chromium_renders_the_servers_api_document(
    browser: Browser, agenthost_factory: Callable[..., AgentHostProcess]
) -> None:
    agenthost = agenthost_factory()
    page = browser.new_page()
    try:
        response = page.goto(f"{agenthost.url}/docs")
        assert response is not None and response.status == 200
        assert "agenthost" in page.title().lower()
    finally:
        page.close()
