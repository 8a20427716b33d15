"""Which model folder a model name means, for every entry point.

Accepted, in order: a local folder, a bundled model name (``jvlm-demo``, the trained
default, or ``jvlm/tiny-random``, a random-weight placeholder), or a Hugging Face repo id:
read from the Hugging Face cache when it is there, else downloaded into it with a progress
bar (like Transformers, vLLM and Ollama). ``HF_HUB_OFFLINE=1`` turns the download into a
one-line error that says what to do.

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


def tiny_random_dir() -> Path:
    """Where ``jvlm/tiny-random`` lives once written (``jvlm.tools.random_model.ensure_tiny_random``)."""
    return cache_dir() / "tiny-random"


def resolve_model(spec: str | os.PathLike | None = None, *, revision: str | None = None,
                  cache_dir: str | os.PathLike | None = None, token=None,
                  local_files_only: bool | None = None) -> ResolvedModel:
    """A local folder for ``spec``, or a ``ModelFolderError`` saying what to do.

    One resolution for every entry point (``jvlm.load``, the Transformers auto classes,
    ``jvlm infer/serve/eval``, train configs), in this order:

    1. an existing local folder;
    2. a bundled name (``jvlm-demo``; ``jvlm/tiny-random``);
    3. a Hugging Face repo id (``owner/name``) already in the Hugging Face cache
       (``$HF_HOME``/``$HF_HUB_CACHE``, or ``cache_dir``);
    4. a download of that repo into the cache, with a progress bar — unless
       ``HF_HUB_OFFLINE=1`` or ``local_files_only``, which give one line saying what to do.
    """
    spec = str(spec) if spec is not None else DEFAULT_MODEL
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelFolderError(f"model {spec!r} is a file; pass the folder that holds config.json "
                                   "and the *.safetensors weights")
        return ResolvedModel(path, str(path), is_random=(path / "RANDOM_WEIGHTS.txt").is_file())
    if spec == TINY_RANDOM:
        folder = tiny_random_dir()
        if not (folder / "config.json").is_file():  # the jvlm command writes it before resolving
            raise ModelFolderError(f"{TINY_RANDOM} is not written yet; any jvlm command given --model {TINY_RANDOM} "
                                   "writes it, or call jvlm.tools.random_model.ensure_tiny_random()")
        return ResolvedModel(folder, TINY_RANDOM, is_random=True)
    if spec == DEMO_MODEL:
        if not (DEMO_MODEL_DIR / "config.json").is_file():
            raise ModelFolderError(f"the bundled {DEMO_MODEL} model is missing from {DEMO_MODEL_DIR}; reinstall "
                                   "the package, or retrain it with scripts/train_demo.sh")
        return ResolvedModel(DEMO_MODEL_DIR, DEMO_MODEL)
    if _REPO_ID.match(spec):
        return ResolvedModel(_from_hub(spec, revision, cache_dir, token, local_files_only), spec)
    raise ModelFolderError(f"model {spec!r} is neither an existing folder, a bundled model ({DEMO_MODEL}) nor a "
                           f"Hugging Face repo id (owner/name, e.g. {RELEASED_MODEL})")


def is_model_name(spec: str) -> bool:
    """A bundled name or something shaped like a Hugging Face repo id (not checked further)."""
    return spec in (DEMO_MODEL, TINY_RANDOM) or bool(_REPO_ID.match(spec))


#: What a download fetches: configs, weights, tokenizer and template; never pickles or remote code.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.md"]


def _from_hub(repo_id: str, revision, cache_dir, token, local_files_only) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        raise ModelFolderError(f"reading {repo_id!r} from the Hugging Face hub needs huggingface_hub; "
                               "pip install huggingface_hub, or pass a local folder") from None
    kw = {"revision": revision, "cache_dir": None if cache_dir is None else str(cache_dir), "token": token}
    try:
        return Path(snapshot_download(repo_id, local_files_only=True, **kw))
    except LocalEntryNotFoundError:
        pass
    except Exception as e:  # malformed ids and cache errors: say so in one line
        raise ModelFolderError(f"cannot look up {repo_id!r} in the Hugging Face cache: {e}") from None
    if local_files_only or _hub_offline():
        why = "local_files_only was set" if local_files_only else "HF_HUB_OFFLINE is set"
        raise ModelFolderError(
            f"model {repo_id!r} is not in the Hugging Face cache and {why}; download it on a connected "
            f"machine with `hf download {repo_id}` (and copy the cache), or pass a local folder"
        )
    log.info("downloading %s from the Hugging Face hub", repo_id)
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_DOWNLOAD_PATTERNS, **kw))
    except Exception as e:  # network, auth, missing repo: one line with the cause
        raise ModelFolderError(
            f"could not download {repo_id!r} from the Hugging Face hub ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no details'}); check the name and your network (or run "
            f"`hf download {repo_id}` where the hub is reachable), set HF_TOKEN for a gated repo, or pass a local folder"
        ) from None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
