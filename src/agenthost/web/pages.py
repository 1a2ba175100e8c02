"""/playground and /dashboard: static pages (HTML, one stylesheet, plain scripts) shipped in
the package under `web/static/` and served by every process. No build step, nothing fetched
from elsewhere: they work offline and behind any firewall. The pages call the same API as
any client (the playground with an API key, the dashboard with the admin token)."""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from agenthost.core.errors import NotFound

__all__ = ["ASSETS", "PageRoutes"]

ASSETS = {
    "pages.css": "text/css; charset=utf-8",
    "sse.js": "text/javascript; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
"""The files under /static/agenthost/, with their media types."""

_PAGES = ("playground.html", "dashboard.html")

# The pages load only their own files; nothing inline, nothing from another origin.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return resources.files("agenthost.web").joinpath("static", name).read_bytes()


class PageRoutes:
    def __init__(self, *, playground: bool) -> None:
        self.playground_on = playground
        self.files = {name: _read(name) for name in (*ASSETS, *_PAGES)}

    def _page(self, name: str) -> Response:
        return Response(
            self.files[name],
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"},
        )

    async def playground(self, request: Request) -> Response:
        if not self.playground_on:
            raise NotFound("the playground is off on this server (--playground)")
        return self._page("playground.html")

    async def dashboard(self, request: Request) -> Response:
        return self._page("dashboard.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            raise NotFound("no such file")
        return Response(
            self.files[name], media_type=media_type, headers={"Cache-Control": "no-cache"}
        )
