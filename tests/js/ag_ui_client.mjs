// AG-UI's HttpAgent (its event verifier runs on every event it receives) against a started
// agenthost. usage: node ag_ui_client.mjs <base url> <thread id> <message> <run id>
// Runs the message, then the same run id again (a retry). Prints one JSON object.
import { HttpAgent, verifyEvents, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";
import { lastValueFrom, toArray } from "rxjs";

const [base, threadId, text, runId] = process.argv.slice(2);
const url = `${base}/ag-ui/v1/run`;
const out = {};

const agent = new HttpAgent({ url, threadId });
agent.addMessage({ id: `u-${runId}`, role: "user", content: text });
const types = [];
const { newMessages } = await agent.runAgent({ runId }, { onEvent: ({ event }) => types.push(event.type) });
out.types = types;
out.newMessages = newMessages.map((m) => ({
  role: m.role, content: m.content, toolCalls: m.toolCalls, toolCallId: m.toolCallId,
}));

// The retry, read through the verifier explicitly.
const input = {
  threadId, runId, state: {}, tools: [], context: [], forwardedProps: {},
  messages: [{ id: `u-${runId}`, role: "user", content: text }],
};
const events = await lastValueFrom(
  transformHttpEventStream(
    runHttpRequest(() => fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(input),
    })),
  ).pipe(verifyEvents(false), toArray()),
);
out.retryText = events.filter((e) => e.type === "TEXT_MESSAGE_CONTENT").map((e) => e.delta).join("");
out.retryLast = events[events.length - 1].type;
console.log(JSON.stringify(out));
