"""A small learnable dataset in the training format, for smoke tests, benchmarks and the docs.

Images are coloured shapes on a plain background; each caption row asks what the image
shows and the answer names the colour and the shape ("a red circle"), so a model can
learn it within a few dozen steps. Text-only rows are short instruction pairs. Written
exactly like user data: JSONL in the Hugging Face messages format, images relative to it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
SHAPES = ("circle", "square", "triangle")
_WORDS = ("cat", "train", "apple", "window", "river", "chart", "station", "garden")


def draw_shape(colour: str, shape: str, size: tuple[int, int], rng: random.Random) -> Image.Image:
    w, h = size
    img = Image.new("RGB", size, (245, 245, 240))
    d = ImageDraw.Draw(img)
    side = min(w, h)
    r = side * rng.uniform(0.25, 0.4)
    cx, cy = w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    elif shape == "square":
        d.rectangle(box, fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def write_toy_dataset(folder: str | Path, n_image: int = 24, n_text: int = 8, seed: int = 0,
                      image_size: tuple[int, int] = (64, 64)) -> dict[str, Path]:
    """Write ``captions.jsonl`` (+ ``images/``) and ``text.jsonl``; returns their paths by source name."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    rows = []
    for i in range(n_image):
        colour, shape = rng.choice(sorted(COLOURS)), rng.choice(SHAPES)
        name = f"images/{i:04d}.png"
        draw_shape(colour, shape, image_size, rng).save(folder / name)
        rows.append({"messages": [
            {"role": "user", "content": [{"type": "image", "image": name},
                                         {"type": "text", "text": "What is shown in this image?"}]},
            {"role": "assistant", "content": f"A {colour} {shape}."},
        ]})
    captions = folder / "captions.jsonl"
    captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text_rows = []
    for _ in range(n_text):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        word = rng.choice(_WORDS)
        text_rows.append({"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                       {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]})
        text_rows.append({"messages": [{"role": "user", "content": [{"type": "text", "text": f"Say the word {word}."}]},
                                       {"role": "assistant", "content": word}]})
    text = folder / "text.jsonl"
    text.write_text("".join(json.dumps(r) + "\n" for r in text_rows[:n_text]))
    return {"captions": captions, "text": text}
