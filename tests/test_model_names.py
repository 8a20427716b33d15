"""One model-name resolution for every entry point: folders, bundled names, hub ids."""

from __future__ import annotations

import pytest

from jvlm.errors import ModelFolderError
from jvlm.resolve import DEMO_MODEL_DIR, resolve_model


def test_a_local_folder_wins_over_a_bundled_name(tmp_path, monkeypatch):
    (tmp_path / "jvlm-demo").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("jvlm-demo").path == tmp_path / "jvlm-demo" or \
        resolve_model("jvlm-demo").path.resolve() == (tmp_path / "jvlm-demo").resolve()
    monkeypatch.chdir(tmp_path.parent)
    assert resolve_model("jvlm-demo").path == DEMO_MODEL_DIR


def test_cached_hub_id_and_offline_miss(tmp_path, monkeypatch, tiny_model_dir):
    from release_folder import hf_cache_snapshot

    snap = hf_cache_snapshot(tmp_path, "org/model", tiny_model_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("org/model", cache_dir=tmp_path / "hub").path == snap
    with pytest.raises(ModelFolderError, match="HF_HUB_OFFLINE") as err:
        resolve_model("org/absent", cache_dir=tmp_path / "hub")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelFolderError, match="neither"):
        resolve_model("not a model")


def test_train_config_keeps_a_model_name_and_builds_from_it(tmp_path):
    from jvlm.train.config import config_from_dict
    from jvlm.train.loop import build_model

    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    cfg = config_from_dict({"model": {"checkpoint": "jvlm-demo"}, "data": {"sources": [{"name": "d", "path": "d.jsonl"}]}},
                           tmp_path)
    assert cfg.model.checkpoint == "jvlm-demo"
    model, processor = build_model(cfg, None)
    assert model.cfg.text.n_layers >= 1 and processor.token_ids.im_patch is not None


def test_eval_backend_takes_a_model_name():
    from jvlm.eval.runner import InProcessBackend

    backend = InProcessBackend.from_folder("jvlm-demo", batch_size=1)
    assert backend.name == "jvlm-demo"
