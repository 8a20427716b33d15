"""Training: the two-stage Jina-VLM recipe (``jvlm train CONFIG.yaml``, or ``jvlm.train.train``).

Modules, in the order data flows through them:
config (the YAML schema) -> init_from_parts (SigLIP + Qwen3 -> a new model) -> data (JSONL
rows -> labelled examples) -> mixing (exact text-only share, curriculum phases) -> objective
(the loss) -> optim (groups, freezing, schedule) -> distributed (DDP / FSDP2) -> checkpoint
(atomic, exact resume) -> metrics (JSONL, plot, progress) -> loop (the trainer).
"""

from __future__ import annotations

from typing import Any


def train(config, resume: bool | str | None = None, overrides: dict[str, Any] | None = None):
    """Run a training config to the end; see ``jvlm.train.loop.train``."""
    from jvlm.train.loop import train as _train

    return _train(config, resume=resume, overrides=overrides)


__all__ = ["train"]
