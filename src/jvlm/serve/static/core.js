// Shared by the playground's scripts: page state, API calls, SSE parsing, notices.
//
// The page is a client like any other: it calls the server's OpenAI-compatible API with the
// key from session storage, and turns every error answer ({"error": {...}} plus Retry-After)
// into an ApiError that the page can explain in words.

export const KEY_STORAGE = "jvlm.apiKey";
export const $ = (id) => document.getElementById(id);
export const fmt = (n) => Number(n).toLocaleString("en-US");

export const state = {
  apiKey: sessionStorage.getItem(KEY_STORAGE) || "",
  ready: false,
  settings: null, // server limits from /v1/jvlm/playground
  pending: [], // attachments waiting in the composer
  history: [], // finished exchanges: {user: {text, images}, assistant: string}
  layouts: new Map(), // "WxH@maxCrops" -> layout object, or {error}
  attachments: new Map(), // id -> attachment, for every image shown anywhere
  busy: false,
  abort: null, // AbortController of the request (or retry wait) in flight
  nextId: 1,
};

// Set by the main script: what to do when the server asks for an API key (a 401).
export const hooks = { needKey: (_reason) => {} };

// ------------------------------------------------------------------------------ API helpers

export class ApiError extends Error {
  constructor(status, message, code = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

export function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
  return headers;
}

export async function readError(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON: fall back to the status line */ }
  const e = (body && body.error) || {};
  const retry = parseInt(resp.headers.get("Retry-After") || "", 10);
  const message = typeof e.message === "string" ? e.message : `HTTP ${resp.status} ${resp.statusText}`;
  return new ApiError(resp.status, message, e.code || null, Number.isFinite(retry) ? retry : null);
}

export async function api(path, options = {}) {
  let resp;
  try {
    resp = await fetch(path, { ...options, headers: authHeaders(options.headers) });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "The server could not be reached. Check that `jvlm serve` is still running.", "network");
  }
  if (!resp.ok) throw await readError(resp);
  return resp;
}

export function isRetryable(err) {
  return err instanceof ApiError && err.retryAfter !== null && (err.status === 503 || err.status === 429)
    && err.code !== "model_load_failed";
}

// A title a person understands, and the server's own message as the detail.
export function describe(err) {
  const detail = err.message;
  if (!(err instanceof ApiError)) return { title: "Something went wrong", detail };
  if (err.status === 0) return { title: "Cannot reach the server", detail };
  if (err.status === 401) {
    return { title: state.apiKey ? "The API key was refused" : "This server needs an API key", detail };
  }
  if (err.status === 413) return { title: "Too large for this server", detail };
  if (err.code === "model_loading") return { title: "The model is still loading", detail };
  if (err.code === "model_load_failed") return { title: "The model failed to load", detail };
  if (err.code === "server_overloaded" || err.status === 429) return { title: "The server is busy", detail };
  if (err.code === "too_many_images") return { title: "Too many images", detail };
  if (err.code === "context_length_exceeded") return { title: "The conversation is too long", detail };
  if (err.code && err.code.startsWith("invalid_image")) return { title: "An image could not be used", detail };
  if (err.code === "image_too_large") return { title: "Image too large", detail };
  if (err.code && err.code.includes("pdf")) return { title: "The PDF could not be used", detail };
  return { title: `The request failed (HTTP ${err.status || "?"})`, detail };
}

// Parse a text/event-stream body into the JSON payloads of its `data:` events.
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (!data) continue;
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

// A visible countdown; resolves when it reaches zero, rejects with AbortError on abort.
export function countdown(seconds, onTick, signal) {
  return new Promise((resolve, reject) => {
    let left = Math.max(1, Math.min(Math.round(seconds), 300));
    onTick(left);
    const timer = setInterval(() => {
      left -= 1;
      if (left <= 0) { clearInterval(timer); resolve(); } else onTick(left);
    }, 1000);
    if (signal) {
      signal.addEventListener("abort", () => {
        clearInterval(timer);
        reject(new DOMException("cancelled", "AbortError"));
      }, { once: true });
    }
  });
}

// ------------------------------------------------------------------------------ notices

export function showNotice({ title, detail }, kind = "warn") {
  const el = $("notice");
  el.className = `notice ${kind}`;
  const text = document.createElement("span");
  text.append(bold(title), detail ? ` ${detail}` : "");
  const close = document.createElement("button");
  close.type = "button";
  close.className = "link";
  close.textContent = "Dismiss";
  close.addEventListener("click", hideNotice);
  el.replaceChildren(text, close);
  el.hidden = false;
}

export function hideNotice() {
  $("notice").hidden = true;
}

export function bold(text) {
  const b = document.createElement("b");
  b.textContent = text;
  return b;
}
