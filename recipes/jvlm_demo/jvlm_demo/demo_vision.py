"""Dense pretraining of the jvlm-demo vision encoder on what the synthetic images contain.

Trained only through the decoder, a from-scratch ViT gets a handful of answer tokens per
image as its whole signal, and learns to read slowly: after 7,600 steps the demo model
still wrote well-formed but wrong transcriptions. The synthetic images know exactly what
they show, so the encoder can instead be taught patch by patch before it meets the decoder:

* **characters** — every printed character is placed again from the painter's record of
  its run (text, font, box). Each 14 px patch has two slots, its left and right 7 px
  halves; a slot's label is the character whose centre falls in it (or "none"). The 2x2
  pooling then hands the decoder tokens whose eight slots spell the text under them.
* **shapes** — in the shapes family, each patch whose centre lies inside a shape is
  labelled with the shape's kind and colour (or "none").

A linear head per label reads the features the connector sees (the ViT taps,
concatenated); the heads are thrown away afterwards. ``pretrain_vision`` trains the ViT
of a jvlm-demo folder this way and writes the folder back with only the ViT changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jvlm_demo import synthetic
from jvlm_demo.fonts import load_font
from jvlm_demo.synth_charts import shape_geometry
from jvlm_demo.synth_core import Painter, is_rtl_text

log = logging.getLogger(__name__)

#: sub-columns per patch: 7 px halves of a 14 px patch hold at most one character centre
#: at the demo's 12-18 px print (characters are 6-18 px wide)
SLOTS = 2
NO_LABEL = 0  # class 0 of every head: nothing there
IGNORE = -100  # a slot two characters fell into: neither is the answer
#: shape -> (centre shift, inscribed radius), both in units of the shape's size r as drawn
#: by ``synth_charts.render_shapes`` (a triangle's centroid sits 0.15 r low; a star's
#: inner vertices at 0.42 x 1.05 r)
INSCRIBED = {"circle": (0.0, 1.0), "square": (0.0, 0.88), "triangle": (0.15, 0.525),
             "star": (0.0, 0.44), "hexagon": (0.0, 0.866)}


def glyph_centres(text: str, lang: str, size: int, bold: bool, box: Sequence[int]) -> list[tuple[str, float, float]]:
    """(character, x, y) canvas centres of the visible characters of one painted run.

    Left-to-right runs are placed from the font's advance widths, scaled onto the run's
    box. Right-to-left runs are placed word by word from the right; inside a word, Arabic
    letters run right to left and digits or Latin letters left to right (the bidi rule
    that matters for the synthetic texts). Shaping changes glyph widths a little, so
    Arabic positions are approximate, which a 7 px slot tolerates.
    """
    font = load_font(lang, size, bold)
    left, top, right, bottom = box
    y = (top + bottom) / 2
    out: list[tuple[str, float, float]] = []
    if not is_rtl_text(text):
        total = font.getlength(text) or 1.0
        scale = (right - left) / total
        prev = 0.0
        for i, ch in enumerate(text):
            end = font.getlength(text[: i + 1])
            if not ch.isspace():
                out.append((ch, left + scale * (prev + end) / 2, y))
            prev = end
        return out
    words = text.split(" ")
    widths = [_rtl_length(font, w) for w in words]
    space = font.getlength(" ")
    total = sum(widths) + space * (len(words) - 1) or 1.0
    scale = (right - left) / total
    x_right = float(right)
    for word, width in zip(words, widths):
        x_left = x_right - width * scale
        n = len(word)
        if n:
            step = (x_right - x_left) / n
            order = range(n) if not is_rtl_text(word) else range(n - 1, -1, -1)
            for slot, i in enumerate(order):
                if not word[i].isspace():
                    out.append((word[i], x_left + step * (slot + 0.5), y))
        x_right = x_left - space * scale
    return out


def _rtl_length(font, word: str) -> float:
    if not word:
        return 0.0
    return font.getlength(word, direction="rtl", language="ar") if is_rtl_text(word) else font.getlength(word)


class CharVocab:
    """Characters -> head classes, in order of first appearance (1..capacity; 0 is "none")."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.index: dict[str, int] = {}

    def __call__(self, ch: str) -> int:
        idx = self.index.get(ch)
        if idx is None:
            if len(self.index) >= self.capacity:
                return IGNORE
            idx = self.index[ch] = len(self.index) + 1
        return idx


