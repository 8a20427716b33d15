"""The published Transformers snippet, unchanged but for the model path, and jvlm.load."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import torch
from PIL import Image

import jvlm

SEED_SNIPPET = """
import jvlm  # registers model_type "jvlm" with the Transformers auto classes
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.bfloat16, device_map="auto", trust_remote_code=True)
processor = AutoProcessor.from_pretrained(MODEL, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "Describe this image."}]}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt").to(model.device)
generated_ids = model.generate(**inputs, max_new_tokens=256, do_sample=False)
output = processor.decode(generated_ids[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
print("OUTPUT:", repr(output))
print("NEW:", generated_ids.shape[1] - inputs["input_ids"].shape[1])
"""


def test_seed_snippet_runs_end_to_end_in_a_fresh_interpreter(tiny_model_dir, tmp_path):
    img = tmp_path / "photo.png"
    Image.fromarray((np.random.RandomState(0).rand(300, 420, 3) * 255).astype("uint8")).save(img)
    code = f"MODEL = {str(tiny_model_dir)!r}\nIMAGE = {str(img)!r}\n" + textwrap.dedent(SEED_SNIPPET)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OUTPUT:" in res.stdout
    new = int(res.stdout.split("NEW:")[1].strip())
    assert 1 <= new <= 256


def test_generate_matches_a_plain_greedy_loop_without_cache(tiny):
    model, processor = tiny
    img = Image.fromarray((np.random.RandomState(1).rand(64, 64, 3) * 255).astype("uint8"))
    msgs = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "text", "text": "What?"}]}]
    inputs = processor.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt")
    out = jvlm.generate(model, **inputs, max_new_tokens=6, do_sample=False, eos_token_id=[])
    ids = inputs["input_ids"]
    with torch.no_grad():
        for _ in range(6):
            logits = model(ids, attention_mask=torch.ones_like(ids), images=inputs["images"],
                           image_masks=inputs["image_masks"], image_input_idx=inputs["image_input_idx"]).logits
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ids)


def test_jvlm_load_returns_model_and_processor_with_token_ids(tiny_model_dir):
    model, processor = jvlm.load(tiny_model_dir)
    assert model.model.im_patch_token_id == processor.token_ids.im_patch
    assert set(model.stop_token_ids) == set(processor.token_ids.eos)
    assert not model.training


def test_the_command_line_skips_the_auto_class_registration_until_asked():
    """The jvlm command imports Transformers for its tokenizer class only; registering the
    auto classes on that import would add Transformers' processing stack (about 2 s) to every
    command's start. Asked explicitly (as the eval's Transformers backend does), it registers."""
    code = textwrap.dedent("""
        import sys
        import jvlm
        jvlm._defer_transformers_registration()
        import jvlm.processing.processor  # imports transformers for PreTrainedTokenizerFast
        from transformers import CONFIG_MAPPING
        assert "transformers" in sys.modules
        assert "jvlm" not in CONFIG_MAPPING, "registered on import despite the deferral"
        assert "transformers.processing_utils" not in sys.modules
        jvlm._register_with_transformers()
        assert "jvlm" in CONFIG_MAPPING
        print("OK")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]
