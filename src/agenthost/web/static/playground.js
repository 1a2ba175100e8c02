// The playground: a session's conversation, streamed turn by turn over SSE (fetch and a
// stream reader) or a WebSocket, with the turn's key, events, retry, resume and delete.
'use strict';

const $ = (id) => document.getElementById(id);
const STORE = {key: 'agenthost.apiKey', session: 'agenthost.sessionId',
               transport: 'agenthost.transport'};
const PAGE = 10;  // messages per page of history
const MAX_RESUMES = 40;
const state = {turn: null, oldestSeq: null, running: false};

function randomId(prefix) {
  const bytes = new Uint8Array(9);
  crypto.getRandomValues(bytes);
  return prefix + '-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const apiKey = () => $('api-key').value.trim();
const sessionId = () => $('session-id').value.trim();
const transport = () => document.querySelector('input[name=transport]:checked').value;
const sessionPath = () => '/v1/sessions/' + encodeURIComponent(sessionId());

function headers(extra) {
  const all = Object.assign({}, extra || {});
  if (apiKey()) all['Authorization'] = 'Bearer ' + apiKey();
  return all;
}

function setStatus(text) { $('status').textContent = text; }
function showError(text) {
  const box = $('error');
  box.textContent = text;
  box.hidden = false;
}
function clearError() { $('error').hidden = true; $('error').textContent = ''; }

function messageItem(role, text, label) {
  const item = document.createElement('li');
  item.className = role;
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = label || role;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  item.append(who, body);
  return item;
}

function logEvent(id, kind, data) {
  const item = document.createElement('li');
  const kindEl = document.createElement('span');
  kindEl.className = 'kind';
  kindEl.textContent = kind;
  item.append((id !== null && id !== undefined ? '#' + id + ' ' : ''), kindEl,
              ' ' + (data.length > 240 ? data.slice(0, 240) + '…' : data));
  item.dataset.kind = kind;
  $('events').append(item);
  $('events').scrollTop = $('events').scrollHeight;
}

// -- one turn's events, whichever transport brought them ------------------------------------

function newTurn(message, key) {
  const bubble = messageItem('assistant', '', 'assistant (streaming)');
  bubble.id = 'answer-' + key;
  return {message, key, lastId: 0, text: '', chunks: 0, done: false, bubble, status: 'sent'};
}

function render(turn) {
  turn.bubble.querySelector('.text').textContent = turn.text;
  const list = $('messages');
  list.scrollTop = list.scrollHeight;
}

function onEvent(turn, kind, id, payload, raw) {
  const seq = Number(id);
  if (id !== null && id !== undefined && Number.isFinite(seq)) {
    turn.lastId = Math.max(turn.lastId, seq);
    $('last-event').textContent = String(turn.lastId);
    $('resume-after').value = String(turn.lastId);
  }
  logEvent(id, kind, raw);
  if (kind === 'chunk') {
    turn.text += payload.text || '';
    turn.chunks += 1;
    turn.bubble.dataset.chunks = String(turn.chunks);
    render(turn);
  } else if (kind === 'reset') {
    turn.text = '';
    render(turn);
    setStatus('reset: the turn runs again (' + (payload.reason || 'its process stopped') + ')');
  } else if (kind === 'done') {
    if (typeof payload.response === 'string') turn.text = payload.response;
    turn.done = true;
    turn.status = 'completed';
    turn.bubble.querySelector('.who').textContent = 'assistant';
    render(turn);
  } else if (kind === 'error') {
    const detail = payload.error || payload;
    turn.done = true;
    turn.status = 'failed';
    turn.bubble.querySelector('.who').textContent = 'assistant (failed)';
    showError('The turn failed — ' + (detail.code || 'error') + ': ' + (detail.message || raw));
  } else {
    // An event type this page does not know (a tool call, a future kind): shown as it came.
    const item = messageItem('event', raw, kind + ' event');
    item.dataset.kind = kind;
    $('messages').insertBefore(item, turn.bubble);
  }
  $('turn-status').textContent = turn.done ? turn.status : 'streaming';
}

function parse(data) {
  try { return JSON.parse(data); } catch (err) { return {}; }
}

// -- SSE: fetch + a stream reader ------------------------------------------------------------

async function sseTurn(turn, after) {
  for (let attempt = 0; ; attempt++) {
    try {
      const extra = {'content-type': 'application/json', 'Accept': 'text/event-stream',
                     'Idempotency-Key': turn.key};
      if (after !== null) extra['Last-Event-ID'] = String(after);
      const response = await fetch(sessionPath() + '/turns', {
        method: 'POST', headers: headers(extra),
        body: JSON.stringify({message: turn.message, stream: true}),
      });
      if (response.status === 204) {
        turn.done = true;
        setStatus('Nothing after event ' + after + ': the turn had already ended.');
        return;
      }
      if (!response.ok) {
        const error = await describeError(response);
        if (response.status === 503 && attempt < MAX_RESUMES) {
          setStatus(error.text + '; trying again…');
          await sleep(1000);
          continue;
        }
        turn.done = true;
        turn.status = 'refused';
        turn.bubble.remove();
        $('turn-status').textContent = 'refused (' + error.status + ')';
        showError(error.text);
        return;
      }
      await readEvents(response, (ev) => onEvent(turn, ev.event, ev.id, parse(ev.data), ev.data));
    } catch (err) {
      // The connection broke (a server stopped mid-stream): resume below.
    }
    if (turn.done) return;
    if (attempt >= MAX_RESUMES) {
      showError('Lost the stream after event ' + turn.lastId + ': press Resume to try again.');
      return;
    }
    after = turn.lastId;
    setStatus('Connection lost after event ' + after + '; resuming (attempt ' + (attempt + 1) +
              ')…');
    logEvent(null, 'resume', 'Last-Event-ID: ' + after);
    await sleep(Math.min(300 * (attempt + 1), 2000));
  }
}

// -- WebSocket -------------------------------------------------------------------------------

function wsTurn(turn, after) {
  const url = location.origin.replace(/^http/, 'ws') + sessionPath() + '/ws';
  return new Promise((resolve) => {
    let attempt = 0;
    const open = () => {
      // A browser cannot set Authorization on a handshake: the key rides as a subprotocol
      // (the server answers with `agenthost`, never echoing the key).
      const socket = apiKey()
        ? new WebSocket(url, ['agenthost', 'bearer.' + apiKey()])
        : new WebSocket(url);
      socket.onopen = () => {
        const frame = after !== null
          ? {type: 'resume', turn_id: turn.key, after}
          : {type: 'turn', message: turn.message, turn_id: turn.key};
        socket.send(JSON.stringify(frame));
      };
      socket.onmessage = (message) => {
        const frame = parse(message.data);
        if (frame.type === 'error' && !frame.turn_id) {  // a refused frame or handshake
          turn.done = true;
          turn.status = 'refused';
          turn.bubble.remove();
          showError('WebSocket — ' + frame.code + ': ' + frame.message);
          socket.close(1000);
          return;
        }
        onEvent(turn, frame.type, frame.seq, frame, message.data);
        if (turn.done) socket.close(1000);
      };
      socket.onclose = async () => {
        if (turn.done || attempt >= MAX_RESUMES) {
          if (!turn.done) showError('Lost the WebSocket: press Resume to try again.');
          resolve();
          return;
        }
        attempt += 1;
        after = turn.lastId;
        setStatus('WebSocket closed after event ' + after + '; resuming…');
        logEvent(null, 'resume', 'after: ' + after);
        await sleep(Math.min(300 * attempt, 2000));
        open();
      };
    };
    open();
  });
}

// -- actions ---------------------------------------------------------------------------------

async function runTurn(turn, after) {
  clearError();
  state.turn = turn;
  state.running = true;
  $('send').disabled = true;
  $('retry').disabled = true;
  $('resume').disabled = true;
  $('turn-key').textContent = turn.key;
  $('turn-status').textContent = 'streaming';
  if (!turn.bubble.isConnected) $('messages').append(turn.bubble);
  setStatus('Streaming over ' + (transport() === 'ws' ? 'WebSocket' : 'SSE') + '…');
  try {
    if (transport() === 'ws') await wsTurn(turn, after);
    else await sseTurn(turn, after);
  } finally {
    state.running = false;
    $('send').disabled = false;
    $('retry').disabled = false;
    $('resume').disabled = false;
  }
  if (turn.status === 'completed') setStatus('Done: ' + turn.chunks + ' chunks.');
  await loadMetadata();
}

async function send(event) {
  event.preventDefault();
  const message = $('message').value;
  if (!message.trim() || state.running) return;
  if (!sessionId()) $('session-id').value = randomId('play');
  sessionStorage.setItem(STORE.session, sessionId());
  $('message').value = '';
  $('messages').append(messageItem('user', message));
  const turn = newTurn(message, randomId('turn'));
  $('events').replaceChildren();
  await runTurn(turn, null);
}

async function retry() {
  const previous = state.turn;
  if (!previous || state.running) return;
  const turn = newTurn(previous.message, previous.key);  // the same Idempotency-Key
  previous.bubble.replaceWith(turn.bubble);
  logEvent(null, 'retry', 'Idempotency-Key: ' + turn.key);
  await runTurn(turn, null);
}

async function resume() {
  const previous = state.turn;
  if (!previous || state.running) return;
  const after = Math.max(0, Number($('resume-after').value) || 0);
  clearError();
  const turn = newTurn(previous.message, previous.key);
  if (after > 0 && after <= previous.lastId) turn.text = previous.text;  // keep what came
  turn.lastId = after;
  previous.bubble.replaceWith(turn.bubble);
  render(turn);
  logEvent(null, 'resume', 'Last-Event-ID: ' + after);
  state.turn = turn;
  state.running = true;
  $('resume').disabled = true;
  try {
    const response = await fetch(
      sessionPath() + '/turns/' + encodeURIComponent(turn.key) + '/stream',
      {headers: headers({'Accept': 'text/event-stream', 'Last-Event-ID': String(after)})});
    if (response.status === 204) {
      setStatus('Nothing after event ' + after + ': the stream has ended.');
      turn.done = true;
    } else if (!response.ok) {
      showError((await describeError(response)).text);
    } else {
      await readEvents(response, (ev) => onEvent(turn, ev.event, ev.id, parse(ev.data), ev.data));
      setStatus('Resumed after event ' + after + '.');
    }
  } catch (err) {
    showError('The stream broke: ' + err);
  } finally {
    state.running = false;
    $('resume').disabled = false;
  }
}

async function loadHistory(older) {
  if (!sessionId()) return;
  const query = new URLSearchParams({limit: String(PAGE)});
  if (older && state.oldestSeq !== null) query.set('before', String(state.oldestSeq));
  const response = await fetch(sessionPath() + '/messages?' + query, {headers: headers()});
  if (response.status === 404) {
    $('messages').replaceChildren();
    $('older').hidden = true;
    state.oldestSeq = null;
    setStatus('A new session: the first turn creates it.');
    return;
  }
  if (!response.ok) {
    showError((await describeError(response)).text);
    return;
  }
  const {messages} = await response.json();
  const items = messages.map((m) => {
    const item = messageItem(m.role, m.content);
    item.dataset.seq = String(m.seq);
    return item;
  });
  if (older) $('messages').prepend(...items);
  else $('messages').replaceChildren(...items);
  if (messages.length) state.oldestSeq = messages[0].seq;
  $('older').hidden = !(messages.length === PAGE && state.oldestSeq > 0);
}

async function loadMetadata() {
  if (!sessionId()) return;
  const response = await fetch(sessionPath(), {headers: headers()});
  $('metadata').textContent = response.ok
    ? JSON.stringify(await response.json(), null, 2)
    : (response.status === 404 ? 'not created yet' : (await describeError(response)).text);
}

async function openSession() {
  clearError();
  sessionStorage.setItem(STORE.session, sessionId());
  state.oldestSeq = null;
  await loadHistory(false);
  await loadMetadata();
}

async function createSession() {
  clearError();
  const response = await fetch('/v1/sessions', {
    method: 'POST', headers: headers({'content-type': 'application/json'}), body: '{}'});
  if (!response.ok) {
    showError((await describeError(response)).text);
    return;
  }
  const session = await response.json();
  $('session-id').value = session.session_id;
  setStatus('Created session ' + session.session_id + '.');
  await openSession();
}

async function deleteSession() {
  if (!sessionId()) return;
  clearError();
  const response = await fetch(sessionPath(), {method: 'DELETE', headers: headers()});
  if (response.status === 204) {
    $('messages').replaceChildren();
    $('events').replaceChildren();
    $('metadata').textContent = 'deleted';
    $('older').hidden = true;
    state.turn = null;
    $('retry').disabled = true;
    $('resume').disabled = true;
    setStatus('Deleted session ' + sessionId() + '.');
  } else {
    showError((await describeError(response)).text);
  }
}

function start() {
  $('api-key').value = sessionStorage.getItem(STORE.key) || '';
  $('session-id').value = sessionStorage.getItem(STORE.session) || randomId('play');
  const saved = sessionStorage.getItem(STORE.transport);
  if (saved) document.querySelector('input[name=transport][value=' + saved + ']').checked = true;
  $('api-key').addEventListener('input', () => sessionStorage.setItem(STORE.key, apiKey()));
  for (const radio of document.querySelectorAll('input[name=transport]')) {
    radio.addEventListener('change', () => sessionStorage.setItem(STORE.transport, transport()));
  }
  $('send-form').addEventListener('submit', send);
  $('message').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('send-form').requestSubmit();
    }
  });
  $('open-session').addEventListener('click', openSession);
  $('new-session').addEventListener('click', createSession);
  $('delete-session').addEventListener('click', deleteSession);
  $('older').addEventListener('click', () => loadHistory(true));
  $('retry').addEventListener('click', retry);
  $('resume').addEventListener('click', resume);
  openSession();
}

document.addEventListener('DOMContentLoaded', start);
