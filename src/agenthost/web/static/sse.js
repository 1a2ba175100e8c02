// Server-sent events read from a fetch response (EventSource cannot POST or send headers).
// readEvents(response, onEvent) calls onEvent({id, event, data}) for each event as it
// arrives and resolves when the stream ends; it rejects if the connection breaks.
'use strict';

async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  let event = {id: null, event: 'message', data: []};
  const line = (text) => {
    if (text === '') {
      if (event.data.length) {
        onEvent({id: event.id, event: event.event, data: event.data.join('\n')});
      }
      event = {id: null, event: 'message', data: []};
      return;
    }
    if (text.startsWith(':')) return;  // a comment: the server's keep-alive ping
    const colon = text.indexOf(':');
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? '' : text.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') event.data.push(value);
    else if (field === 'event') event.event = value;
    else if (field === 'id') event.id = value;
  };
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const newline = buffer[end] === '\r' && buffer[end + 1] === '\n' ? 2 : 1;
      line(buffer.slice(0, end));
      buffer = buffer.slice(end + newline);
    }
  }
  line('');
}

// The error answer of a failed request as one sentence, with Retry-After when given.
async function describeError(response) {
  let code = '', message = '';
  try {
    const body = await response.json();
    code = body.error.code;
    message = body.error.message;
  } catch (err) {
    message = response.statusText;
  }
  let text = response.status + ' ' + (response.statusText || '') + ' — ' +
    (code ? code + ': ' : '') + message;
  const retry = response.headers.get('Retry-After');
  if (retry) text += ' (retry after ' + retry + ' s)';
  return {status: response.status, code, message, text};
}
