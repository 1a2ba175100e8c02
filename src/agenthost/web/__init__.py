"""The web layer: the HTTP routes, SSE and WebSocket endpoints, their request and response
types and the OpenAPI document, all from one route table (`agenthost.web.routes`). Handlers
are thin: they check input, call the turn service and encode its answer."""
