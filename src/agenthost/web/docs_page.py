"""The /docs page: every route of the endpoint table with a small form to try it, and the
WebSocket protocol in words. One self-contained page (inline style and script, nothing
fetched from elsewhere), so it works offline and behind any firewall."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import msgspec

from agenthost.web.endpoints import Endpoint

__all__ = ["docs_html"]

_STYLE = """
body{font-family:sans-serif;margin:2em;max-width:64em;line-height:1.4}
details{border-bottom:1px solid #ddd;padding:.4em 0}
summary{cursor:pointer}
summary code:first-child{display:inline-block;min-width:4.5em;font-weight:bold}
form.try{margin:.6em 0 .4em 1.5em}
form.try label{display:block;margin:.2em 0}
form.try input{width:22em}
form.try textarea{width:100%;height:4.5em;font-family:monospace}
output{display:block;white-space:pre-wrap;font-family:monospace;background:#f6f6f6;
 padding:.4em;margin-top:.4em;max-height:24em;overflow:auto}
"""

# Sends the form's request with fetch (the answer, streamed ones too, is shown as it
# arrives) or, for the WebSocket route, opens the socket, sends the frame and shows every
# frame back until `done`.
_SCRIPT = """
const key = () => document.getElementById('key').value.trim();
function target(form) {
  let path = form.dataset.path;
  const query = new URLSearchParams();
  for (const input of form.querySelectorAll('input[data-in]')) {
    if (input.dataset.in === 'path') {
      path = path.replace('{' + input.name + '}', encodeURIComponent(input.value));
    } else if (input.dataset.in === 'query' && input.value) {
      query.set(input.name, input.value);
    }
  }
  return path + (query.toString() ? '?' + query : '');
}
async function sendRequest(form, out) {
  const headers = key() ? {'Authorization': 'Bearer ' + key()} : {};
  for (const input of form.querySelectorAll('input[data-in=header]')) {
    if (input.value) headers[input.name] = input.value;
  }
  const init = {method: form.dataset.method, headers};
  const body = form.querySelector('textarea');
  if (body && body.value.trim()) {
    headers['content-type'] = 'application/json';
    init.body = body.value;
  }
  out.textContent = '...';
  try {
    const resp = await fetch(target(form), init);
    out.textContent = resp.status + ' ' + resp.statusText + '\\n';
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      out.textContent += decoder.decode(value, {stream: true});
    }
  } catch (err) {
    out.textContent = String(err);
  }
}
function openSocket(form, out) {
  const frame = form.querySelector('textarea').value;
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + target(form));
  out.textContent = '';
  ws.onopen = () => { out.textContent += '> ' + frame + '\\n'; ws.send(frame); };
  ws.onmessage = (m) => {
    out.textContent += '< ' + m.data + '\\n';
    if (JSON.parse(m.data).type === 'done') ws.close(1000);
  };
  ws.onclose = (c) => { out.textContent += 'closed ' + c.code + ' ' + c.reason + '\\n'; };
}
for (const form of document.querySelectorAll('form.try')) {
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const out = form.querySelector('output');
    if (form.dataset.websocket) openSocket(form, out); else sendRequest(form, out);
  });
}
"""


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[1]]
    for choice in ("anyOf", "oneOf"):
        if choice in schema:  # a union of frames: the first (a turn) is the one to try
            return _resolve(schema[choice][0], defs)
    return schema


def _example(body: Any) -> str:
    """A body to start from: the required fields of `body`'s schema, filled in."""
    schema = msgspec.json.schema(body)
    defs = schema.get("$defs", {})
    resolved = _resolve(schema, defs)
    out: dict[str, Any] = {}
    for name in resolved.get("required", []):
        prop = _resolve(resolved["properties"][name], defs)
        if "enum" in prop:
            out[name] = prop["enum"][0]
        elif prop.get("type") == "string":
            out[name] = "hello"
        elif prop.get("type") in ("integer", "number"):
            out[name] = 1
        elif prop.get("type") == "boolean":
            out[name] = False
        else:
            out[name] = {}
    return json.dumps(out)


