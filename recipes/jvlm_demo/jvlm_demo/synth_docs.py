"""Document-like task families: receipts, forms, tables and signs.

Answers are copied verbatim from what the image prints (a price as printed, a name as
written), so the tasks teach reading and locating, never arithmetic. Right-to-left
languages get mirrored layouts: labels on the right, values on the left.
"""

from __future__ import annotations

import random

from PIL import Image

from jvlm_demo import synth_lexicon as lex
from jvlm_demo.synth_core import Draft, Painter, pick, readable_on, tint
from jvlm_demo.synth_phrases import ask, label

INK = (25, 25, 30)
GREY_INK = (90, 90, 100)


def _side(lang: str) -> tuple[str, str]:
    """(anchor of the leading column, anchor of the trailing column) for a text row."""
    return ("rm", "lm") if lang in lex.RTL_LANGUAGES else ("lm", "rm")


# --- receipts --------------------------------------------------------------------------------

def make_receipt(rng: random.Random, lang: str) -> Draft:
    n_items = rng.randint(2, 4)
    keys = rng.sample(list(lex.ITEMS), n_items)
    cents = [rng.randint(1, 60) * 25 for _ in keys]  # 0.25 .. 15.00, quarter steps
    date = [rng.randint(2023, 2026), rng.randint(1, 12), rng.randint(1, 28)]
    spec = {
        "store": pick(rng, lex.STORES[lang]),
        "date": date,
        "items": [[k, c] for k, c in zip(keys, cents)],
        "desk": tint(rng, (95, 105, 115), 25),
        "paper": tint(rng, (248, 246, 238), 6),
        "offset": rng.randint(-12, 12),
    }
    return ask_receipt(rng, spec, lang)


def ask_receipt(rng: random.Random, spec: dict, lang: str) -> Draft:
    items = spec["items"]
    kind = pick(rng, ["total", "total", "price", "price", "date", "count", "store"])
    if kind == "total":
        answer = lex.format_price(sum(c for _, c in items), lang)
    elif kind == "price":
        key, c = items[rng.randrange(len(items))]
        answer = lex.format_price(c, lang)
        question = ask(rng, "receipt.price", lang, item=lex.ITEMS[key][lang], item_the=lex.item_the(key, lang))
        return Draft(question, answer, spec)
    elif kind == "date":
        answer = lex.format_date(*spec["date"], lang)
    elif kind == "count":
        answer = str(len(items))
    else:
        answer = spec["store"]
    return Draft(ask(rng, f"receipt.{kind}", lang), answer, spec)


def render_receipt(spec: dict, lang: str, size: tuple[int, int]) -> Image.Image:
    p = Painter(size, tuple(spec["desk"]))
    items = spec["items"]
    n_lines = 4 + len(items)  # store, date, items, total; the two rules take one line between them
    paper_w = int(p.width * 0.86)
    x0 = (p.width - paper_w) // 2 + p.px(spec["offset"] * 0.5)
    top, bottom = p.px(8), p.height - p.px(8)
    p.draw.rectangle([x0, top, x0 + paper_w, bottom], fill=tuple(spec["paper"]))
    line_h = min(p.px(50), (bottom - top - p.px(12)) / (n_lines + 1))
    size_px = int(line_h * 0.7)
    margin = p.px(12)
    lead_a, trail_a = _side(lang)
    lead_x, trail_x = (x0 + paper_w - margin, x0 + margin) if lang in lex.RTL_LANGUAGES else (x0 + margin, x0 + paper_w - margin)
    lead_w = int((paper_w - 2 * margin) * 0.58)  # item names shrink to fit beside the price
    cx = x0 + paper_w / 2
    y = top + p.px(6) + line_h / 2
    store_px = p.fit(spec["store"], lang, int(size_px * 1.15), paper_w - 2 * margin, bold=True)
    p.text((cx, y), spec["store"], lang, store_px, INK, "mm", bold=True)
    y += line_h
    date_label = label("receipt.date", lang) + lex.colon(lang)
    p.text((lead_x, y), date_label, lang, p.fit(date_label, lang, size_px, lead_w - p.px(40)), INK, lead_a)
    p.text((trail_x, y), lex.format_date(*spec["date"], lang), lang, size_px, INK, trail_a)
    y += line_h * 0.75
    p.draw.line([x0 + margin, y, x0 + paper_w - margin, y], fill=GREY_INK, width=p.px(1.5))
    y += line_h * 0.75
    for key, c in items:
        name = lex.ITEMS[key][lang]
        p.text((lead_x, y), name, lang, p.fit(name, lang, size_px, lead_w), INK, lead_a)
        p.text((trail_x, y), lex.format_price(c, lang), lang, size_px, INK, trail_a)
        y += line_h
    y -= line_h * 0.25
    p.draw.line([x0 + margin, y, x0 + paper_w - margin, y], fill=GREY_INK, width=p.px(1.5))
    y += line_h * 0.75
    total = lex.format_price(sum(c for _, c in items), lang)
    total_label = label("receipt.total", lang)
    p.text((lead_x, y), total_label, lang, p.fit(total_label, lang, size_px, lead_w, bold=True), INK, lead_a,
           bold=True)
    p.text((trail_x, y), total, lang, size_px, INK, trail_a, bold=True)
    return p.image


