// Pictures in the playground: attachments (images, PDF pages), the tile overlay drawn over
// each picture, and the visual-token cost of the next request.
//
// The tiling comes from the server (/v1/jvlm/layout), computed by the same function the
// processor uses, never re-derived here: the page only draws what the model will see.

import { $, api, bold, describe, fmt, hooks, showNotice, hideNotice, state } from "./core.js";

const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/webp"]);
const SVG_NS = "http://www.w3.org/2000/svg";

// ------------------------------------------------------------------------------ layouts

export function maxTiles() {
  return state.settings ? Number($("max-tiles").value) : null;
}

export function layoutKey(att) {
  return `${att.width}x${att.height}@${maxTiles() ?? "default"}`;
}

export function allImages() {
  return [...state.history.flatMap((h) => h.user.images), ...state.pending.filter((a) => a.url)];
}

let layoutRequest = 0;
export async function refreshLayouts() {
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
      if (err.status === 401) hooks.needKey(describe(err).title + ". " + err.message);
      else if (err.code !== "model_loading") showNotice(describe(err), "bad");
    }
    if (ticket !== layoutRequest) return; // a newer refresh redraws
  }
  document.querySelectorAll("figure.shot").forEach(drawShot);
  updateCost();
}

export function updateCost() {
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
export function makeShot(att, { zoomable = true, box = "turn" } = {}) {
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

export async function addFiles(files) {
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
    if (err.status === 401) hooks.needKey(describe(err).title + ".");
  }
}

export function renderTray() {
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
