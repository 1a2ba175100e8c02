"""The process: the composition root that builds every part with what it needs
(`assembly`), and the server around the app (`server`, `accept`, `protocols`). The only
package that touches uvicorn's or websockets' internals, each use behind a feature check
with uvicorn's stock protocols as the fallback."""