# --- forms -----------------------------------------------------------------------------------

FORM_FIELDS = ("name", "city", "age", "phone", "code")
#: fields a form draws besides the name (phone numbers stay in the lexicon for bigger canvases)
FORM_EXTRA_FIELDS = ("city", "age", "code")


def _field_value(rng: random.Random, field: str, lang: str) -> str:
    if field == "name":
        return lex.full_name(lang, pick(rng, lex.FIRST_NAMES[lang]), pick(rng, lex.LAST_NAMES[lang]))
    if field == "city":
        return pick(rng, lex.CITIES[lang])
    if field == "age":
        return str(rng.randint(18, 80))
    if field == "phone":
        return f"{rng.randint(200, 989)}-{rng.randint(0, 9999):04d}"
    return str(rng.randint(100, 999))


def make_form(rng: random.Random, lang: str) -> Draft:
    fields = ["name"] + rng.sample(FORM_EXTRA_FIELDS, rng.randint(1, 2))
    spec = {
        "fields": [[f, _field_value(rng, f, lang)] for f in fields],
        "paper": tint(rng, (250, 250, 246), 5),
        "accent": tint(rng, (60, 90, 150), 40),
        "box": pick(rng, [True, False]),
    }
    return ask_form(rng, spec, lang)


def ask_form(rng: random.Random, spec: dict, lang: str) -> Draft:
    field, value = spec["fields"][rng.randrange(len(spec["fields"]))]
    return Draft(ask(rng, "form.field", lang, label=label(f"form.{field}", lang)), value, spec)


def render_form(spec: dict, lang: str, size: tuple[int, int]) -> Image.Image:
    p = Painter(size, tuple(spec["paper"]))
    accent = tuple(spec["accent"])
    rtl = lang in lex.RTL_LANGUAGES
    margin = p.px(14)
    band_h = p.px(42)
    p.draw.rectangle([0, 0, p.width, band_h], fill=accent)
    title = label("form.title", lang)
    p.text((p.width / 2, band_h / 2), title, lang, p.fit(title, lang, p.px(20), p.width - 2 * margin, True),
           readable_on(accent), "mm", bold=True)
    fields = spec["fields"]
    row_h = min(p.px(96), (p.height - band_h - p.px(20)) / len(fields))
    size_px = p.px(26)
    label_w = int((p.width - 2 * margin) * 0.34)
    y = band_h + p.px(16) + row_h / 2
    for field, value in fields:
        text = label(f"form.{field}", lang) + lex.colon(lang)
        text_px = p.fit(text, lang, int(size_px * 0.85), label_w - p.px(6))
        if rtl:
            p.text((p.width - margin, y), text, lang, text_px, GREY_INK, "rm")
            box = [margin, y - row_h * 0.3, p.width - margin - label_w, y + row_h * 0.3]
            value_xy, value_anchor = (box[2] - p.px(8), y), "rm"
        else:
            p.text((margin, y), text, lang, text_px, GREY_INK, "lm")
            box = [margin + label_w, y - row_h * 0.3, p.width - margin, y + row_h * 0.3]
            value_xy, value_anchor = (box[0] + p.px(8), y), "lm"
        if spec["box"]:
            p.draw.rectangle(box, outline=accent, width=p.px(1.5))
        else:
            p.draw.line([box[0], box[3], box[2], box[3]], fill=accent, width=p.px(1.5))
        value_px = p.fit(value, lang, int(size_px * 1.15), int(box[2] - box[0] - p.px(16)))
        p.text(value_xy, value, lang, value_px, INK, value_anchor)
        y += row_h
    return p.image


