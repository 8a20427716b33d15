"""Where jvlm keeps files of its own: a leaf module (standard library only) that every layer may use."""

from __future__ import annotations

import os
from pathlib import Path

#: the files that ship inside the package (chat template, the jvlm-demo model)
ASSETS_DIR = Path(__file__).resolve().parent / "assets"


def cache_dir() -> Path:
    """jvlm's cache folder (placeholder model, built tokenizers): ``$JVLM_CACHE`` (or its
    alias ``$JVLM_CACHE_DIR``), else ``$XDG_CACHE_HOME/jvlm``, else ``~/.cache/jvlm``."""
    for var in ("JVLM_CACHE", "JVLM_CACHE_DIR"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jvlm"
