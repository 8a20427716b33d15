"""What every synthetic task family shares: the draft it produces and a text-aware painter.

A family works in two steps so that held-out splits stay cheap and exact:
``make(rng, lang)`` draws everything random into a JSON-able ``spec`` plus the question
and answer (no pixels yet), and ``render(spec, lang, size)`` draws the image from the spec
alone, with no randomness. The generator hashes the draft to decide its split before
paying for any rendering, and re-rendering a spec always gives the same bytes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from PIL import Image, ImageDraw, ImageFont

from jvlm_demo.fonts import SCRIPT_OF_LANGUAGE, has_bold, load_font

#: reference canvas side: layouts are designed at 378 px and scaled from there
REFERENCE_SIDE = 378

_ARABIC_LETTER = re.compile("[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]")


@dataclass
class Draft:
    """One sample before rendering: question, answer and (for image tasks) the image spec."""

    question: str
    answer: str
    spec: dict | None = None  # JSON-able; fully determines the image


@dataclass(frozen=True)
class TaskFamily:
    """A named way of making samples; ``render`` is None for text-only families.

    ``make(rng, lang)`` draws a whole draft. Image families also have
    ``ask(rng, spec, lang)``, which draws one more question about an already drawn image,
    so one image can carry several questions (denser supervision for training).
    """

    name: str
    make: Callable[[random.Random, str], Draft]
    render: Callable[[dict, str, tuple[int, int]], Image.Image] | None = None
    ask: Callable[[random.Random, dict, str], Draft] | None = None

    @property
    def has_image(self) -> bool:
        return self.render is not None


def is_rtl_text(text: str) -> bool:
    """Whether ``text`` contains Arabic letters (and so is laid out right to left)."""
    return bool(_ARABIC_LETTER.search(text))


class TextRun(NamedTuple):
    """One run of text a ``Painter`` drew: font size in canvas px, box (left, top, right, bottom)."""

    text: str
    lang: str
    size: int
    bold: bool
    box: tuple[int, int, int, int]


class Painter:
    """A canvas that draws text in the right font, direction and size for each language.

    Sizes passed in are in reference pixels (a 378 px canvas) and scaled by ``unit``, so
    one layout serves every ``image_size`` and text keeps its proportions.
    """

    def __init__(self, size: tuple[int, int], background: tuple[int, int, int]):
        self.width, self.height = size
        self.unit = min(size) / REFERENCE_SIDE
        self.image = Image.new("RGB", size, background)
        self.draw = ImageDraw.Draw(self.image)
        #: every text drawn, also reachable as the image's ``info["text_runs"]``: layout checks
        #: and transcripts read it, and it is enough to place each character again
        #: (``jvlm_demo.demo_vision`` turns it into per-patch labels)
        self.runs: list[TextRun] = []
        self.image.info["text_runs"] = self.runs

    def px(self, value: float) -> int:
        """Reference pixels -> canvas pixels."""
        return max(1, round(value * self.unit))

    def font(self, lang: str, size_px: int, bold: bool = False) -> ImageFont.FreeTypeFont:
        # A family without a bold face (the Chinese one) stays regular: stroking it to fake
        # bold smears dense characters at these sizes.
        bold = bold and has_bold(SCRIPT_OF_LANGUAGE[lang])
        return load_font(lang, max(6, size_px), bold=bold)

    def _style(self, lang: str, text: str, bold: bool) -> dict:
        """Layout options: right-to-left direction and Arabic language for Arabic runs."""
        opts: dict = {}
        if is_rtl_text(text):
            opts["direction"] = "rtl"
            opts["language"] = "ar"
        return opts

    def text_width(self, text: str, lang: str, size_px: int, bold: bool = False) -> int:
        opts = self._style(lang, text, bold)
        left, _, right, _ = self.draw.textbbox((0, 0), text, font=self.font(lang, size_px, bold), anchor="ls", **opts)
        return right - left

    def fit(self, text: str, lang: str, size_px: int, max_width: int, bold: bool = False, floor_px: int = 0) -> int:
        """The largest font size <= ``size_px`` at which ``text`` fits in ``max_width``."""
        floor_px = floor_px or self.px(10)
        size = size_px
        while size > floor_px and self.text_width(text, lang, size, bold) > max_width:
            size -= 1
        return size

    def text(
        self,
        xy: tuple[float, float],
        text: str,
        lang: str,
        size_px: int,
        fill: tuple[int, int, int] = (20, 20, 20),
        anchor: str = "lm",
        bold: bool = False,
    ) -> None:
        """Draw ``text`` at ``xy`` (canvas pixels) with a Pillow anchor such as "lm", "rm", "mm"."""
        opts = self._style(lang, text, bold)
        xy = (round(xy[0]), round(xy[1]))
        font = self.font(lang, size_px, bold)
        self.draw.text(xy, text, font=font, fill=fill, anchor=anchor, **opts)
        box = self.draw.textbbox(xy, text, font=font, anchor=anchor, **opts)
        self.runs.append(TextRun(text, lang, font.size, bold, box))

    def wrap(self, text: str, lang: str, size_px: int, max_width: int, bold: bool = False) -> list[str]:
        """Greedy word wrap on spaces (Chinese labels are short enough to stay on one line)."""
        words = text.split(" ")
        lines: list[str] = []
        for word in words:
            candidate = f"{lines[-1]} {word}" if lines else word
            if lines and self.text_width(candidate, lang, size_px, bold) <= max_width:
                lines[-1] = candidate
            else:
                lines.append(word)
        return lines


def pick(rng: random.Random, options):
    """``rng.choice`` that also accepts dict keys, in insertion order (deterministic)."""
    seq = list(options)
    return seq[rng.randrange(len(seq))]


def tint(rng: random.Random, base: tuple[int, int, int], spread: int) -> list[int]:
    """A colour near ``base`` (each channel within ±spread), as a JSON-able list."""
    return [max(0, min(255, c + rng.randint(-spread, spread))) for c in base]


def readable_on(rgb) -> tuple[int, int, int]:
    """Black or white, whichever reads better on background ``rgb``."""
    r, g, b = rgb
    luminance = 0.299 * r + 0.587 * g + 0.114 * b
    return (15, 15, 15) if luminance > 150 else (250, 250, 250)
