"""``jvlm train`` in LoRA mode: adapters only, adapter-only checkpoints that PEFT loads,
resume, and a merged full folder at the end."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import jvlm
from jvlm.errors import TrainConfigError
from jvlm.train import train
from jvlm.train.config import load_config
from test_train_loop import write_config


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("lora-run")
    cfg = write_config(folder, tiny_model_dir, optim__steps=4, checkpoint__every=2,
                       lora={"r": 4, "alpha": 8, "targets": ["decoder", "connector"], "lr": 5e-3})
    return folder, train(cfg)


def _tensors(folder):
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_checkpoints_hold_only_the_adapter(lora_run):
    folder, result = lora_run
    steps = sorted((result.output_dir / "checkpoints").glob("step-*"))
    assert steps
    for step in steps:
        assert (step / "adapter" / "adapter_model.safetensors").is_file()
        assert (step / "adapter" / "adapter_config.json").is_file()
        assert not (step / "model").exists()
        keys = load_file(step / "adapter" / "adapter_model.safetensors").keys()
        assert keys and all(".lora_A." in k or ".lora_B." in k for k in keys)


def test_only_targeted_weights_change_and_the_merge_matches_peft(lora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, result = lora_run
    base, merged = _tensors(tiny_model_dir), _tensors(result.final_model)
    assert base.keys() == merged.keys()
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed
    assert all(("language_model.layers" in k and any(m in k for m in ("qkv_w", "attn.out", "ffn.up", "ffn.down")))
               or "vl_connector" in k for k in changed), sorted(changed)[:5]
    assert not any(k.endswith(("_b", "lnorm.weight", "embedding")) for k in changed)

    ids = torch.tensor([[1021, 40, 41, 300, 301, 302, 77]])
    full = AutoModelForCausalLM.from_pretrained(str(result.final_model))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)),
                                     str(result.output_dir / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(full(ids).logits, peft(ids).logits, rtol=1e-4, atol=1e-4)
    model, processor = jvlm.load(result.final_model)  # an ordinary folder for every entry point
    assert processor.token_ids.im_patch is not None


def test_lora_run_resumes_from_its_adapter(lora_run, tmp_path):
    folder, result = lora_run
    cfg = load_config(folder / "train.yaml", {"optim.steps": 6})
    again = train(cfg, resume=True)
    assert again.steps == 6
    assert (again.output_dir / "checkpoints" / "step-00000006" / "adapter").is_dir()


def test_lora_section_is_checked(tmp_path, tiny_model_dir):
    for bad in ({"targets": ["vision"]}, {"r": 0}, {"dropout": 1.5}, {"rank": 4}):
        cfg = write_config(tmp_path, tiny_model_dir, lora=bad)
        with pytest.raises(TrainConfigError):
            load_config(cfg)
