// What the three pages share: the API key (typed into the page, kept in this
// browser's localStorage, sent only to this origin) and small fetch helpers.

const KEY = "ssegate.apiKey";

/** The API key typed in the header, or "" (auth off). */
export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

/** Headers for a request to the gateway: `Authorization` when a key is set. */
export function authHeaders(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : { ...extra };
}

/** The error message of a gateway answer (its JSON `error.message`), or the status. */
export function errorMessage(status, body) {
  try {
    const parsed = typeof body === "string" ? JSON.parse(body) : body;
    if (parsed && parsed.error && parsed.error.message) return parsed.error.message;
  } catch {
    // not JSON: fall through
  }
  return `The gateway answered ${status}.`;
}

/** `fetch` to the gateway with the key; JSON answer, or an Error with the gateway's message. */
export async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: authHeaders(options.headers || {}),
  });
  const text = await response.text();
  if (!response.ok) {
    const error = new Error(errorMessage(response.status, text));
    error.status = response.status;
    throw error;
  }
  return text ? JSON.parse(text) : null;
}

/** `document.createElement` with a class and text (never HTML). */
export function el(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

/**
 * Wire the header's key field: shows the stored key, saves on change and calls
 * `onChange(key)`. Returns the input.
 */
export function keyField(onChange) {
  const input = document.getElementById("api-key");
  input.value = apiKey();
  input.addEventListener("change", () => {
    const value = input.value.trim();
    if (value) localStorage.setItem(KEY, value);
    else localStorage.removeItem(KEY);
    if (onChange) onChange(value);
  });
  return input;
}

/** Put the status line's text and tone (`""`, `"ok"`, `"warn"`, `"error"`). */
export function setStatus(node, text, tone = "") {
  node.textContent = text;
  node.dataset.tone = tone;
}
