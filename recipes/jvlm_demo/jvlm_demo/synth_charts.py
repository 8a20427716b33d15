"""Chart and scene task families: bar charts, line charts and coloured-shape scenes.

Charts print each value beside its bar or point, so "what is the value of X" is a
read-the-number task; "which is largest" is answerable from bar heights alone. Values in a
chart are distinct so that largest/smallest always have exactly one answer.
Shape scenes place at most one shape per cell of a 3x3 grid, so counts are unambiguous and
"left/right" or "top/bottom" is only asked of shapes outside the middle column/row.
"""

from __future__ import annotations

import math
import random

from PIL import Image

from jvlm_demo import synth_lexicon as lex
from jvlm_demo.synth_core import Draft, Painter, pick, tint
from jvlm_demo.synth_phrases import answer_word, ask, label

INK = (30, 30, 35)
AXIS = (110, 110, 120)


# --- bar charts -----------------------------------------------------------------------------

def make_bar_chart(rng: random.Random, lang: str) -> Draft:
    n = rng.randint(3, 4)
    keys = rng.sample(list(lex.ITEMS), n)
    values = rng.sample(range(1, 31), n)  # distinct, so max/min are unique
    spec = {
        "items": keys,
        "values": values,
        "colours": [pick(rng, lex.PALETTE)] * n if rng.random() < 0.5 else rng.sample(lex.PALETTE, n),
        "grid": pick(rng, [True, False]),
    }
    return ask_bar_chart(rng, spec, lang)


def ask_bar_chart(rng: random.Random, spec: dict, lang: str) -> Draft:
    keys, values = spec["items"], spec["values"]
    kind = pick(rng, ["value", "value", "max", "min"])
    if kind == "value":
        i = rng.randrange(len(values))
        return Draft(ask(rng, "chart.value", lang, label=lex.ITEMS[keys[i]][lang]), str(values[i]), spec)
    i = values.index(max(values) if kind == "max" else min(values))
    return Draft(ask(rng, f"bar.{kind}", lang), lex.ITEMS[keys[i]][lang], spec)


def _axes(p: Painter, lang: str, title_key: str, top_value: int, grid: bool) -> tuple[float, float, float, float]:
    """Title, y axis with ticks every 5 (or 10); returns the plot box (left, top, right, bottom).

    ``top_value`` is the axis top; it sits above the largest drawn value so that the value
    printed over the highest bar or point stays clear of the title.
    """
    title = label(title_key, lang)
    p.text((p.width / 2, p.px(18)), title, lang, p.px(18), INK, "mm", bold=True)
    left, top, right, bottom = p.px(36), p.px(40), p.width - p.px(10), p.height - p.px(44)
    step = 5 if top_value <= 40 else 10
    for v in range(0, top_value + 1, step):
        y = bottom - (bottom - top) * v / top_value
        if grid and v:
            p.draw.line([left, y, right, y], fill=(225, 225, 230), width=p.px(1))
        p.text((left - p.px(6), y), str(v), "en", p.px(12), AXIS, "rm")
    p.draw.line([left, top, left, bottom], fill=AXIS, width=p.px(1.5))
    p.draw.line([left, bottom, right, bottom], fill=AXIS, width=p.px(1.5))
    return left, top, right, bottom


def render_bar_chart(spec: dict, lang: str, size: tuple[int, int]) -> Image.Image:
    p = Painter(size, (255, 255, 255))
    values = spec["values"]
    top_value = 35  # values are at most 30
    left, top, right, bottom = _axes(p, lang, "bar.title", top_value, spec["grid"])
    slot = (right - left) / len(values)
    bar_w = slot * 0.6
    for i, (key, v, colour) in enumerate(zip(spec["items"], values, spec["colours"])):
        cx = left + slot * (i + 0.5)
        y = bottom - (bottom - top) * v / top_value
        p.draw.rectangle([cx - bar_w / 2, y, cx + bar_w / 2, bottom], fill=lex.COLOURS[colour]["rgb"])
        p.text((cx, y - p.px(4)), str(v), "en", p.px(26), INK, "mb", bold=True)
        name = lex.ITEMS[key][lang]
        p.text((cx, bottom + p.px(20)), name, lang, p.fit(name, lang, p.px(24), int(slot * 0.98)), INK, "mm")
    return p.image


# --- line charts ----------------------------------------------------------------------------

def make_line_chart(rng: random.Random, lang: str) -> Draft:
    n = rng.randint(4, 5)
    start = rng.randrange(12 - n + 1)
    values = rng.sample(range(2, 49), n)
    spec = {
        "months": list(range(start, start + n)),
        "values": values,
        "colour": pick(rng, lex.PALETTE),
        "grid": pick(rng, [True, False]),
        "markers": pick(rng, ["dot", "square"]),
    }
    return ask_line_chart(rng, spec, lang)


def ask_line_chart(rng: random.Random, spec: dict, lang: str) -> Draft:
    values = spec["values"]
    kind = pick(rng, ["value", "value", "max", "min"])
    if kind == "value":
        i = rng.randrange(len(values))
        question = ask(rng, "chart.value", lang, label=lex.MONTHS_SHORT[spec["months"][i]][lang])
        return Draft(question, str(values[i]), spec)
    i = values.index(max(values) if kind == "max" else min(values))
    return Draft(ask(rng, f"line.{kind}", lang), lex.MONTHS_SHORT[spec["months"][i]][lang], spec)


