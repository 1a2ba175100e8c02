// The Vercel AI SDK's reconnectToStream after the process streaming a turn is killed.
// usage: node ai_sdk_reconnect.mjs <url of A> <url of B> <chat id> <message> <chunks>
// Sends the message to A (DefaultChatTransport.sendMessages), reads <chunks> text deltas,
// prints {"ready": true, "partial": ...} and waits for a line on stdin (the test kills A
// meanwhile); then resumes on B with reconnectToStream, reads the resumed stream with
// readUIMessageStream, and prints one JSON object: what the client ended up with.
import { createInterface } from "node:readline";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [urlA, urlB, chatId, text, chunks] = process.argv.slice(2);
const onA = new DefaultChatTransport({ api: `${urlA}/ai-sdk/v1/chat` });
const onB = new DefaultChatTransport({ api: `${urlB}/ai-sdk/v1/chat` });
const user = { id: `m-${chatId}`, role: "user", parts: [{ type: "text", text }] };
const textOf = (m) => (m ? m.parts.filter((p) => p.type === "text").map((p) => p.text).join("") : null);
const out = { partial: "" };

const first = await onA.sendMessages({
  chatId, messages: [user], trigger: "submit-message", messageId: undefined, abortSignal: undefined,
});
const reader = first.getReader();
let seen = 0;
while (seen < Number(chunks)) {
  const { value, done } = await reader.read();
  if (done) break;
  if (value.type === "text-delta") { out.partial += value.delta; seen += 1; }
}
console.log(JSON.stringify({ ready: true, partial: out.partial }));
// Go on reading A's stream until it breaks with A's death.
const pump = (async () => {
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) { out.firstStream = "ended"; return; }
      if (value.type === "text-delta") out.partial += value.delta;
    }
  } catch (error) {
    out.firstStream = `broke: ${error}`;
  }
})();
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
lines.close();
await pump;

const resumed = await onB.reconnectToStream({ chatId });
if (resumed === null) {
  out.resumedText = null;
} else {
  const [forMessage, forChunks] = resumed.tee();
  const chunkTypes = (async () => {
    const types = [];
    for await (const chunk of forChunks) types.push(chunk.type === "start" ? `start ${chunk.messageId}` : chunk.type);
    return types;
  })();
  let last = null;
  for await (const message of readUIMessageStream({ stream: forMessage })) last = message;
  out.resumedText = textOf(last);
  out.resumedMessageId = last.id;
  out.resumedChunks = await chunkTypes;
}
out.afterResume = await onB.reconnectToStream({ chatId });
console.log(JSON.stringify(out));
