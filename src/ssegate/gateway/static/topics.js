// The topics page: a subscription with the browser's own EventSource.
//
// EventSource reconnects by itself after a drop and sends Last-Event-ID, so
// the gateway replays what was published meanwhile: nothing is missed, nothing
// shown twice. It cannot send headers: with auth on the key goes as
// ?access_token= (the gateway takes it out of the URL before anything logs it).

import { api, apiKey, el, keyField, setStatus } from "/static/common.js";

const TOPIC = "ssegate.topic";
const $ = (id) => document.getElementById(id);
const list = $("events");
const stateNode = $("state");
const detail = $("detail");
const toggle = $("toggle");
const topicInput = $("topic");
const typesInput = $("types");

let source = null;
let listened = new Set();
let opens = 0;
let shown = 0;
let lastSeen = "";

function setState(name, text) {
  stateNode.dataset.state = name;
  stateNode.textContent = text;
}

function subscribe() {
  unsubscribe();
  const topic = topicInput.value.trim();
  if (!topic) return;
  localStorage.setItem(TOPIC, topic);
  const url = new URL(`/v1/topics/${topic.split("/").map(encodeURIComponent).join("/")}`, location.href);
  const key = apiKey();
  if (key) url.searchParams.set("access_token", key);
  opens = 0;
  lastSeen = "";
  source = new EventSource(url);
  listened = new Set();
  for (const type of typesInput.value.split(",").map((t) => t.trim()).filter(Boolean)) listen(type);
  listen("gap");
  setState("connecting", "connecting");
  detail.textContent = "";
  toggle.textContent = "Unsubscribe";
  source.addEventListener("open", () => {
    opens += 1;
    setState("open", "live");
    detail.textContent = opens > 1 ? `reconnected (${opens - 1}×), resumed after the last event` : `topic ${topic}`;
    if (opens > 1) note(`reconnected; resumed after ${lastSeen || "the start"}`);
  });
  source.addEventListener("error", () => {
    if (!source) return;
    if (source.readyState === EventSource.CLOSED) {
      setState("error", "closed");
      detail.textContent = "The gateway refused the subscription (check the topic and the API key).";
      toggle.textContent = "Subscribe";
      source = null;
    } else {
      setState("connecting", "reconnecting");
      detail.textContent = "connection lost; the browser reconnects with Last-Event-ID";
    }
  });
}

function listen(type) {
  if (!source || listened.has(type)) return;
  listened.add(type);
  source.addEventListener(type, (event) => {
    lastSeen = event.lastEventId;
    show(type, event.data, event.lastEventId);
  });
}

function unsubscribe() {
  if (source) source.close();
  source = null;
  setState("closed", "not subscribed");
  detail.textContent = "";
  toggle.textContent = "Subscribe";
}

function show(type, data, id) {
  const item = el("li", "event");
  item.dataset.type = type;
  const when = el("span", "when", clock());
  const kind = el("span", "type", type);
  if (id) kind.append(el("span", "id", id));
  item.append(when, kind, el("span", "data", pretty(data)));
  list.prepend(item);
  shown += 1;
  $("count").textContent = String(shown);
  $("no-events").hidden = true;
}

function note(text) {
  const item = el("li", "event note");
  item.append(el("span", "when", clock()), el("span", "type", "·"), el("span", "data", text));
  list.prepend(item);
}

function clock() {
  return new Date().toLocaleTimeString([], { hourCycle: "h23" });
}

function pretty(data) {
  if (!/^\s*[[{]/.test(data)) return data;
  try {
    return JSON.stringify(JSON.parse(data), null, 2);
  } catch {
    return data;
  }
}

async function publish(event) {
  event.preventDefault();
  const topic = topicInput.value.trim();
  const type = $("pub-event").value.trim() || "message";
  const data = $("pub-data").value;
  const out = $("pub-status");
  listen(type); // before publishing: the event may arrive before the answer
  try {
    const path = `/v1/topics/${topic.split("/").map(encodeURIComponent).join("/")}`;
    const answer = await api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ event: type, data }),
    });
    setStatus(out, `Published as ${answer.id}.`, "ok");
    $("pub-data").value = "";
  } catch (error) {
    setStatus(out, error.message, "error");
  }
}

$("subscribe").addEventListener("submit", (event) => {
  event.preventDefault();
  if (source) unsubscribe();
  else subscribe();
});
$("publish").addEventListener("submit", publish);
$("clear").addEventListener("click", () => {
  list.replaceChildren();
  shown = 0;
  $("count").textContent = "0";
  $("no-events").hidden = false;
});
keyField(() => {
  if (source) subscribe();
});

const params = new URLSearchParams(location.search);
topicInput.value = params.get("topic") || localStorage.getItem(TOPIC) || "demo";
if (params.get("types")) typesInput.value = params.get("types");
subscribe();
