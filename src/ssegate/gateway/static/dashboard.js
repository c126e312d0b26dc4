// The operator's dashboard: GET /v1/dashboard/events (a `snapshot` event every
// second) with the browser's EventSource; tiles, a table per model and charts
// drawn on canvas. With auth on, the key (ops scope) goes as ?access_token=.

import { apiKey, el, errorMessage, keyField } from "/static/common.js";

const COLORS = ["#6366f1", "#10b981", "#f59e0b", "#ef4444", "#06b6d4", "#a855f7", "#84cc16", "#ec4899"];
const $ = (id) => document.getElementById(id);
const colors = new Map();
let source = null;
let lastSnapshot = null;

function colorOf(model) {
  if (!colors.has(model)) colors.set(model, COLORS[colors.size % COLORS.length]);
  return colors.get(model);
}

function setState(name, text) {
  $("state").dataset.state = name;
  $("state").textContent = text;
}

function connect() {
  if (source) source.close();
  const url = new URL("/v1/dashboard/events", location.href);
  const key = apiKey();
  if (key) url.searchParams.set("access_token", key);
  source = new EventSource(url);
  setState("connecting", "connecting");
  source.addEventListener("open", () => {
    setState("open", "live");
    $("problem").hidden = true;
  });
  source.addEventListener("snapshot", (event) => show(JSON.parse(event.data)));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      setState("error", "refused");
      explain(url);
    } else {
      setState("connecting", "reconnecting");
    }
  });
}

// EventSource does not say why it was refused: ask once with fetch to show the
// gateway's message (401 without a key, 403 without the ops scope).
async function explain(url) {
  const controller = new AbortController();
  try {
    const response = await fetch(url, { signal: controller.signal });
    const text = response.ok ? "" : await response.text();
    controller.abort();
    const problem = $("problem");
    problem.textContent = response.ok
      ? "The live feed was interrupted; reload to reconnect."
      : `${errorMessage(response.status, text)} The dashboard needs a key with the ops scope.`;
    problem.hidden = false;
  } catch {
    controller.abort();
  }
}

function show(snapshot) {
  lastSnapshot = snapshot;
  $("active").textContent = String(snapshot.active_streams);
  $("readers").textContent = String(snapshot.stream_readers);
  $("subscribers").textContent = String(snapshot.topic_subscribers);
  $("rate").textContent = formatRate(snapshot.tokens_per_s);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  const rows = snapshot.models.map(row);
  if (!rows.length) {
    const empty = el("tr", "placeholder");
    const cell = el("td", "", "No generation in the last minute.");
    cell.colSpan = 11;
    empty.append(cell);
    rows.push(empty);
  }
  $("rows").replaceChildren(...rows);
  for (const model of snapshot.models) {
    const canvas = document.querySelector(`canvas[data-spark="${CSS.escape(model.model)}"]`);
    if (canvas) lines(canvas, [{ color: colorOf(model.model), values: model.series }], { axes: false });
  }
  legend(snapshot.models);
  chart();
}

function row(model) {
  const tr = el("tr");
  tr.dataset.model = model.model;
  const name = el("td", "model");
  const swatch = el("i");
  swatch.style.background = colorOf(model.model);
  name.append(swatch, document.createTextNode(model.model));
  const cells = [
    name,
    num(String(model.active), "active"),
    num(formatRate(model.tokens_per_s), "rate"),
    num(String(model.tokens), "tokens"),
    num(ms(model.ttft_ms.p50), "ttft-p50"),
    num(ms(model.ttft_ms.p90)),
    num(ms(model.ttft_ms.p99)),
    num(ms(model.itl_ms.p50), "itl-p50"),
    num(ms(model.itl_ms.p90)),
    num(ms(model.itl_ms.p99)),
  ];
  const spark = el("td");
  const canvas = el("canvas", "spark");
  canvas.dataset.spark = model.model;
  spark.append(canvas);
  tr.append(...cells, spark);
  return tr;
}

function num(text, name = "") {
  const td = el("td", "num", text);
  if (name) td.dataset.field = name;
  return td;
}

function ms(value) {
  if (value == null) return "–";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${value.toFixed(value < 10 ? 1 : 0)} ms`;
}

function formatRate(value) {
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

function legend(models) {
  const items = models.map((model) => {
    const span = el("span");
    const swatch = el("i");
    swatch.style.background = colorOf(model.model);
    span.append(swatch, document.createTextNode(model.model));
    return span;
  });
  $("legend").replaceChildren(...items);
}

function chart() {
  const models = lastSnapshot ? lastSnapshot.models : [];
  const series = models.map((m) => ({ color: colorOf(m.model), values: m.series }));
  lines($("chart"), series, { axes: true, window: lastSnapshot ? lastSnapshot.window_s : 60 });
}

// Line chart of `series` ([{color, values}]) on `canvas`, sized to its box.
function lines(canvas, series, { axes, window: seconds = 60 }) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const muted = style.getPropertyValue("--muted").trim() || "#888";
  const border = style.getPropertyValue("--border").trim() || "#ddd";
  const pad = axes ? { left: 44, right: 8, top: 10, bottom: 22 } : { left: 1, right: 1, top: 3, bottom: 3 };
  const w = width - pad.left - pad.right;
  const h = height - pad.top - pad.bottom;
  const peak = Math.max(1, ...series.flatMap((s) => s.values));
  const top = niceCeiling(peak);
  if (axes) {
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = muted;
    g.strokeStyle = border;
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i += 1) {
      const y = pad.top + h - (h * i) / 4;
      g.beginPath();
      g.moveTo(pad.left, Math.round(y) + 0.5);
      g.lineTo(pad.left + w, Math.round(y) + 0.5);
      g.stroke();
      const value = (top * i) / 4;
      g.fillText(Number.isInteger(value) ? String(value) : value.toFixed(1), pad.left - 8, y);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (const at of [seconds, 45, 30, 15, 0]) {
      if (at > seconds) continue;
      const x = pad.left + w - (w * at) / seconds;
      g.fillText(at ? `-${at}s` : "now", Math.min(Math.max(x, pad.left + 12), pad.left + w - 12), pad.top + h + 6);
    }
  }
  for (const { color, values } of series) {
    if (!values.length) continue;
    const step = values.length > 1 ? w / (values.length - 1) : 0;
    const point = (v, i) => [pad.left + i * step, pad.top + h - (h * v) / top];
    g.beginPath();
    values.forEach((v, i) => {
      const [x, y] = point(v, i);
      if (i) g.lineTo(x, y);
      else g.moveTo(x, y);
    });
    g.strokeStyle = color;
    g.lineWidth = axes ? 2 : 1.5;
    g.lineJoin = "round";
    g.stroke();
    const [lastX] = point(0, values.length - 1);
    g.lineTo(lastX, pad.top + h);
    g.lineTo(pad.left, pad.top + h);
    g.closePath();
    g.globalAlpha = 0.12;
    g.fillStyle = color;
    g.fill();
    g.globalAlpha = 1;
  }
}

function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= value) return m * power;
  return 10 * power;
}

window.addEventListener("resize", chart);
keyField(() => connect());
connect();
