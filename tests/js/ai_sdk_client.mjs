// The Vercel AI SDK's own chat transport against a started agenthost.
// usage: node ai_sdk_client.mjs <base url> <chat id> <message> [abort-after-chunks]
// Sends the message (DefaultChatTransport.sendMessages, read with readUIMessageStream);
// with abort-after-chunks, drops the connection after that many chunks and resumes with
// reconnectToStream. Prints one JSON object: what the client ended up with.
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, chatId, text, abortAfter] = process.argv.slice(2);
const transport = new DefaultChatTransport({ api: `${base}/ai-sdk/v1/chat` });
const user = { id: `m-${chatId}`, role: "user", parts: [{ type: "text", text }] };

async function lastMessage(stream) {
  let last = null;
  for await (const message of readUIMessageStream({ stream })) last = message;
  return last;
}

const textOf = (m) => (m ? m.parts.filter((p) => p.type === "text").map((p) => p.text).join("") : null);
const out = {};
out.idleResume = await transport.reconnectToStream({ chatId });

if (abortAfter === undefined) {
  const stream = await transport.sendMessages({
    chatId, messages: [user], trigger: "submit-message", messageId: undefined, abortSignal: undefined,
  });
  const message = await lastMessage(stream);
  out.role = message.role;
  out.text = textOf(message);
  out.parts = message.parts.map((p) => ({
    type: p.type, state: p.state, toolCallId: p.toolCallId, input: p.input, output: p.output, data: p.data,
  }));
  // regenerate: the same user message again
  const again = await transport.sendMessages({
    chatId, messages: [user], trigger: "regenerate-message", messageId: message.id, abortSignal: undefined,
  });
  out.regenerated = textOf(await lastMessage(again));
} else {
  const abort = new AbortController();
  const stream = await transport.sendMessages({
    chatId, messages: [user], trigger: "submit-message", messageId: undefined, abortSignal: abort.signal,
  });
  const reader = stream.getReader();
  let seen = 0;
  out.partial = "";
  while (seen < Number(abortAfter)) {
    const { value, done } = await reader.read();
    if (done) break;
    if (value.type === "text-delta") { out.partial += value.delta; seen += 1; }
  }
  abort.abort();
  const resumed = await transport.reconnectToStream({ chatId });
  out.resumedText = resumed === null ? null : textOf(await lastMessage(resumed));
}
out.afterResume = await transport.reconnectToStream({ chatId });
console.log(JSON.stringify(out));