# --- tables ----------------------------------------------------------------------------------

def make_table(rng: random.Random, lang: str) -> Draft:
    n_rows, n_cols = rng.randint(2, 3), rng.randint(2, 3)
    start = rng.randrange(7 - n_cols + 1)
    spec = {
        "rows": rng.sample(list(lex.ITEMS), n_rows),
        "cols": list(range(start, start + n_cols)),  # consecutive weekdays
        "values": [[rng.randint(0, 99) for _ in range(n_cols)] for _ in range(n_rows)],
        "header": tint(rng, (210, 225, 240), 20),
        "stripes": pick(rng, [True, False]),
    }
    return ask_table(rng, spec, lang)


def ask_table(rng: random.Random, spec: dict, lang: str) -> Draft:
    r, c = rng.randrange(len(spec["rows"])), rng.randrange(len(spec["cols"]))
    question = ask(rng, "table.cell", lang, row=lex.ITEMS[spec["rows"][r]][lang],
                   col=lex.WEEKDAYS_SHORT[spec["cols"][c]][lang])
    return Draft(question, str(spec["values"][r][c]), spec)


def render_table(spec: dict, lang: str, size: tuple[int, int]) -> Image.Image:
    p = Painter(size, (252, 252, 252))
    rtl = lang in lex.RTL_LANGUAGES
    rows, cols, values = spec["rows"], spec["cols"], spec["values"]
    margin = p.px(10)
    title_h = p.px(36)
    title = label("table.title", lang)
    p.text((p.width / 2, title_h / 2 + p.px(4)), title, lang, p.fit(title, lang, p.px(18), p.width - 2 * margin, True),
           INK, "mm", bold=True)
    grid_w = p.width - 2 * margin
    size_px = p.px(27)
    # The item column takes what its longest label needs, so day columns keep the rest.
    names = [label("table.corner", lang)] + [lex.ITEMS[r][lang] for r in rows]
    needed = max(p.text_width(t, lang, size_px, bold=True) for t in names) + p.px(16)
    first_w = int(min(max(needed, grid_w * 0.22), grid_w * 0.4))
    cell_w = (grid_w - first_w) / len(cols)
    row_h = min(p.px(72), (p.height - title_h - 2 * margin) / (len(rows) + 1))
    top = title_h + margin / 2

    def col_x(j: int) -> tuple[float, float]:
        """Left and right edge of column j (0 = the item column), mirrored for RTL."""
        left = margin if j == 0 else margin + first_w + (j - 1) * cell_w
        right = left + (first_w if j == 0 else cell_w)
        return (p.width - right, p.width - left) if rtl else (left, right)

    for i in range(len(rows) + 1):
        y0 = top + i * row_h
        fill = tuple(spec["header"]) if i == 0 else ((240, 243, 247) if spec["stripes"] and i % 2 == 0 else None)
        if fill:
            p.draw.rectangle([margin, y0, p.width - margin, y0 + row_h], fill=fill)
        cells = [label("table.corner", lang)] + [lex.WEEKDAYS_SHORT[c][lang] for c in cols] if i == 0 else \
            [lex.ITEMS[rows[i - 1]][lang]] + [str(v) for v in values[i - 1]]
        for j, text in enumerate(cells):
            left, right = col_x(j)
            cx = (left + right) / 2
            text_px = p.fit(text, lang, size_px, int(right - left - p.px(8)), bold=i == 0)
            p.text((cx, y0 + row_h / 2), text, lang, text_px, INK, "mm", bold=i == 0)
    bottom = top + (len(rows) + 1) * row_h
    line = {"fill": (120, 120, 130), "width": p.px(1)}
    for i in range(len(rows) + 2):
        p.draw.line([margin, top + i * row_h, p.width - margin, top + i * row_h], **line)
    for j in range(len(cols) + 1):
        left, right = col_x(j)
        p.draw.line([left, top, left, bottom], **line)
        p.draw.line([right, top, right, bottom], **line)
    return p.image


