"""A model folder laid out as the release lays it out, for the Transformers tests.

``write_release_folder(DIR)`` writes random ``tiny`` weights in the official key layout,
sharded with an index, and the release's metadata files: ``config.json`` with ``auto_map``
(and no jvlm-only fields), ``processor_config.json`` and ``preprocessor_config.json`` naming
``JinaVLMProcessor``, ``chat_template.jinja``, and the five remote-code files
(``configuration_jvlm.py``, ``modeling_jvlm.py``, ``blocks_jvlm.py``,
``image_processing_jvlm.py``, ``processing_jvlm.py``). The remote-code files here are
placeholders that raise when executed: loading must never run them.
"""

from __future__ import annotations

import json
from pathlib import Path

REMOTE_FILES = ("configuration_jvlm.py", "modeling_jvlm.py", "blocks_jvlm.py", "image_processing_jvlm.py",
                "processing_jvlm.py")
AUTO_MAP = {
    "AutoConfig": "configuration_jvlm.JinaVLMConfig",
    "AutoModel": "modeling_jvlm.JinaVLMForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_jvlm.JinaVLMForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_jvlm.JinaVLMForConditionalGeneration",
}
PROCESSOR_AUTO_MAP = {"AutoProcessor": "processing_jvlm.JinaVLMProcessor"}
IMAGE_AUTO_MAP = {"AutoImageProcessor": "image_processing_jvlm.JinaVLMImageProcessor",
                  "AutoProcessor": "processing_jvlm.JinaVLMProcessor"}


def write_release_folder(folder: str | Path, seed: int = 0, max_shard_bytes: int = 2_000_000) -> Path:
    from jvlm.random_model import write_random_checkpoint

    folder = Path(folder)
    write_random_checkpoint(folder, "tiny", seed=seed, max_shard_bytes=max_shard_bytes)
    assert (folder / "model.safetensors.index.json").is_file(), "expected a sharded checkpoint"

    config = json.loads((folder / "config.json").read_text())
    config.pop("jvlm_image_processing", None)  # the release keeps image settings in preprocessor_config.json
    config["auto_map"] = AUTO_MAP
    config["torch_dtype"] = "float32"
    config["transformers_version"] = "4.57.1"
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    pre = json.loads((folder / "preprocessor_config.json").read_text())
    pre.update(processor_class="JinaVLMProcessor", auto_map=IMAGE_AUTO_MAP, do_convert_rgb=True)
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    processor = {"processor_class": "JinaVLMProcessor", "auto_map": PROCESSOR_AUTO_MAP,
                 "image_prompt_token": "<|image|>", "always_start_with_space": False}
    (folder / "processor_config.json").write_text(json.dumps(processor, indent=2) + "\n")

    tok = json.loads((folder / "tokenizer_config.json").read_text())
    tok["processor_class"] = "JinaVLMProcessor"
    (folder / "tokenizer_config.json").write_text(json.dumps(tok, indent=2) + "\n")
    assert (folder / "chat_template.jinja").is_file()

    for name in REMOTE_FILES:
        (folder / name).write_text(f'raise RuntimeError("the remote code {name} was executed")\n')
    return folder


def hf_cache_snapshot(hf_home: str | Path, repo_id: str, source: str | Path, revision: str = "0" * 40) -> Path:
    """Lay ``source`` out in ``hf_home`` as huggingface_hub's cache does:
    ``hub/models--org--name/{blobs,snapshots/<rev>,refs/main}`` (files linked from blobs)."""
    import hashlib
    import os
    import shutil

    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    for f in sorted(Path(source).iterdir()):
        if not f.is_file():
            continue
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(f, blob)
        link = snap / f.name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, snap), link)
    return snap


def restore_auto_processor():
    """Undo mlx-vlm's patch of ``AutoProcessor.from_pretrained`` for model_type "jvlm" (its
    Jina-VLM port installs one when imported, as the MLX parity test does at collection);
    returns a function that puts the patch back."""
    from transformers import AutoProcessor

    current = AutoProcessor.__dict__["from_pretrained"]
    fn = getattr(current, "__func__", current)
    if fn.__module__.startswith("transformers"):
        return lambda: None
    original = None
    for cell in fn.__closure__ or ():
        value = cell.cell_contents
        target = getattr(value, "__func__", None)
        if target is not None and target.__module__.startswith("transformers"):
            original = target
    assert original is not None, "cannot find Transformers' own AutoProcessor.from_pretrained"
    AutoProcessor.from_pretrained = classmethod(original)
    return lambda: setattr(AutoProcessor, "from_pretrained", current)
