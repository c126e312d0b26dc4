// The chat page: a generation started by POST /v1/streams, read with ssegate.js.
//
// - The POST answers with the stream's id at once (before the model's first
//   token), and the answer is read by GET: a dropped connection resumes with
//   Last-Event-ID (ssegate.js does it) and the POST is never sent again.
// - The conversation and the answer under way (stream id, text received, last
//   event id) are written to sessionStorage at every event, in one item: a
//   reload resumes from exactly what was kept, so no text is lost or repeated.
// - Stop is DELETE /v1/streams/{id}: the gateway cancels the generation upstream.
// - Model output is rendered by markdown.js, which builds DOM nodes only.

import { stream } from "/ssegate.js";
import { renderMarkdown } from "/static/markdown.js";
import { api, authHeaders, el, errorMessage, keyField, setStatus } from "/static/common.js";

const STORE = "ssegate.chat.v1";
const MODEL = "ssegate.model";

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
const empty = $("empty");
const prompt = $("prompt");
const modelSelect = $("model");
const sendButton = $("send");
const stopButton = $("stop");
const status = $("status");

/**
 * messages: [{role, content, model?, state?, notice?, stats?}]
 * pending: the answer under way: {streamId, lastEventId, text, model, startedAt,
 *          firstAt, lastAt, chunks, usage, finish, error}
 */
let state = load();
let current = null; // {pending, view, stream, stopping}

function load() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE));
    if (saved && Array.isArray(saved.messages)) return saved;
  } catch {
    // a broken entry: start afresh
  }
  return { messages: [], pending: null };
}

function save() {
  sessionStorage.setItem(STORE, JSON.stringify(state));
}

// ---------------------------------------------------------------- models

async function loadModels() {
  try {
    const { data } = await api("/v1/models");
    const wanted = localStorage.getItem(MODEL);
    modelSelect.replaceChildren(...data.map((m) => new Option(m.id, m.id)));
    if (wanted && data.some((m) => m.id === wanted)) modelSelect.value = wanted;
    modelSelect.disabled = false;
    if (!current) setStatus(status, "");
  } catch (error) {
    modelSelect.replaceChildren(new Option("no models", ""));
    modelSelect.disabled = true;
    const hint = error.status === 401 ? " Type your API key at the top right." : "";
    setStatus(status, error.message + hint, "error");
  }
}

modelSelect.addEventListener("change", () => localStorage.setItem(MODEL, modelSelect.value));

// ---------------------------------------------------------------- rendering

function render() {
  conversation.replaceChildren();
  empty.hidden = state.messages.length > 0;
  conversation.append(empty);
  state.messages.forEach((message, index) => {
    conversation.append(message.role === "user" ? userView(message) : answerView(message, index));
  });
  scrollDown(true);
}

function userView(message) {
  const article = el("article", "msg user");
  article.append(el("div", "bubble", message.content));
  return article;
}

function answerView(message, index) {
  const article = el("article", "msg assistant");
  article.dataset.state = message.state || "done";
  const content = el("div", "content");
  content.append(renderMarkdown(message.content));
  if (message.notice) content.append(el("p", "notice", message.notice));
  const meta = el("footer", "meta");
  article.append(content, meta);
  fillMeta(meta, message.model, message.stats, index === state.messages.length - 1);
  return article;
}

function fillMeta(meta, model, stats, last) {
  meta.replaceChildren();
  if (model) meta.append(el("span", "model", model));
  if (stats) {
    if (stats.ttftMs != null) meta.append(el("span", "ttft", `TTFT ${formatMs(stats.ttftMs)}`));
    if (stats.rate != null) meta.append(el("span", "rate", `${stats.rate.toFixed(1)} tok/s`));
    if (stats.tokens) meta.append(el("span", "tokens", `${stats.tokens} tokens`));
  }
  if (last && !current && !state.pending) {
    const retry = el("button", "retry", "Retry");
    retry.type = "button";
    retry.addEventListener("click", retryLast);
    meta.append(retry);
  }
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
}

function statsOf(pending) {
  const tokens = pending.usage?.completion_tokens ?? pending.chunks;
  const stats = { tokens };
  if (pending.firstAt != null) stats.ttftMs = pending.firstAt - pending.startedAt;
  // A rate over less than a tenth of a second (a burst) says nothing.
  if (pending.chunks > 1 && pending.lastAt - pending.firstAt >= 100) {
    stats.rate = ((pending.chunks - 1) * 1000) / (pending.lastAt - pending.firstAt);
  }
  return stats;
}