def _form(ep: Endpoint) -> str:
    fields = []
    for part in ep.path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = html.escape(part[1:-1])
            fields.append(
                f'<label>{name} <input name="{name}" data-in="path" required '
                f'value="{"demo" if name == "session_id" else ""}"></label>'
            )
    for param in ep.params:
        if param.where in ("query", "header"):
            name = html.escape(param.name)
            fields.append(
                f'<label>{name} ({param.where}) <input name="{name}" '
                f'data-in="{param.where}" placeholder="{html.escape(param.description)}">'
                "</label>"
            )
    if ep.body is not None:
        label = "frame (JSON)" if ep.websocket else "body (JSON)"
        example = html.escape(_example(ep.body))
        fields.append(f"<label>{label}<textarea name=body>{example}</textarea></label>")
    kind = ' data-websocket="1"' if ep.websocket else ""
    button = "Open, send and watch" if ep.websocket else "Send"
    return (
        f'<form class="try" data-method="{html.escape(ep.method)}" '
        f'data-path="{html.escape(ep.path)}"{kind}>{"".join(fields)}'
        f"<button>{button}</button><output></output></form>"
    )


def _route(ep: Endpoint) -> str:
    method = "WS" if ep.websocket else html.escape(ep.method)
    if ep.websocket:
        notes = '<p>The protocol: <a href="#websocket">below</a>.</p>'
    else:
        about = ep.extra.get("description", "")
        notes = f"<p>{html.escape(about)}</p>" if about else ""
    return (
        f"<details><summary><code>{method}</code> <code>{html.escape(ep.path)}</code> "
        f"{html.escape(ep.summary)}</summary>{notes}{_form(ep)}</details>"
    )


def docs_html(endpoints: Sequence[Endpoint], *, title: str) -> bytes:
    """The page: the routes (each opens to a form that sends a request and shows the
    answer), then the WebSocket protocol."""
    routes = "\n".join(_route(ep) for ep in endpoints)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>The machine-readable API: <a href="/openapi.json">/openapi.json</a>.
Errors are <code>{{"error": {{"code", "message"}}}}</code>. Open a route to try it: the
answer (a stream too) shows under its form.</p>
<p><label>API key or JWT, sent as <code>Authorization: Bearer</code> (when the server
asks for auth) <input id="key" autocomplete="off" size="40"></label></p>
{routes}
<h2 id="websocket">The WebSocket protocol</h2>
<p><code>/v1/sessions/{{session_id}}/ws</code>. The client sends JSON text frames:
<code>{{"type": "turn", "message", "turn_id"?, "after"?}}</code> runs a turn (a
<code>turn_id</code> makes it resumable; a turn sent again with <code>after</code> resumes
after that event), and <code>{{"type": "resume", "turn_id", "after"}}</code> reads a
turn's events after <code>after</code>, from any process. The server answers with
<code>{{"type": "chunk", "turn_id", "seq", "text"}}</code> frames (with
<code>{{"type": "tool", "call_id", "name", "arguments", "result"}}</code> for a tool the
agent called and <code>{{"type": "interrupt", "value", "id"}}</code> when it asks the
human), then <code>{{"type": "done", ...the turn}}</code>, or <code>{{"type": "error", "code",
"message"}}</code>; <code>reset</code> tells the client to drop the text it has of a turn
that runs again. Every frame of a turn carries its <code>seq</code>: resume after the last
one seen. Close codes: 1000 normal or idle, 1003 binary frame, 1008 frame rate exceeded,
1009 frame too large, 1012 the process drains (reconnect, to any process, and resume),
4001 too slow to read, 4004 invalid session id, 4401 unauthorized. A browser cannot set
headers on a WebSocket: with auth on, use a client that sends
<code>Authorization</code> on the handshake. The frames' schemas are the
<code>x-websocket</code> extension of this route in <a href="/openapi.json">/openapi.json</a>;
a plain HTTP request to it answers 426.</p>
<script>{_SCRIPT}</script>
</body></html>
"""
    return page.encode()