@dataclass
class DenseLabels:
    """Per-patch targets of one image: (rows, cols, SLOTS) characters, (rows, cols) kind and colour."""

    chars: np.ndarray
    kind: np.ndarray
    colour: np.ndarray


def dense_labels(sample: synthetic.Sample, vocab: CharVocab, patch: int) -> DenseLabels:
    """The targets of ``sample``'s image on a ``patch``-pixel grid (the image is one crop)."""
    from jvlm_demo import synth_lexicon as lex

    image = sample.images[0]
    rows, cols = image.height // patch, image.width // patch
    chars = np.zeros((rows, cols, SLOTS), dtype=np.int64)
    for text, lang, size, bold, box in image.info.get("text_runs", ()):
        for ch, x, y in glyph_centres(text, lang, size, bold, box):
            r, c = int(y // patch), int(x // patch)
            s = min(SLOTS - 1, int((x - c * patch) * SLOTS // patch))
            if 0 <= r < rows and 0 <= c < cols:
                label = vocab(ch)
                chars[r, c, s] = label if chars[r, c, s] == NO_LABEL else IGNORE
    kind = np.zeros((rows, cols), dtype=np.int64)
    colour = np.zeros((rows, cols), dtype=np.int64)
    if sample.task == "shapes" and sample.spec is not None:
        kinds, palette = list(lex.SHAPES), list(lex.PALETTE)
        canvas = Painter(image.size, (0, 0, 0))  # the geometry render_shapes drew with
        ys, xs = (np.mgrid[0:rows, 0:cols] + 0.5) * patch
        for shape in sample.spec["shapes"]:
            name, col = shape[0], shape[1]
            cx, cy, r = shape_geometry(shape, canvas)
            # the disc each drawn shape surely covers: its inscribed circle
            shift, inner = INSCRIBED[name]
            cy += shift * r
            inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= (0.95 * inner * r) ** 2
            kind[inside] = kinds.index(name) + 1
            colour[inside] = palette.index(col) + 1
    return DenseLabels(chars, kind, colour)


def _whole_image_crop(processor, image) -> tuple:
    """(pixels, mask) tensors of the one crop that shows the whole image at ``max_crops=1``
    (the view both the dense pretraining and the sign probe read)."""
    import torch

    processed = processor.process_image(image, max_crops=1)
    return torch.from_numpy(processed.crops[0]), torch.from_numpy(processed.masks[0])


def _batches(seed: int, batch: int, processor, vocab: CharVocab, patch: int) -> Iterator[tuple]:
    """Endless (pixels, chars, kind, colour) batches of training images (every image family)."""
    import torch

    from jvlm_demo.stages import DEMO_IMAGE_SIZE

    stream = synthetic.generate(10**9, seed, "train", synthetic.IMAGE_TASKS, image_size=DEMO_IMAGE_SIZE)
    while True:
        pix, msk, ch, kd, co = [], [], [], [], []
        for sample in stream:
            pixels, mask = _whole_image_crop(processor, sample.images[0])
            labels = dense_labels(sample, vocab, patch)
            pix.append(pixels)
            msk.append(mask)
            ch.append(torch.from_numpy(labels.chars))
            kd.append(torch.from_numpy(labels.kind))
            co.append(torch.from_numpy(labels.colour))
            if len(pix) == batch:
                break
        yield torch.stack(pix), torch.stack(msk), torch.stack(ch), torch.stack(kd), torch.stack(co)


def group_slots(labels, k: int):
    """(B, rows, cols, S) patch labels -> (B, rows/k * cols/k, k*k*S): the slots of each k x k
    window, in the connector's member order (row in the window, column, then slot)."""
    b, rows, cols, s = labels.shape
    x = labels.view(b, rows // k, k, cols // k, k, s).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (rows // k) * (cols // k), k * k * s)


def pretrain_vision(model_dir: str | Path, out: str | Path, steps: int = 1500, batch: int = 32,
                    lr: float = 1e-3, seed: int = 21, char_capacity: int = 512,
                    empty_weight: float = 0.1, log_every: int = 50, level: str = "token") -> dict[str, float]:
    """Train the vision side of ``model_dir`` on dense labels and save the folder to ``out``.

    ``level="patch"`` puts the heads on the ViT's patch features and trains the ViT only.
    ``level="token"`` (default) puts them on the connector's output, the decoder-width
    tokens the decoder will read, and trains ViT and connector: each token must spell the
    eight character slots of its 2x2 window in order. Patch-level labels alone leave the
    pooling to chance: it mixes four patch vectors, and a mix of codes for "which
    character" keeps the characters but not necessarily their order.

    Returns the last logged metrics: loss and accuracy on printed character slots
    (``char_acc``), on empty slots (``empty_acc``) and on shape patches (``shape_acc``).
    ``empty_weight`` down-weights the many empty slots against the few printed ones.
    """
    import torch
    import torch.nn.functional as F

    from jvlm_demo import synth_lexicon as lex
    from jvlm.loading import load, save_pretrained
    from jvlm.train.optim import Schedule

    if level not in ("patch", "token"):
        raise ValueError(f"level must be 'patch' or 'token', not {level!r}")
    torch.manual_seed(seed)
    model, processor = load(model_dir)
    model = model.float()
    vit = model.model.vision_model
    cfg = model.config
    patch = cfg.vision.patch_size
    k = cfg.connector.pooling_h if level == "token" else 1
    if level == "token" and cfg.connector.pooling_w != k:
        raise ValueError("token-level labels need square pooling windows")

    def features(pix, masks):
        feats = vit.encode(pix[:, None])  # (B, 1, P, F)
        if level == "token":
            feats = vit.vl_connector(feats, masks[:, None])  # (B, 1, tokens, hidden)
        return feats[:, 0]

    feat_dim = cfg.text.hidden_size if level == "token" else len(cfg.vision.vit_layers) * cfg.vision.hidden_size
    n_char, n_cell = k * k * SLOTS, k * k  # slots per feature vector
    heads = torch.nn.ModuleDict({
        "chars": torch.nn.Linear(feat_dim, n_char * (char_capacity + 1)),
        "kind": torch.nn.Linear(feat_dim, n_cell * (len(lex.SHAPES) + 1)),
        "colour": torch.nn.Linear(feat_dim, n_cell * (len(lex.PALETTE) + 1)),
    })
    encoder_params = [p for n, p in vit.named_parameters() if level == "token" or not n.startswith("vl_connector.")]
    opt = torch.optim.AdamW([{"params": encoder_params}, {"params": heads.parameters()}], lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 20)
    schedule = Schedule(opt, steps, "cosine", min_lr_ratio=0.1)

    vocab = CharVocab(char_capacity)
    weight = torch.ones(char_capacity + 1)
    weight[NO_LABEL] = empty_weight
    data = _batches(seed, batch, processor, vocab, patch)
    vit.train()
    metrics: dict[str, float] = {}
    sums = np.zeros(7)
    t0 = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * schedule.factor(step, warmup)
        pix, masks, chars, kind, colour = next(data)
        b = pix.shape[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            feats = features(pix, masks)  # (B, N, F): patches or tokens
            char_logits = heads["chars"](feats).float().view(b, -1, char_capacity + 1)
            kind_logits = heads["kind"](feats).float().view(b, -1, len(lex.SHAPES) + 1)
            colour_logits = heads["colour"](feats).float().view(b, -1, len(lex.PALETTE) + 1)
        target = group_slots(chars, k).reshape(b, -1)
        loss_chars = F.cross_entropy(char_logits.reshape(-1, char_capacity + 1), target.reshape(-1),
                                     weight=weight, ignore_index=IGNORE)
        shape_rows = group_slots(kind[..., None], k).reshape(b, -1)
        colour_rows = group_slots(colour[..., None], k).reshape(b, -1)
        has_shapes = shape_rows.any(dim=1)
        loss = loss_chars
        if bool(has_shapes.any()):
            loss = loss + F.cross_entropy(kind_logits[has_shapes].reshape(-1, kind_logits.shape[-1]),
                                          shape_rows[has_shapes].reshape(-1))
            loss = loss + F.cross_entropy(colour_logits[has_shapes].reshape(-1, colour_logits.shape[-1]),
                                          colour_rows[has_shapes].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(encoder_params) + list(heads.parameters()), 1.0)
        opt.step()
        with torch.no_grad():
            pred = char_logits.argmax(-1)
            printed = target > NO_LABEL
            empty = target == NO_LABEL
            on_shape = shape_rows > 0
            sums += [loss.item(), (pred[printed] == target[printed]).sum().item(), printed.sum().item(),
                     (pred[empty] == NO_LABEL).sum().item(), empty.sum().item(),
                     (kind_logits.argmax(-1)[on_shape] == shape_rows[on_shape]).sum().item(), on_shape.sum().item()]
        if (step + 1) % log_every == 0 or step + 1 == steps:
            metrics = {"step": step + 1, "loss": sums[0] / log_every, "char_acc": sums[1] / max(1, sums[2]),
                       "empty_acc": sums[3] / max(1, sums[4]), "shape_acc": sums[5] / max(1, sums[6]),
                       "chars_seen": len(vocab.index), "s_per_step": (time.perf_counter() - t0) / (step + 1)}
            log.info("vision step %d/%d loss %.3f char_acc %.3f empty_acc %.3f shape_acc %.3f (%d characters, %.2f s/step)",
                     step + 1, steps, metrics["loss"], metrics["char_acc"], metrics["empty_acc"],
                     metrics["shape_acc"], metrics["chars_seen"], metrics["s_per_step"])
            sums[:] = 0
    vit.eval()
    save_pretrained(model, out, processor=processor)
    return metrics


def probe_sign_text(model_dir: str | Path, n: int = 2400, seed: int = 78, steps: int = 400,
                    held_out: float = 0.25) -> dict[str, float]:
    """How well a folder's frozen visual tokens name the text of a sign: a health check.

    Renders ``n`` sign images (every language), runs the vision side (ViT and connector)
    once, and fits the smallest reader that has to use every token: an attention pool
    (one score per token) and a linear layer over the (sign, language) classes. Returns
    its accuracy on the first ``1 - held_out`` of the images (``train_acc``) and on the
    rest (``held_out_acc``), plus ``classes`` and ``images``.

    A vision side that still reads scores high here; one whose features were worn down (for
    instance by training it through a decoder's answers) drops even though nothing else
    about the model changed.
    """
    import torch
    import torch.nn.functional as F

    from jvlm_demo import synth_lexicon as lex
    from jvlm_demo.stages import DEMO_IMAGE_SIZE
    from jvlm.loading import load

    if n < 8 or not 0 < held_out < 1:
        raise ValueError(f"need n >= 8 images and 0 < held_out < 1, got n={n}, held_out={held_out}")
    torch.manual_seed(seed)
    model, processor = load(model_dir)
    vlm = model.float().eval().model
    signs, langs = list(lex.SIGNS), list(lex.LANGUAGES)
    feats, labels = [], []
    with torch.no_grad():
        for sample in synthetic.generate(n, seed, "train", ["sign"], image_size=DEMO_IMAGE_SIZE):
            pixels, mask = _whole_image_crop(processor, sample.images[0])
            feats.append(vlm.image_features(pixels[None, None], mask[None, None])[0, 0])
            labels.append(signs.index(sample.spec["sign"]) * len(langs) + langs.index(sample.language))
    x, y = torch.stack(feats), torch.tensor(labels)
    cut = int(round((1 - held_out) * n))
    x = (x - x[:cut].mean((0, 1))) / (x[:cut].std((0, 1)) + 1e-6)
    score = torch.nn.Linear(x.shape[-1], 1)
    classify = torch.nn.Linear(x.shape[-1], len(signs) * len(langs))
    params = [*score.parameters(), *classify.parameters()]
    opt = torch.optim.Adam(params, lr=3e-3, weight_decay=1e-2)

    def logits(v):
        return classify((score(v).softmax(dim=1) * v).sum(dim=1))

    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(logits(x[:cut]), y[:cut]).backward()
        opt.step()
    with torch.no_grad():
        train_acc = (logits(x[:cut]).argmax(-1) == y[:cut]).float().mean().item()
        held_acc = (logits(x[cut:]).argmax(-1) == y[cut:]).float().mean().item()
    return {"train_acc": train_acc, "held_out_acc": held_acc, "classes": float(len(signs) * len(langs)),
            "images": float(n)}