function scrollDown(force = false) {
  const near = conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 120;
  if (force || near) conversation.scrollTop = conversation.scrollHeight;
}

// The typewriter: what arrived is revealed at a pace that follows the backlog
// (a few characters a frame while tokens trickle, faster when a burst came),
// so text flows smoothly instead of jumping a token at a time.
class Typewriter {
  constructor(view, shown) {
    this.view = view;
    this.content = view.querySelector(".content");
    this.target = "";
    this.shown = shown;
    this.finished = null; // the final state once the stream ended
    this.frame = 0;
    this.last = performance.now();
    this.drawn = -1;
  }

  update(text) {
    this.target = text;
    this.schedule();
  }

  finish(finalState) {
    this.finished = finalState;
    this.schedule();
  }

  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame((now) => this.tick(now));
  }

  tick(now) {
    this.frame = 0;
    const backlog = this.target.length - this.shown;
    const elapsed = Math.min(100, now - this.last);
    this.last = now;
    if (backlog > 0) {
      // ~250 ms to catch up, at least ~45 characters a second.
      const step = Math.max(1, Math.ceil(backlog * (elapsed / 250)), Math.round(elapsed * 0.045));
      this.shown = Math.min(this.target.length, this.shown + step);
    }
    this.draw();
    if (this.shown < this.target.length) this.schedule();
    else if (this.finished) this.settle();
  }

  draw() {
    if (this.drawn === this.shown && this.finished === null) return;
    this.drawn = this.shown;
    const fragment = renderMarkdown(this.target.slice(0, this.shown));
    if (this.finished === null || this.shown < this.target.length) {
      const caret = el("span", "caret");
      lastBlock(fragment).append(caret);
    }
    this.content.replaceChildren(fragment);
    scrollDown();
  }

  settle() {
    const { state: final, notice } = this.finished;
    this.content.replaceChildren(renderMarkdown(this.target));
    if (notice) this.content.append(el("p", "notice", notice));
    this.view.dataset.state = final;
  }
}

function lastBlock(fragment) {
  let node = fragment.lastElementChild;
  // Into the last item of a (nested) list, the code of a code block.
  while (node && (node.tagName === "UL" || node.tagName === "OL")) {
    const item = node.lastElementChild;
    const inner = item && item.lastElementChild;
    node = inner && (inner.tagName === "UL" || inner.tagName === "OL") ? inner : item;
  }
  if (node && node.tagName === "PRE") node = node.firstElementChild;
  if (!node || node.tagName === "HR") {
    node = document.createElement("p");
    fragment.append(node);
  }
  return node;
}

// ---------------------------------------------------------------- generating

function history() {
  return state.messages
    .filter((m) => m.state !== "error" || m.role === "user")
    .map((m) => ({ role: m.role, content: m.content }));
}

function send(text) {
  const model = modelSelect.value;
  if (!text.trim() || !model || current) return;
  state.messages.push({ role: "user", content: text });
  generate(model);
}

