// jvlm playground: a chat page over the server's own OpenAI-compatible API.
//
// Plain browser JavaScript, no framework and no build step. The page is a client like any
// other: it sends /v1/chat/completions requests with the whole conversation (images
// included, as data URLs, so follow-up questions still see them) and reads the SSE stream.
// Two helpers of the playground module do what a browser cannot do well alone:
// /v1/jvlm/layout (how the model tiles an image, and its token cost) and /v1/jvlm/pdf
// (PDF pages rendered to PNG on the server).
//
// Rule of thumb for errors: the page warns early about what it can predict (too many
// images, an image above the server's caps) but never blocks a request for it; the server
// decides, and its error answer is shown as a readable message.
"use strict";

const KEY_STORAGE = "jvlm.apiKey";
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/webp"]);
const MAX_AUTO_RETRIES = 30;
const SVG_NS = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const fmt = (n) => Number(n).toLocaleString("en-US");

const state = {
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

// ------------------------------------------------------------------------------ API helpers

class ApiError extends Error {
  constructor(status, message, code = null, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if (state.apiKey) headers.Authorization = `Bearer ${state.apiKey}`;
  return headers;
}

async function readError(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON: fall back to the status line */ }
  const e = (body && body.error) || {};
  const retry = parseInt(resp.headers.get("Retry-After") || "", 10);
  const message = typeof e.message === "string" ? e.message : `HTTP ${resp.status} ${resp.statusText}`;
  return new ApiError(resp.status, message, e.code || null, Number.isFinite(retry) ? retry : null);
}

async function api(path, options = {}) {
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

function isRetryable(err) {
  return err instanceof ApiError && err.retryAfter !== null && (err.status === 503 || err.status === 429)
    && err.code !== "model_load_failed";
}

// A title a person understands, and the server's own message as the detail.
function describe(err) {
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
async function* sseEvents(body) {
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
function countdown(seconds, onTick, signal) {
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

// ------------------------------------------------------------------------------ status

function setStatus(kind, text, title = "") {
  const el = $("status");
  el.dataset.state = kind;
  $("status-text").textContent = text;
  el.title = title;
}

async function pollReady() {
  let resp;
  try {
    resp = await fetch("/ready", { cache: "no-store" });
  } catch {
    state.ready = false;
    await countdown(5, (n) => setStatus("error", `Server unreachable · retrying in ${n} s`));
    return pollReady();
  }
  if (resp.ok) return becomeReady();
  const err = await readError(resp);
  if (err.code === "model_load_failed") {
    setStatus("error", "Model failed to load", err.message);
    return undefined;
  }
  await countdown(err.retryAfter ?? 5, (n) => setStatus("loading", `Loading the model · checking again in ${n} s`));
  return pollReady();
}

async function becomeReady() {
  state.ready = true;
  setStatus("ready", "Ready");
  try {
    const models = await (await api("/v1/models")).json();
    if (models.data && models.data[0]) setStatus("ready", `Ready · ${models.data[0].id}`);
    state.settings = await (await api("/v1/jvlm/playground")).json();
    applySettings();
  } catch (err) {
    if (err.status === 401) openKeyDialog(describe(err).title + ". " + err.message);
    else showNotice(describe(err), "bad");
  }
  refreshLayouts();
}

function applySettings() {
  const s = state.settings;
  const slider = $("max-tiles");
  slider.max = String(s.max_crops_limit);
  if (!slider.dataset.touched) slider.value = String(s.max_crops);
  $("max-tiles-value").textContent = slider.value;
  updateCost();
}

// ------------------------------------------------------------------------------ layouts

function maxTiles() {
  return state.settings ? Number($("max-tiles").value) : null;
}

function layoutKey(att) {
  return `${att.width}x${att.height}@${maxTiles() ?? "default"}`;
}

function allImages() {
  return [...state.history.flatMap((h) => h.user.images), ...state.pending.filter((a) => a.url)];
}

let layoutRequest = 0;
async function refreshLayouts() {
  const images = allImages();
  const missing = [];
  for (const att of images) {
    const key = layoutKey(att);
    if (!state.layouts.has(key) && !missing.some((m) => layoutKey(m) === key)) missing.push(att);
  }
  if (missing.length && state.ready) {
    const ticket = ++layoutRequest;
    try {
      const resp = await api("/v1/jvlm/layout", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ images: missing.map((a) => ({ width: a.width, height: a.height })), max_crops: maxTiles() }),
      });
      const data = await resp.json();
      data.images.forEach((layout, i) => state.layouts.set(layoutKey(missing[i]), layout));
    } catch (err) {
      if (err.status === 401) openKeyDialog(describe(err).title + ". " + err.message);
      else if (err.code !== "model_loading") showNotice(describe(err), "bad");
    }
    if (ticket !== layoutRequest) return; // a newer refresh redraws
  }
  document.querySelectorAll("figure.shot").forEach(drawShot);
  updateCost();
}

function updateCost() {
  const images = allImages();
  const el = $("cost");
  el.classList.remove("over");
  if (!images.length) { el.textContent = ""; return; }
  let tokens = 0;
  let unknown = 0;
  let refused = 0;
  for (const att of images) {
    const layout = state.layouts.get(layoutKey(att));
    if (!layout) unknown += 1;
    else if (layout.error) refused += 1;
    else tokens += layout.tokens.visual;
  }
  const n = images.length;
  const parts = [`${n} image${n === 1 ? "" : "s"} · ${unknown ? "…" : fmt(tokens)} visual tokens in the next request`];
  if (refused) parts.push(`${refused} image${refused === 1 ? "" : "s"} over this server's limits`);
  const limit = state.settings && state.settings.max_images;
  if (limit && n > limit) parts.push(`the server accepts at most ${limit} images per request`);
  el.textContent = parts.join(" · ");
  el.classList.toggle("over", parts.length > 1);
}

// ------------------------------------------------------------------------------ images

function svg(tag, attrs) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// Display boxes per place, in CSS px. Sizes are set explicitly (not by max-width/max-height)
// so the frame always hugs the picture and the overlay lines up with it exactly.
const BOX = {
  tray: () => [150, 88],
  turn: () => [Math.min(360, window.innerWidth * 0.75), 260],
  viewer: () => [Math.min(window.innerWidth * 0.88, 1100), window.innerHeight * 0.58],
};

// <figure class="shot"> with the picture, the tile overlay and a caption; filled by drawShot.
function makeShot(att, { zoomable = true, box = "turn" } = {}) {
  const figure = document.createElement("figure");
  figure.className = "shot";
  figure.dataset.id = String(att.id);
  const frame = document.createElement(zoomable ? "button" : "div");
  frame.className = "frame";
  if (zoomable) {
    frame.type = "button";
    frame.setAttribute("aria-label", `Show ${att.name} with its tiles`);
    frame.addEventListener("click", () => openViewer(att));
  }
  const img = document.createElement("img");
  img.src = att.url;
  img.alt = att.name;
  const [maxW, maxH] = BOX[box]();
  const scale = Math.min(1, maxW / att.width, maxH / att.height);
  img.style.width = `${Math.max(1, Math.round(att.width * scale))}px`;
  img.style.height = `${Math.max(1, Math.round(att.height * scale))}px`;
  const overlay = svg("svg", { class: "overlay", viewBox: `0 0 ${att.width} ${att.height}`,
    preserveAspectRatio: "none", "aria-hidden": "true" });
  frame.append(img, overlay);
  const caption = document.createElement("figcaption");
  figure.append(frame, caption);
  drawShot(figure);
  return figure;
}

function drawShot(figure) {
  const att = state.attachments.get(Number(figure.dataset.id));
  if (!att) return;
  const overlay = figure.querySelector("svg.overlay");
  const caption = figure.querySelector("figcaption");
  const layout = state.layouts.get(layoutKey(att));
  overlay.replaceChildren();
  figure.classList.remove("bad");
  delete figure.dataset.tiles;
  delete figure.dataset.tokens;
  if (!layout) {
    caption.textContent = state.ready ? "Measuring tiles…" : "Tiles appear when the model is ready";
    return;
  }
  if (layout.error) {
    figure.classList.add("bad");
    caption.textContent = layout.error.message;
    return;
  }
  const xs = [0, ...layout.cuts.x, att.width];
  const ys = [0, ...layout.cuts.y, att.height];
  for (let r = 0; r < layout.rows; r++) {
    for (let c = 0; c < layout.cols; c++) {
      const rect = svg("rect", { class: "tile", x: xs[c], y: ys[r], width: xs[c + 1] - xs[c], height: ys[r + 1] - ys[r] });
      rect.dataset.row = String(r);
      rect.dataset.col = String(c);
      overlay.append(rect);
    }
  }
  for (const cls of ["cut-shadow", "cut"]) {
    for (const x of layout.cuts.x) overlay.append(svg("line", { class: cls, x1: x, y1: 0, x2: x, y2: att.height }));
    for (const y of layout.cuts.y) overlay.append(svg("line", { class: cls, x1: 0, y1: y, x2: att.width, y2: y }));
  }
  overlay.append(svg("rect", { class: "border", x: 0, y: 0, width: att.width, height: att.height }));
  figure.dataset.tiles = String(layout.n_tiles);
  figure.dataset.tokens = String(layout.tokens.visual);
  const tiles = layout.n_tiles === 1 ? "1 tile" : `${layout.n_tiles} tiles`;
  const grid = figure.closest("#tray") ? " · " : ` (${layout.cols}×${layout.rows}) · `; // W×H, like image sizes
  caption.replaceChildren(bold(tiles), grid, bold(fmt(layout.tokens.visual)), " tokens");
  caption.title = `${layout.cols} columns × ${layout.rows} rows of tiles plus a thumbnail; `
    + `${fmt(layout.tokens.visual)} visual tokens in the prompt`;
}

function bold(text) {
  const b = document.createElement("b");
  b.textContent = text;
  return b;
}

function openViewer(att) {
  const layout = state.layouts.get(layoutKey(att));
  $("viewer-title").textContent = att.name;
  const body = $("viewer-body");
  const shot = makeShot(att, { zoomable: false, box: "viewer" });
  body.replaceChildren(shot);
  if (layout && !layout.error) {
    const dl = document.createElement("dl");
    const rows = [
      ["Image", `${att.width} × ${att.height} px`],
      ["Resized to", `${layout.resized.width} × ${layout.resized.height} px`],
      ["Tiles", `${layout.cols} columns × ${layout.rows} rows = ${layout.n_tiles}, plus a thumbnail`],
      ["Visual tokens", `${fmt(layout.tokens.visual)} (${fmt(layout.tokens.features)} carry image features)`],
      ["Without 2×2 pooling", `${fmt(layout.tokens.unpooled)} tokens`],
    ];
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      dl.append(dt, dd);
    }
    body.append(dl);
  }
  $("viewer").showModal();
}

// ------------------------------------------------------------------------------ attachments

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function imageSize(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  return { width: img.naturalWidth, height: img.naturalHeight };
}

function register(name, url, width, height) {
  const att = { id: state.nextId++, name, url, width, height };
  state.attachments.set(att.id, att);
  return att;
}

async function addFiles(files) {
  hideNotice();
  for (const file of files) {
    if (file.type === "application/pdf" || /\.pdf$/i.test(file.name)) await addPdf(file);
    else if (IMAGE_TYPES.has(file.type)) await addImage(file);
    else showNotice({ title: `“${file.name}” was not added`, detail: "Use PNG, JPEG or WebP images, or a PDF." }, "bad");
  }
  renderTray();
  refreshLayouts();
}

async function addImage(file) {
  const limit = state.settings && state.settings.max_image_bytes;
  if (limit && file.size > limit) {
    showNotice({ title: `“${file.name}” is probably too large`,
      detail: `It is ${(file.size / 2 ** 20).toFixed(1)} MiB; this server accepts images up to ${(limit / 2 ** 20).toFixed(0)} MiB.` }, "bad");
  }
  try {
    const url = await readAsDataURL(file);
    const { width, height } = await imageSize(url);
    state.pending.push(register(file.name, url, width, height));
  } catch {
    showNotice({ title: `“${file.name}” could not be read`, detail: "The file may be damaged or not really an image." }, "bad");
  }
}

async function addPdf(file) {
  const placeholder = { id: state.nextId++, name: file.name, url: null };
  state.pending.push(placeholder);
  renderTray();
  try {
    const resp = await api("/v1/jvlm/pdf", { method: "POST", headers: { "Content-Type": "application/pdf" }, body: file });
    const doc = await resp.json();
    const pages = doc.pages.map((p) => register(`${file.name} · page ${p.index + 1}`, p.url, p.width, p.height));
    state.pending.splice(state.pending.indexOf(placeholder), 1, ...pages);
    if (doc.next_page !== null) {
      showNotice({ title: `Attached pages 1–${pages.length} of ${doc.n_pages}`,
        detail: `This server renders at most ${pages.length} pages of a PDF at a time.` }, "warn");
    }
  } catch (err) {
    state.pending.splice(state.pending.indexOf(placeholder), 1);
    showNotice(describe(err), "bad");
    if (err.status === 401) openKeyDialog(describe(err).title + ".");
  }
}

function renderTray() {
  const tray = $("tray");
  tray.replaceChildren();
  for (const att of state.pending) {
    const li = document.createElement("li");
    if (!att.url) {
      li.className = "pending";
      li.textContent = `Rendering ${att.name}…`;
    } else {
      const shot = makeShot(att, { box: "tray" });
      li.append(shot);
      const remove = document.createElement("button");
      remove.style.left = `calc(${shot.querySelector("img").style.width} - 16px)`; // the picture's corner
      remove.type = "button";
      remove.className = "remove";
      remove.textContent = "✕";
      remove.setAttribute("aria-label", `Remove ${att.name}`);
      remove.addEventListener("click", () => {
        state.pending = state.pending.filter((a) => a !== att);
        renderTray();
        updateCost();
        $("prompt").focus();
      });
      li.append(remove);
    }
    tray.append(li);
  }
  updateCost();
}

// ------------------------------------------------------------------------------ notices

function showNotice({ title, detail }, kind = "warn") {
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

function hideNotice() {
  $("notice").hidden = true;
}

// ------------------------------------------------------------------------------ conversation

function userContent(turn) {
  const parts = turn.images.map((a) => ({ type: "image_url", image_url: { url: a.url } }));
  if (turn.text) parts.push({ type: "text", text: turn.text });
  return parts;
}

function buildMessages(turn) {
  const messages = [];
  for (const h of state.history) {
    messages.push({ role: "user", content: userContent(h.user) }, { role: "assistant", content: h.assistant });
  }
  messages.push({ role: "user", content: userContent(turn) });
  return messages;
}

function renderTurn(turn) {
  $("welcome").hidden = true;
  const log = $("log");
  const user = document.createElement("li");
  user.className = "turn user";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = "You";
  user.append(who);
  if (turn.images.length) {
    const images = document.createElement("div");
    images.className = "images";
    for (const att of turn.images) images.append(makeShot(att));
    user.append(images);
  }
  const question = document.createElement("div");
  question.className = "bubble";
  question.dir = "auto";
  question.textContent = turn.text;
  user.append(question);

  const assistant = document.createElement("li");
  assistant.className = "turn assistant";
  const whoA = document.createElement("span");
  whoA.className = "who";
  whoA.textContent = "Model";
  const answer = document.createElement("div");
  answer.className = "bubble answer";
  answer.dir = "auto";
  const error = document.createElement("div");
  error.className = "error";
  error.hidden = true;
  const meta = document.createElement("p");
  meta.className = "meta";
  assistant.append(whoA, answer, error, meta);
  log.append(user, assistant);
  scrollToEnd();
  return { user, assistant, answer, error, meta };
}

function scrollToEnd() {
  window.scrollTo({ top: document.body.scrollHeight });
}

function showTurnError(view, err, { waiting = false } = {}) {
  const { title, detail } = describe(err);
  view.error.className = waiting ? "error waiting" : "error";
  view.error.setAttribute("role", waiting ? "status" : "alert");
  view.error.dataset.code = err.code || String(err.status ?? "");
  const heading = document.createElement("strong");
  heading.textContent = title;
  const body = document.createElement("span");
  body.className = "detail";
  body.textContent = detail;
  view.error.replaceChildren(heading, body);
  view.error.hidden = false;
  return view.error;
}

function setBusy(busy) {
  state.busy = busy;
  const send = $("send");
  send.textContent = busy ? "Stop" : "Send";
  send.classList.toggle("primary", !busy);
  send.setAttribute("aria-label", busy ? "Stop the answer" : "Send");
}

async function send() {
  if (state.busy) { if (state.abort) state.abort.abort(); return; }
  if (state.pending.some((a) => !a.url)) {
    showNotice({ title: "Still rendering the PDF", detail: "Send again when its pages appear." }, "warn");
    return;
  }
  const text = $("prompt").value.trim();
  const images = state.pending.slice();
  if (!text && !images.length) { $("prompt").focus(); return; }
  hideNotice();
  const turn = { text, images };
  state.pending = [];
  $("prompt").value = "";
  autosize();
  renderTray();
  const view = renderTurn(turn);
  await runTurn(turn, view);
}

async function runTurn(turn, view) {
  setBusy(true);
  const started = performance.now();
  let text = "";
  let finish = null;
  let usage = null;
  const body = {
    messages: buildMessages(turn),
    stream: true,
    stream_options: { include_usage: true },
    temperature: Number($("temperature").value),
    max_tokens: Math.max(1, Number($("max-tokens").value) || 512),
  };
  if (maxTiles() !== null) body.max_crops = maxTiles();
  const requestImages = [...state.history.flatMap((h) => h.user.images), ...turn.images];
  for (let attempt = 0; ; attempt++) {
    const controller = new AbortController();
    state.abort = controller;
    view.answer.setAttribute("aria-busy", "true");
    try {
      const resp = await api("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        signal: controller.signal,
      });
      view.error.hidden = true;
      for await (const event of sseEvents(resp.body)) {
        if (event.error) throw new ApiError(resp.status, event.error.message, event.error.code);
        const choice = event.choices && event.choices[0];
        if (choice && choice.delta && choice.delta.content) {
          text += choice.delta.content;
          view.answer.textContent = text;
          scrollToEnd();
        }
        if (choice && choice.finish_reason) finish = choice.finish_reason;
        if (event.usage) usage = event.usage;
      }
      if (!finish) throw new ApiError(0, "The connection closed before the answer was complete.", "stream_cut");
      break;
    } catch (err) {
      if (err.name === "AbortError") {
        finish = "stopped";
        break;
      }
      if (isRetryable(err) && !text && attempt < MAX_AUTO_RETRIES) {
        const box = showTurnError(view, err, { waiting: true });
        const note = document.createElement("span");
        note.className = "countdown";
        box.append(document.createElement("br"), note);
        try {
          await countdown(err.retryAfter, (n) => { note.textContent = `Retrying in ${n} s…`; }, controller.signal);
          continue;
        } catch {
          finish = "stopped";
          break;
        }
      }
      showTurnError(view, err);
      if (err.status === 401) openKeyDialog(describe(err).title + ". Enter the key, then send again.");
      finish = "error";
      break;
    }
  }
  view.answer.setAttribute("aria-busy", "false");
  state.abort = null;
  setBusy(false);
  finishTurn(turn, view, { text, finish, usage, requestImages, seconds: (performance.now() - started) / 1000 });
}

function finishTurn(turn, view, { text, finish, usage, requestImages, seconds }) {
  if (finish === "error" || (finish === "stopped" && !text)) {
    // Not part of the conversation: give the question and images back for another try.
    view.user.classList.add("failed");
    if (finish === "stopped") view.error.hidden = true;
    view.meta.textContent = finish === "stopped" ? "Cancelled, not sent." : "Not answered; your message is back in the box.";
    if (!$("prompt").value && !state.pending.length) {
      $("prompt").value = turn.text;
      state.pending = turn.images.slice();
      renderTray();
      autosize();
    }
    updateCost();
    return;
  }
  state.history.push({ user: turn, assistant: text });
  if (!text) view.answer.textContent = "(empty answer)";
  const parts = [];
  if (usage) {
    const imageTokens = requestImages.reduce((sum, a) => sum + (state.layouts.get(layoutKey(a))?.tokens?.visual || 0), 0);
    parts.push(`${fmt(usage.prompt_tokens)} prompt tokens${imageTokens ? ` (${fmt(imageTokens)} for images)` : ""}`);
    parts.push(`${fmt(usage.completion_tokens)} generated`);
  }
  parts.push(`${seconds.toFixed(1)} s`);
  if (finish === "length") parts.push("stopped at the token limit");
  if (finish === "stopped") parts.push("stopped");
  view.meta.textContent = parts.join(" · ");
  updateCost();
}

function newConversation() {
  if (state.abort) state.abort.abort();
  state.history = [];
  $("log").replaceChildren();
  $("welcome").hidden = false;
  updateCost();
  $("prompt").focus();
}

// ------------------------------------------------------------------------------ API key

function openKeyDialog(reason) {
  const dialog = $("key-dialog");
  if (dialog.open) return;
  if (reason) $("key-reason").textContent = reason;
  $("key-input").value = state.apiKey;
  dialog.showModal();
  $("key-input").focus();
}

function setKey(key) {
  state.apiKey = key;
  if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
  $("key-button").textContent = key ? "API key ✓" : "API key";
  if (state.ready) becomeReady();
}

// ------------------------------------------------------------------------------ wiring

function autosize() {
  const box = $("prompt");
  box.style.height = "auto";
  box.style.height = `${Math.min(box.scrollHeight, 220)}px`;
}

function wire() {
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  $("prompt").addEventListener("input", autosize);
  $("prompt").addEventListener("paste", (e) => {
    const files = [...(e.clipboardData?.files || [])];
    if (files.length) { e.preventDefault(); addFiles(files); }
  });
  $("file-input").addEventListener("change", (e) => { addFiles([...e.target.files]); e.target.value = ""; });

  let debounce = 0;
  $("max-tiles").addEventListener("input", (e) => {
    e.target.dataset.touched = "1";
    $("max-tiles-value").textContent = e.target.value;
    clearTimeout(debounce);
    debounce = setTimeout(refreshLayouts, 150);
  });
  $("temperature").addEventListener("input", (e) => {
    $("temperature-value").textContent = Number(e.target.value).toFixed(1);
  });
  $("new-chat").addEventListener("click", newConversation);

  $("key-button").addEventListener("click", () => openKeyDialog());
  $("key-form").addEventListener("submit", () => setKey($("key-input").value.trim()));
  $("key-forget").addEventListener("click", () => { setKey(""); $("key-dialog").close(); });
  $("key-cancel").addEventListener("click", () => $("key-dialog").close());
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("click", (e) => { if (e.target === $("viewer")) $("viewer").close(); });

  // Drag and drop anywhere on the page; the counter copes with dragenter/leave of children.
  let depth = 0;
  const hasFiles = (e) => [...(e.dataTransfer?.types || [])].includes("Files");
  window.addEventListener("dragenter", (e) => { if (hasFiles(e)) { depth++; $("dropzone").hidden = false; } });
  window.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  window.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) $("dropzone").hidden = true; });
  window.addEventListener("drop", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    $("dropzone").hidden = true;
    addFiles([...e.dataTransfer.files]);
  });

  $("key-button").textContent = state.apiKey ? "API key ✓" : "API key";
}

wire();
pollReady();