# --- signs -----------------------------------------------------------------------------------

def make_sign(rng: random.Random, lang: str) -> Draft:
    key = pick(rng, lex.SIGNS)
    colour = "red" if key == "stop" and rng.random() < 0.7 else pick(rng, lex.PALETTE)
    shape = "octagon" if key == "stop" else pick(rng, ["rect", "rounded"])
    spec = {
        "sign": key,
        "colour": colour,
        "shape": shape,
        "wall": tint(rng, pick(rng, [(225, 225, 220), (200, 215, 230), (235, 225, 205), (190, 205, 190)]), 10),
        "post": pick(rng, [True, False]),
        "scale": rng.randint(80, 100),  # % of the largest sign that fits
        "dy": rng.randint(-20, 20),
    }
    return ask_sign(rng, spec, lang)


def ask_sign(rng: random.Random, spec: dict, lang: str) -> Draft:
    if rng.random() < 0.7:
        return Draft(ask(rng, "sign.text", lang), lex.SIGNS[spec["sign"]][lang], spec)
    return Draft(ask(rng, "sign.colour", lang), lex.colour_name(spec["colour"], lang), spec)


def render_sign(spec: dict, lang: str, size: tuple[int, int]) -> Image.Image:
    p = Painter(size, tuple(spec["wall"]))
    fill = lex.COLOURS[spec["colour"]]["rgb"]
    ink = readable_on(fill)
    text = lex.SIGNS[spec["sign"]][lang]
    cx, cy = p.width / 2, p.height / 2 + p.px(spec["dy"])
    scale = spec["scale"] / 100
    if spec["shape"] == "octagon":
        r = min(p.width, p.height) * 0.36 * scale
        if spec["post"]:
            p.draw.rectangle([cx - p.px(6), cy, cx + p.px(6), p.height], fill=(120, 120, 125))
        p.draw.regular_polygon((cx, cy, r), 8, rotation=22.5, fill=(245, 245, 245))
        p.draw.regular_polygon((cx, cy, r * 0.92), 8, rotation=22.5, fill=fill)
        box_w = r * 1.5
    else:
        w, h = p.width * 0.8 * scale, p.height * 0.42 * scale
        if spec["post"]:
            p.draw.rectangle([cx - p.px(6), cy, cx + p.px(6), p.height], fill=(120, 120, 125))
        radius = p.px(18) if spec["shape"] == "rounded" else p.px(3)
        p.draw.rounded_rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], radius, fill=(245, 245, 245))
        inset = p.px(6)
        p.draw.rounded_rectangle([cx - w / 2 + inset, cy - h / 2 + inset, cx + w / 2 - inset, cy + h / 2 - inset],
                                 max(1, radius - inset), fill=fill)
        box_w = w - 4 * inset
    size_px = p.px(44)
    lines = [text]
    if p.text_width(text, lang, size_px, True) > box_w and " " in text:
        lines = p.wrap(text, lang, size_px, int(box_w), True)
    size_px = min(p.fit(line, lang, size_px, int(box_w), True) for line in lines)
    line_h = size_px * 1.25
    y = cy - line_h * (len(lines) - 1) / 2
    for line in lines:
        p.text((cx, y), line, lang, size_px, ink, "mm", bold=True)
        y += line_h
    return p.image