def render_line_chart(spec: dict, lang: str, size: tuple[int, int]) -> Image.Image:
    p = Painter(size, (255, 255, 255))
    values, months = spec["values"], spec["months"]
    top_value = 60  # values are at most 48
    left, top, right, bottom = _axes(p, lang, "line.title", top_value, spec["grid"])
    slot = (right - left) / len(values)
    colour = lex.COLOURS[spec["colour"]]["rgb"]
    points = [(left + slot * (i + 0.5), bottom - (bottom - top) * v / top_value) for i, v in enumerate(values)]
    p.draw.line(points, fill=colour, width=p.px(3), joint="curve")
    r = p.px(5)
    for (x, y), v, m in zip(points, values, months):
        if spec["markers"] == "dot":
            p.draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        else:
            p.draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        p.text((x, y - p.px(9)), str(v), "en", p.px(24), INK, "mb", bold=True)
        name = lex.MONTHS_SHORT[m][lang]
        p.text((x, bottom + p.px(20)), name, lang, p.fit(name, lang, p.px(22), int(slot * 0.98)), INK, "mm")
    return p.image


# --- shape scenes ---------------------------------------------------------------------------

def make_shapes(rng: random.Random, lang: str) -> Draft:
    n = rng.randint(1, 4)
    cells = rng.sample(range(9), n)
    shapes = [[pick(rng, lex.SHAPES), pick(rng, lex.PALETTE), cell, rng.randint(55, 80),
               rng.randint(-8, 8), rng.randint(-8, 8)] for cell in cells]
    spec = {"background": tint(rng, (245, 245, 240), 10), "shapes": shapes}
    return ask_shapes(rng, spec, lang)


def ask_shapes(rng: random.Random, spec: dict, lang: str) -> Draft:
    shapes = spec["shapes"]
    n = len(shapes)
    kinds = [s[0] for s in shapes]
    colours = [s[1] for s in shapes]
    unique_kind = [s for s in shapes if kinds.count(s[0]) == 1]
    options = ["count", "total"]
    if unique_kind:
        options += ["colour", "colour"]
        if any(s[2] % 3 != 1 for s in unique_kind):
            options.append("lr")
        if any(s[2] // 3 != 1 for s in unique_kind):
            options.append("tb")
    if any(colours.count(c) == 1 for c in colours):
        options.append("which")
    kind = pick(rng, options)
    if kind == "count":
        shape = pick(rng, lex.SHAPES)
        question = ask(rng, "shapes.count", lang, count=lex.SHAPES[shape]["count"][lang])
        return Draft(question, str(kinds.count(shape)), spec)
    if kind == "total":
        return Draft(ask(rng, "shapes.total", lang), str(n), spec)
    if kind == "which":
        colour = pick(rng, [c for c in colours if colours.count(c) == 1])
        shape = shapes[colours.index(colour)][0]
        question = ask(rng, "shapes.which", lang, which=lex.colour_which(colour, lang))
        return Draft(question, lex.SHAPES[shape]["name"][lang], spec)
    if kind == "colour":
        target = pick(rng, unique_kind)
        question = ask(rng, "shapes.colour", lang, the=lex.SHAPES[target[0]]["the"][lang])
        return Draft(question, lex.colour_name(target[1], lang), spec)
    if kind == "lr":
        target = pick(rng, [s for s in unique_kind if s[2] % 3 != 1])
        answer = answer_word("left" if target[2] % 3 == 0 else "right", lang)
    else:
        target = pick(rng, [s for s in unique_kind if s[2] // 3 != 1])
        answer = answer_word("top" if target[2] // 3 == 0 else "bottom", lang)
    return Draft(ask(rng, f"shapes.{kind}", lang, the=lex.SHAPES[target[0]]["the"][lang]), answer, spec)


def _star(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Five-pointed star, point up: outer and inner vertices alternate."""
    pts = []
    for k in range(10):
        radius = r if k % 2 == 0 else r * 0.42
        angle = -math.pi / 2 + k * math.pi / 5
        pts.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return pts


def shape_geometry(shape: list, p: Painter) -> tuple[float, float, float]:
    """Centre and size ``r`` (canvas px) of one spec shape on ``p``'s 3x3 grid."""
    _, _, cell, pct, dx, dy = shape
    cell_w, cell_h = p.width / 3, p.height / 3
    cx = cell_w * (cell % 3 + 0.5) + p.px(dx)
    cy = cell_h * (cell // 3 + 0.5) + p.px(dy)
    return cx, cy, min(cell_w, cell_h) * pct / 200


def render_shapes(spec: dict, lang: str, size: tuple[int, int]) -> Image.Image:
    p = Painter(size, tuple(spec["background"]))
    for shape in spec["shapes"]:
        kind, colour = shape[0], shape[1]
        cx, cy, r = shape_geometry(shape, p)
        fill = lex.COLOURS[colour]["rgb"]
        if kind == "circle":
            p.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif kind == "square":
            s = r * 0.88
            p.draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
        elif kind == "triangle":
            p.draw.regular_polygon((cx, cy + r * 0.15, r * 1.05), 3, fill=fill)
        elif kind == "star":
            p.draw.polygon(_star(cx, cy, r * 1.05), fill=fill)
        else:
            p.draw.regular_polygon((cx, cy, r), 6, fill=fill)
    return p.image
