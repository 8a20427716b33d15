"""LoRA with PEFT on jvlm's Transformers class: only adapter weights train, and an adapter
saved, loaded and merged gives the logits of the merged model saved as a full folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from PIL import Image
from transformers import AutoModelForCausalLM

import jvlm


# the auto classes registered (and mlx-vlm's AutoProcessor patch undone) for this module
pytestmark = pytest.mark.usefixtures("transformers_registered")


DECODER = r"model\.language_model\.layers\.\d+\.(attn\.(qkv_w|out)|ffn\.(up|down))"
CONNECTOR = r"model\.vision_model\.vl_connector\.(pooling\.(q_w|kv_w|out)|projector\.\w+)"


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    _, processor = jvlm.load(tiny_model_dir)
    img = Image.fromarray((np.random.RandomState(2).rand(64, 96, 3) * 255).astype("uint8"))
    msgs = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "Colour?"}]}]
    inputs = processor.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt")
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -6:] = inputs["input_ids"][:, -6:] % 1000  # aligned labels, as the official processor gives
    return {**inputs, "labels": labels}


def _lora(model, target=DECODER):
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=target, lora_dropout=0.0)
    return get_peft_model(model, cfg)


def test_one_optimizer_step_changes_only_adapter_weights(tiny_model_dir, batch):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft = _lora(model, f"({DECODER})|({CONNECTOR})")
    trainable = {n for n, p in peft.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("vl_connector" in n for n in trainable) and any("language_model" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in peft.named_parameters()}
    peft.train()
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-2)
    loss = peft(**batch).loss
    loss.backward()
    opt.step()
    after = dict(peft.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)  # B starts at zero: the adapter now does something


def test_adapter_save_load_merge_equals_the_merged_full_folder(tiny_model_dir, batch, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft = _lora(model)
    with torch.no_grad():  # a non-trivial adapter without training
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn_like(p) * 0.05)
    peft.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        adapted = peft(**inputs).logits
    peft.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        plain = base(**inputs).logits
    assert not torch.allclose(plain, adapted, atol=1e-4)  # the adapter changes the answer
    loaded = PeftModel.from_pretrained(base, tmp_path / "adapter").merge_and_unload().eval()
    with torch.no_grad():
        merged_logits = loaded(**inputs).logits
    torch.testing.assert_close(merged_logits, adapted, rtol=1e-4, atol=1e-4)

    loaded.save_pretrained(tmp_path / "full")
    _, processor = jvlm.load(tiny_model_dir)
    processor.save_pretrained(tmp_path / "full")
    full = AutoModelForCausalLM.from_pretrained(str(tmp_path / "full"))
    with torch.no_grad():
        full_logits = full(**inputs).logits
    assert torch.equal(full_logits, merged_logits)
    # the full folder is an ordinary jvlm folder: the engine loads it too
    core, _ = jvlm.load(tmp_path / "full")
    with torch.no_grad():
        torch.testing.assert_close(core(**inputs).logits, full_logits, rtol=0, atol=0)
