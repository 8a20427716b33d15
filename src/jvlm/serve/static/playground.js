// jvlm playground: a chat page over the server's own OpenAI-compatible API.
//
// Plain browser JavaScript modules, no framework and no build step. The page sends
// /v1/chat/completions requests with the whole conversation (images included, as data URLs,
// so follow-up questions still see them) and reads the SSE stream. Two helpers of the
// playground module do what a browser cannot do well alone: /v1/jvlm/layout (how the model
// tiles an image, and its token cost) and /v1/jvlm/pdf (PDF pages rendered on the server).
//
// Rule of thumb for errors: the page warns early about what it can predict (too many
// images, an image above the server's caps) but never blocks a request for it; the server
// decides, and its error answer is shown as a readable message.

import { $, ApiError, KEY_STORAGE, api, countdown, describe, fmt, hideNotice, hooks, isRetryable, readError,
  showNotice, sseEvents, state } from "./core.js";
import { addFiles, layoutKey, makeShot, maxTiles, refreshLayouts, renderTray, updateCost } from "./images.js";

const MAX_AUTO_RETRIES = 30;

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
    // a demo or random-weight model says what it is (its answers outside its world are nonsense)
    if (models.data && models.data[0] && models.data[0].notice) {
      showNotice({ title: "Demo model.", detail: models.data[0].notice.replace(/^note: /, "") }, "warn");
    }
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
  // a reply's reasoning block (the server's reasoning_content), folded away above the answer
  const reasoning = document.createElement("details");
  reasoning.className = "reasoning";
  reasoning.hidden = true;
  const reasoningTitle = document.createElement("summary");
  reasoningTitle.textContent = "Reasoning";
  const reasoningText = document.createElement("div");
  reasoningText.className = "reasoning-text";
  reasoningText.dir = "auto";
  reasoning.append(reasoningTitle, reasoningText);
  const answer = document.createElement("div");
  answer.className = "bubble answer";
  answer.dir = "auto";
  const error = document.createElement("div");
  error.className = "error";
  error.hidden = true;
  const meta = document.createElement("p");
  meta.className = "meta";
  assistant.append(whoA, reasoning, answer, error, meta);
  log.append(user, assistant);
  scrollToEnd();
  return { user, assistant, reasoning, reasoningText, answer, error, meta };
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
    view.reasoning.hidden = true;  // a retry starts the reply afresh
    view.reasoningText.textContent = "";
    try {
      const resp = await api("/v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        signal: controller.signal,
      });
      view.error.hidden = true;
      for await (const event of sseEvents(resp.body)) {
        if (event.error) throw new ApiError(resp.status, event.error.message, event.error.code);
        const choice = event.choices && event.choices[0];
        if (choice && choice.delta && choice.delta.reasoning_content) {
          view.reasoning.hidden = false;
          view.reasoningText.textContent += choice.delta.reasoning_content;
          scrollToEnd();
        }
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

hooks.needKey = openKeyDialog;
wire();
pollReady();