function generate(model) {
  const messages = history();
  state.messages.push({ role: "assistant", content: "", model, state: "streaming" });
  state.pending = {
    streamId: null,
    lastEventId: "",
    text: "",
    model,
    startedAt: Date.now(),
    firstAt: null,
    lastAt: null,
    chunks: 0,
    usage: null,
    finish: null,
    error: null,
  };
  save();
  render();
  // The generation is started by POST /v1/streams, which names its stream at
  // once; the answer is then read by GET. A reload at any moment after that
  // resumes it (the id is in sessionStorage before a token is generated).
  const body = { model, messages };
  follow(async (pending) => {
    const started = await api("/v1/streams", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    pending.streamId = started.id;
    save();
  });
}

function resume() {
  const pending = state.pending;
  render();
  if (!pending.streamId) {
    // Reloaded while POST /v1/streams was under way: its answer (the id) is lost.
    end({ state: "error", notice: "The page was reloaded before the answer started. Retry to ask again." });
    return;
  }
  follow(null, pending.lastEventId);
}

function eventsUrl(streamId) {
  return `/v1/streams/${encodeURIComponent(streamId)}?format=openai&include_usage=true`;
}

/** Start the generation with `start` (when given), then read its stream to the end. */
async function follow(start, lastEventId) {
  const pending = state.pending;
  const view = conversation.lastElementChild;
  const typewriter = new Typewriter(view, pending.text.length);
  typewriter.update(pending.text);
  busy(true);
  const run = { pending, view, stream: null, stopping: false, closing: false, typewriter };
  current = run;
  const meta = view.querySelector(".meta");
  try {
    if (start) await start(pending);
    if (run.closing) return;
    if (run.stopping) stop(); // Stop was pressed before the stream was named
    const es = stream(eventsUrl(pending.streamId), {
      headers: authHeaders(),
      lastEventId: lastEventId || undefined,
      untilDone: true,
      retry: { initialDelayMs: 1000, maxAttempts: 8 }, // a chat resumes sooner than 3 s
      onOpen: () => setStatus(status, ""),
      onRetry: (info) => {
        setStatus(status, `Connection lost; resuming (attempt ${info.attempt})…`, "warn");
      },
    });
    run.stream = es;
    for await (const ev of es) {
      accept(pending, ev);
      pending.lastEventId = ev.id;
      save(); // text and last id together: a reload resumes exactly here
      typewriter.update(pending.text);
      fillMeta(meta, pending.model, statsOf(pending), false);
      if (status.dataset.tone === "warn") setStatus(status, "");
    }
    if (run.closing) return;
    if (pending.error) {
      const stopped = pending.error.code === "cancelled";
      end({
        state: stopped ? "stopped" : "error",
        notice: stopped ? "Stopped." : pending.error.message,
      });
    } else {
      end({ state: "done" });
    }
  } catch (error) {
    if (run.closing) return;
    // ssegate.js's HTTPError carries the body; api()'s errors carry its message.
    const message = error.body !== undefined ? errorMessage(error.status, error.body) : error.message;
    const hint = error.status === 401 ? " Type your API key at the top right." : "";
    end({ state: "error", notice: message + hint });
  }
}

function accept(pending, ev) {
  let chunk;
  try {
    chunk = JSON.parse(ev.data);
  } catch {
    return; // not a chunk (a comment-like event): ignore
  }
  if (chunk.error) {
    pending.error = { code: chunk.error.code, message: chunk.error.message };
    return;
  }
  if (chunk.usage) pending.usage = chunk.usage;
  const choice = chunk.choices && chunk.choices[0];
  if (!choice) return;
  const content = choice.delta && choice.delta.content;
  if (content) {
    const now = Date.now();
    if (pending.firstAt == null) pending.firstAt = now;
    pending.lastAt = now;
    pending.chunks += 1;
    pending.text += content;
  }
  if (choice.finish_reason) pending.finish = choice.finish_reason;
}

function end(outcome) {
  const pending = state.pending;
  const message = state.messages[state.messages.length - 1];
  message.content = pending.text;
  message.state = outcome.state;
  message.stats = statsOf(pending);
  if (outcome.notice) message.notice = outcome.notice;
  if (pending.finish === "length" && outcome.state === "done") message.notice = "(cut at the token limit)";
  state.pending = null;
  save();
  const view = current ? current.view : conversation.lastElementChild;
  const typewriter = current ? current.typewriter : new Typewriter(view, pending.text.length);
  current = null;
  busy(false);
  typewriter.update(pending.text);
  typewriter.finish({ state: outcome.state, notice: message.notice });
  fillMeta(view.querySelector(".meta"), message.model, message.stats, true);
}

async function stop() {
  if (!current) return;
  current.stopping = true;
  stopButton.disabled = true;
  const id = current.pending.streamId;
  if (!id) return; // stopped as soon as the gateway names the stream
  try {
    await api(`/v1/streams/${encodeURIComponent(id)}`, { method: "DELETE" });
    setStatus(status, "Stopped: the model was told to stop.", "ok");
  } catch (error) {
    setStatus(status, `Stop failed: ${error.message}`, "error");
    stopButton.disabled = false;
  }
}

function retryLast() {
  if (current) return;
  const last = state.messages[state.messages.length - 1];
  if (last && last.role === "assistant") state.messages.pop();
  const model = modelSelect.value || last?.model;
  if (!model || !state.messages.length) return;
  generate(model);
}

function newChat() {
  if (current) {
    stop();
    current.closing = true;
    if (current.stream) current.stream.close();
    current = null;
  }
  state = { messages: [], pending: null };
  save();
  busy(false);
  setStatus(status, "");
  render();
  prompt.focus();
}

function busy(on) {
  sendButton.hidden = on;
  stopButton.hidden = !on;
  stopButton.disabled = false;
}

// ---------------------------------------------------------------- wiring

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = prompt.value;
  if (!text.trim() || current) return;
  prompt.value = "";
  autosize();
  send(text);
});
prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
function autosize() {
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight, 200)}px`;
}
prompt.addEventListener("input", autosize);
stopButton.addEventListener("click", stop);
$("new-chat").addEventListener("click", newChat);
keyField(() => loadModels());

loadModels();
if (state.pending) resume();
else render();
prompt.focus();
