"""Find one font per writing script, so synthetic images look the same on every machine.

The generator promises byte-identical images for a seed, which only holds if every machine
renders with the same font files. So each script has one preferred font, installed from a
named Debian package by ``scripts/install_fonts.sh``; known Debian paths are tried first and
``fc-match`` (by exact family name) only as a fallback for other layouts of the same font.
A missing font is an error naming the package to install, never a silent substitute.

Arabic must also be *shaped* (letters joined, laid out right to left). Pillow does that
through its raqm layout engine, which needs the FriBiDi library at run time.
"""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import ImageFont, features

from jvlm.errors import JVLMError


class MissingFontError(JVLMError, FileNotFoundError):
    """A font needed to render a script is not installed (the message names the apt package)."""

    code = "missing_font"


logger = logging.getLogger(__name__)

#: writing script of each language the generator speaks
SCRIPT_OF_LANGUAGE: dict[str, str] = {
    "en": "latin",
    "pt": "latin",
    "tr": "latin",
    "ru": "cyrillic",
    "ar": "arabic",
    "zh": "han",
}

INSTALL_HINT = "run scripts/install_fonts.sh (as root) to install every font the generator uses"


@dataclass(frozen=True)
class FontChoice:
    """Where one script's font lives and which Debian package ships it."""

    family: str  # exact fontconfig family name, used when the known paths miss
    regular: tuple[str, ...]  # known paths, preferred first
    bold: tuple[str, ...]  # known bold paths; empty means "embolden the regular face"
    package: str  # Debian package that ships the font
    index: int = 0  # face index inside a .ttc collection


_DEJAVU = FontChoice(
    family="DejaVu Sans",
    regular=("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",),
    bold=("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",),
    package="fonts-dejavu-core",
)

FONT_CHOICES: dict[str, FontChoice] = {
    "latin": _DEJAVU,
    "cyrillic": _DEJAVU,
    "arabic": FontChoice(
        family="Noto Sans Arabic UI",
        regular=("/usr/share/fonts/truetype/noto/NotoSansArabicUI-Regular.ttf",),
        bold=("/usr/share/fonts/truetype/noto/NotoSansArabicUI-Bold.ttf",),
        package="fonts-noto-ui-core",
    ),
    "han": FontChoice(
        family="WenQuanYi Micro Hei",
        regular=("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",),
        bold=(),
        package="fonts-wqy-microhei",
    ),
}


def _fc_match(family: str, bold: bool) -> Path | None:
    """Ask fontconfig for ``family``; accept the answer only if it is that family."""
    if shutil.which("fc-match") is None:
        return None
    pattern = f"{family}:style=Bold" if bold else family
    try:
        out = subprocess.run(
            ["fc-match", "-f", "%{family}|%{style}|%{file}", pattern],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    parts = out.split("|", 2)
    if len(parts) != 3:
        return None
    families, styles, file = parts
    # fc-match always answers with *something*; a different family is a substitute, not a match.
    if family.lower() not in [f.strip().lower() for f in families.split(",")]:
        return None
    if bold and "bold" not in styles.lower():
        return None
    path = Path(file.strip())
    return path if path.is_file() else None


@functools.cache
def find_font(script: str, bold: bool = False) -> Path:
    """Path of the font for ``script`` ("latin", "cyrillic", "arabic", "han").

    With ``bold=True`` returns the bold face, or the regular one when the family has none
    (see ``has_bold``; such text is drawn regular).
    Raises MissingFontError naming the Debian package when the font is not installed.
    """
    if script not in FONT_CHOICES:
        raise MissingFontError(
            f"no font is configured for script {script!r}; expected one of {sorted(FONT_CHOICES)}"
        )
    choice = FONT_CHOICES[script]
    candidates = choice.bold if bold and choice.bold else choice.regular
    for candidate in candidates:
        if Path(candidate).is_file():
            return Path(candidate)
    found = _fc_match(choice.family, bold=bold and bool(choice.bold))
    if found is not None:
        logger.info("font for %s found by fc-match at %s", script, found)
        return found
    raise MissingFontError(
        f"font {choice.family!r} for {script} text was not found (looked at {list(candidates)} "
        f"and asked fc-match); install the Debian package {choice.package!r} "
        f"(apt-get install -y --no-install-recommends {choice.package}) or {INSTALL_HINT}"
    )


def has_bold(script: str) -> bool:
    """Whether the script's family ships a real bold face (else bold is faked by stroking)."""
    return bool(FONT_CHOICES[script].bold)


def shaping_available() -> bool:
    """True when Pillow can shape complex scripts (raqm layout with FriBiDi present)."""
    return bool(features.check("raqm"))


def require_shaping() -> None:
    """Fail loudly rather than draw Arabic as disconnected, left-to-right letters."""
    if not shaping_available():
        raise MissingFontError(
            "Pillow's raqm text layout is unavailable, so Arabic cannot be shaped or laid out "
            "right to left; install the Debian package 'libfribidi0' (raqm loads it at run time) "
            f"or {INSTALL_HINT}, and use a Pillow wheel built with raqm (Pillow >= 10 wheels are)"
        )


@functools.lru_cache(maxsize=256)
def load_font(language: str, size_px: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """The font for ``language`` at ``size_px``, laid out with raqm when Pillow has it.

    Every language uses the same layout engine so that text of all scripts is measured and
    placed by one set of rules; Arabic additionally insists on raqm.
    """
    if language not in SCRIPT_OF_LANGUAGE:
        raise MissingFontError(
            f"no font is configured for language {language!r}; "
            f"expected one of {sorted(SCRIPT_OF_LANGUAGE)}"
        )
    script = SCRIPT_OF_LANGUAGE[language]
    if script == "arabic":
        require_shaping()
    engine = ImageFont.Layout.RAQM if shaping_available() else ImageFont.Layout.BASIC
    path = find_font(script, bold=bold)
    return ImageFont.truetype(str(path), size_px, index=FONT_CHOICES[script].index, layout_engine=engine)


def check_fonts(languages: tuple[str, ...] | list[str]) -> dict[str, Path]:
    """Resolve the font of every language up front; one error lists every missing package."""
    found: dict[str, Path] = {}
    problems: list[str] = []
    for lang in languages:
        try:
            found[lang] = find_font(SCRIPT_OF_LANGUAGE[lang])
            if SCRIPT_OF_LANGUAGE[lang] == "arabic":
                require_shaping()
        except KeyError:
            problems.append(f"unknown language {lang!r} (expected one of {sorted(SCRIPT_OF_LANGUAGE)})")
        except MissingFontError as exc:
            problems.append(str(exc))
    if problems:
        raise MissingFontError("; ".join(problems))
    return found


def missing_glyphs(font: ImageFont.FreeTypeFont, text: str) -> set[str]:
    """Characters of ``text`` that ``font`` would draw as the empty "notdef" box.

    Compares each character's bitmap with that of a noncharacter (U+FFFF), which every font
    draws with its notdef glyph; whitespace is skipped since it has no ink either way.
    """
    notdef = bytes(font.getmask("\uffff"))
    return {ch for ch in set(text) if not ch.isspace() and bytes(font.getmask(ch)) == notdef}
