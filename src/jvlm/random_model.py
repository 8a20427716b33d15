"""Random-weight model folders: see ``jvlm.tools.random_model`` (kept importable from here)."""

from jvlm.tools.random_model import build_random_model, build_tokenizer, write_random_checkpoint

__all__ = ["build_random_model", "build_tokenizer", "write_random_checkpoint"]
