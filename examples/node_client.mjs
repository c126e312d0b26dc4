// Stream a chat answer from a running gateway with ssegate.js, in Node >= 20.
//
//   make run                                  # in another terminal
//   node examples/node_client.mjs http://127.0.0.1:8000 "Tell me a story"
//
// The POST is sent once; if the connection drops mid-answer, ssegate.js resumes
// by GET on the stream the gateway named (Link rel="events"), after the last
// event received, so the text printed is the whole answer, once. Ctrl-C aborts.
// A browser imports the same module from the gateway: import { stream } from "/ssegate.js".
import { stream } from "../src/ssegate/gateway/static/ssegate.js";

const [base = "http://127.0.0.1:8000", prompt = "Hello!", model = "echo"] = process.argv.slice(2);
const controller = new AbortController();
process.once("SIGINT", () => controller.abort());

const answer = stream(`${base}/v1/chat/completions`, {
  method: "POST",
  headers: process.env.SSEGATE_API_KEY ? { authorization: `Bearer ${process.env.SSEGATE_API_KEY}` } : {},
  body: { model, messages: [{ role: "user", content: prompt }], stream: true },
  signal: controller.signal,
  untilDone: true, // stop at data: [DONE] instead of reconnecting
  onRetry: ({ attempt, delayMs }) => console.error(`\n[connection lost; resuming in ${Math.round(delayMs)} ms, attempt ${attempt}]`),
});

try {
  for await (const ev of answer) {
    const chunk = JSON.parse(ev.data);
    process.stdout.write(chunk.choices[0]?.delta.content ?? "");
  }
  process.stdout.write("\n");
} catch (error) {
  console.error(`\n${error.name}: ${error.message}`);
  process.exitCode = 1;
}
