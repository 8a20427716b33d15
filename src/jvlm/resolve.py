"""Which model folder a ``--model`` argument means.

Accepted, in order: a bundled model name (``jvlm-demo``, the trained default, or
``jvlm/tiny-random``, a random-weight placeholder), a local folder, or a
Hugging Face repo id that is already in the local Hugging Face cache (looked up offline:
running a model never downloads gigabytes behind the user's back). When a repo is absent,
the error gives the command that downloads it.

The default is ``jvlm-demo``: a small model trained on the project's synthetic documents,
shipped inside the package, so every command answers offline right after install (its card,
``assets/jvlm-demo/MODEL_CARD.md``, says what it can and cannot do). ``jvlm/tiny-random`` has
*random* weights, written on first use under ``~/.cache/jvlm/tiny-random``; every command that
uses it says that its answers are noise.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from jvlm.errors import ModelFolderError
from jvlm.paths import cache_dir  # noqa: F401  (the cache folder; also importable from here)

log = logging.getLogger(__name__)

TINY_RANDOM = "jvlm/tiny-random"
#: The small trained model shipped inside the package (src/jvlm/assets/jvlm-demo, see its MODEL_CARD.md).
DEMO_MODEL = "jvlm-demo"
DEMO_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "jvlm-demo"
#: What ``--model`` means when it is not given.
DEFAULT_MODEL = DEMO_MODEL
#: The published checkpoint, named in messages.
RELEASED_MODEL = "jinaai/jina-vlm"

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str
    is_random: bool = False


def random_model_notice(name: str = TINY_RANDOM) -> str:
    return (f"note: using {name}, a tiny model with RANDOM weights; its answers are noise. "
            f"Pass --model with a trained checkpoint, e.g. --model {RELEASED_MODEL}.")


def ensure_tiny_random() -> Path:
    """The placeholder model folder, written once (atomically, so an interrupted first run
    never leaves a half-written folder behind)."""
    folder = cache_dir() / "tiny-random"
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return folder
    from jvlm.tools.random_model import write_random_checkpoint

    folder.parent.mkdir(parents=True, exist_ok=True)
    log.info("writing the tiny random model to %s", folder)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-random-", dir=folder.parent))
    try:
        write_random_checkpoint(tmp, "tiny", seed=0)
        (tmp / "RANDOM_WEIGHTS.txt").write_text(random_model_notice() + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_model(spec: str | os.PathLike | None = None) -> ResolvedModel:
    """A local folder for ``spec`` (see the module docstring), or a ``ModelFolderError``."""
    spec = str(spec) if spec is not None else DEFAULT_MODEL
    if spec == TINY_RANDOM:
        return ResolvedModel(ensure_tiny_random(), TINY_RANDOM, is_random=True)
    if spec == DEMO_MODEL:
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise ModelFolderError(f"the bundled {DEMO_MODEL} model is missing from {DEMO_MODEL_DIR}; reinstall "
                                   "the package, or retrain it with scripts/train_demo.sh")
        return ResolvedModel(DEMO_MODEL_DIR, DEMO_MODEL)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelFolderError(f"--model {spec!r} is a file; pass the folder that holds config.json "
                                   "and the *.safetensors weights")
        return ResolvedModel(path, str(path), is_random=(path / "RANDOM_WEIGHTS.txt").is_file())
    if _REPO_ID.match(spec):
        return ResolvedModel(_from_hf_cache(spec), spec)
    raise ModelFolderError(f"--model {spec!r} is neither an existing folder nor a Hugging Face repo id "
                           f"(owner/name, e.g. {RELEASED_MODEL})")


def _from_hf_cache(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelFolderError(f"reading {repo_id!r} from the Hugging Face cache needs huggingface_hub; "
                               "pip install huggingface_hub, or pass a local folder") from None
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise ModelFolderError(
            f"model {repo_id!r} is not in the local Hugging Face cache; download it first with "
            f"`hf download {repo_id}` (or pass a local folder with --model)"
        ) from None
    except Exception as e:  # malformed ids and cache errors: say so in one line
        raise ModelFolderError(f"cannot look up {repo_id!r} in the Hugging Face cache: {e}") from None
