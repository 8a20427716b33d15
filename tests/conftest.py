"""Shared fixtures: a tiny random model folder in the exact official layout."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A complete tiny checkpoint folder (config, safetensors, tokenizer, preprocessor)."""
    from jvlm.random_model import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("tiny-model"), "tiny", seed=0)


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """(model, processor) loaded from the tiny folder, fp32."""
    import jvlm

    return jvlm.load(tiny_model_dir, dtype="fp32")


@pytest.fixture(scope="module")
def transformers_registered():
    """The Transformers auto classes know jvlm while a module's tests run.

    In-process CLI tests defer the registration for the whole process (as the jvlm command
    does), so register explicitly, as any program that uses the auto classes after it would;
    and undo mlx-vlm's AutoProcessor patch (its Jina-VLM port installs one when imported)."""
    import jvlm
    from release_folder import restore_auto_processor

    jvlm._register_with_transformers()
    put_back = restore_auto_processor()
    yield
    put_back()
