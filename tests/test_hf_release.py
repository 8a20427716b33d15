"""A release-style folder through Transformers: the seed snippet in a fresh interpreter, the
auto classes with either import order and with or without trust_remote_code, hub ids from
a local HF_HOME cache, and the pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import jvlm
from release_folder import REMOTE_FILES, hf_cache_snapshot, write_release_folder


# the auto classes registered (and mlx-vlm's AutoProcessor patch undone) for this module
pytestmark = pytest.mark.usefixtures("transformers_registered")


REPO_ID = "jinaai/jina-vlm"

# The model card's snippet, verbatim but for MODEL/IMAGE and with trust_remote_code=True;
# the footer saves what it computed.
SEED_SNIPPET = """
import jvlm  # registers model_type "jvlm" with the Transformers auto classes
import torch
from transformers import AutoModelForCausalLM, AutoProcessor

model = AutoModelForCausalLM.from_pretrained(MODEL, torch_dtype=torch.bfloat16, device_map="auto", trust_remote_code=True)
processor = AutoProcessor.from_pretrained(MODEL, trust_remote_code=True)
messages = [{"role": "user", "content": [{"type": "image", "image": IMAGE}, {"type": "text", "text": "Describe this image."}]}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt").to(model.device)
generated_ids = model.generate(**inputs, max_new_tokens=256, do_sample=False)
print(processor.decode(generated_ids[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True))
"""
FOOTER = """
torch.save({"inputs": dict(inputs), "generated_ids": generated_ids, "model": type(model).__name__,
            "processor": type(processor).__name__}, OUT)
"""


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory):
    return write_release_folder(tmp_path_factory.mktemp("release") / "jina-vlm")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray((np.random.RandomState(0).rand(300, 420, 3) * 255).astype("uint8")).save(path)
    return path


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, release_dir):
    home = tmp_path_factory.mktemp("hf-home")
    hf_cache_snapshot(home, REPO_ID, release_dir)
    return home


def _run(code: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(Path(jvlm.__file__).parents[1]), full_env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=full_env)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def _run_seed(model: str, image: Path, out: Path, env=None, transformers_first: bool = False):
    head = "import transformers\n" if transformers_first else ""
    code = head + f"MODEL = {model!r}\nIMAGE = {str(image)!r}\nOUT = {str(out)!r}\n" + SEED_SNIPPET + FOOTER
    _run(code, env)
    return torch.load(out, weights_only=False)


def _reference(folder, image: Path, out: Path):
    """What jvlm.load on the folder computes for the same conversation, in a fresh interpreter
    too (so both run with the same number of threads)."""
    code = textwrap.dedent(f"""
        import jvlm, torch
        model, processor = jvlm.load({str(folder)!r}, dtype="bf16")
        messages = [{{"role": "user", "content": [{{"type": "image", "image": {str(image)!r}}},
                                                 {{"type": "text", "text": "Describe this image."}}]}}]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                               return_dict=True, return_tensors="pt")
        generated = jvlm.generate(model, **inputs, max_new_tokens=256, do_sample=False)
        torch.save({{"inputs": dict(inputs), "generated_ids": generated}}, {str(out)!r})
    """)
    _run(code)
    ref = torch.load(out, weights_only=False)
    return ref["inputs"], ref["generated_ids"]


def _assert_same(got, inputs, generated):
    assert got["model"] == "JinaVLMForConditionalGeneration" and got["processor"] == "JinaVLMProcessor"
    for key in ("input_ids", "attention_mask", "images", "image_masks", "image_input_idx"):
        assert torch.equal(got["inputs"][key], inputs[key]), key
    assert got["generated_ids"].shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(got["generated_ids"], generated)


@pytest.fixture(scope="module")
def reference(release_dir, photo, tmp_path_factory):
    return _reference(release_dir, photo, tmp_path_factory.mktemp("ref") / "ref.pt")


def test_seed_snippet_on_a_release_folder_matches_jvlm_load(release_dir, photo, reference, tmp_path):
    got = _run_seed(str(release_dir), photo, tmp_path / "out.pt")
    inputs, generated = reference
    # The prompt really carries the image: BOS, an image block, pixels.
    ids = got["inputs"]["input_ids"][0].tolist()
    assert ids[0] == json.loads((release_dir / "generation_config.json").read_text())["bos_token_id"]
    assert got["inputs"]["images"].shape[1] >= 2  # thumbnail + at least one tile
    _assert_same(got, inputs, generated)


def test_seed_snippet_with_a_hub_id_from_the_hf_home_cache(hf_home, photo, reference, tmp_path):
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    got = _run_seed(REPO_ID, photo, tmp_path / "out.pt", env=env, transformers_first=True)
    _assert_same(got, *reference)


def test_auto_classes_load_with_either_import_order_and_trust_flag(release_dir):
    """Remote code never runs (the placeholders raise), and nothing falls back to a bare tokenizer."""
    check = textwrap.dedent(f"""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor
        from transformers.models.auto.image_processing_auto import AutoImageProcessor
        from transformers import AutoModelForImageTextToText, ProcessorMixin, PreTrainedModel
        for trust in (None, True, False):
            kw = {{}} if trust is None else {{"trust_remote_code": trust}}
            cfg = AutoConfig.from_pretrained({str(release_dir)!r}, **kw)
            assert type(cfg).__module__.startswith("jvlm."), type(cfg)
            proc = AutoProcessor.from_pretrained({str(release_dir)!r}, **kw)
            assert type(proc).__name__ == "JinaVLMProcessor" and isinstance(proc, ProcessorMixin), type(proc)
            ip = AutoImageProcessor.from_pretrained({str(release_dir)!r}, **kw)
            assert type(ip).__name__ == "JinaVLMImageProcessor", type(ip)
            for auto in (AutoModelForCausalLM, AutoModelForImageTextToText):
                model = auto.from_pretrained({str(release_dir)!r}, **kw)
                assert isinstance(model, PreTrainedModel) and model.can_generate()
        print("OK")
    """)
    for first in ("import jvlm\n", "import transformers\nimport jvlm\n"):
        assert "OK" in _run(first + check).stdout
    # jvlm imported from inside its own package first (the tokenizer module imports Transformers)
    assert "OK" in _run("import jvlm.processing.processor\n" + check).stdout
    for first in ("import jvlm.hf\n", "import jvlm.integrations.transformers\n"):
        out = _run(first + "from transformers import CONFIG_MAPPING\nassert 'jvlm' in CONFIG_MAPPING\nprint('REG')").stdout
        assert "REG" in out, first
    for name in REMOTE_FILES:
        assert (release_dir / name).read_text().startswith("raise RuntimeError")


def test_hub_id_missing_offline_gives_one_clear_line(tmp_path):
    """jvlm's own entry points say what to do in one line; the auto classes fail in
    Transformers' config lookup first, with Transformers' own offline message."""
    code = textwrap.dedent("""
        import jvlm
        from jvlm.errors import ModelFolderError
        try:
            jvlm.load("someone/not-cached")
        except ModelFolderError as e:
            print("ERR:", e)
        from transformers import AutoModelForCausalLM
        try:
            AutoModelForCausalLM.from_pretrained("someone/not-cached")
        except OSError:
            print("AUTO: OSError")
    """)
    out = _run(code, {"HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}).stdout
    line = out.split("ERR:", 1)[1].split("AUTO:")[0].strip()
    assert "\n" not in line and "someone/not-cached" in line and "HF_HUB_OFFLINE" in line and "hf download" in line
    assert "AUTO: OSError" in out


def test_jvlm_load_resolves_bundled_names_and_hub_ids(hf_home, release_dir, monkeypatch):
    model, processor = jvlm.load("jvlm-demo")
    assert model.cfg.text.n_layers >= 1 and processor.token_ids.im_patch is not None
    code = f"import jvlm\nm, p = jvlm.load({REPO_ID!r})\nprint('FOLDER', m.cfg.text.n_layers)"
    out = _run(code, {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}).stdout
    assert f"FOLDER {jvlm.JinaVLMConfig.load(release_dir).text.n_layers}" in out


def test_image_text_to_text_pipeline_answers_an_image_question(release_dir, photo):
    from transformers import pipeline

    pipe = pipeline("image-text-to-text", model=str(release_dir))
    messages = [{"role": "user", "content": [{"type": "image", "image": str(photo)},
                                             {"type": "text", "text": "Describe this image."}]}]
    out = pipe(text=messages, max_new_tokens=5, return_full_text=False)
    model, processor = jvlm.load(release_dir, dtype="checkpoint")  # as the pipeline does, whatever the CPU
    inputs = processor.apply_chat_template(messages, tokenize=True, return_dict=True, return_tensors="pt")
    expected = jvlm.generate(model, **inputs, max_new_tokens=5, do_sample=False)
    answer = processor.decode(expected[0, inputs["input_ids"].shape[1]:])
    assert out[0]["generated_text"] == answer and answer


def test_text_generation_pipeline(release_dir):
    from transformers import pipeline

    pipe = pipeline("text-generation", model=str(release_dir))
    out = pipe("The colour of the sky is", max_new_tokens=4, do_sample=False, return_full_text=False)
    model, processor = jvlm.load(release_dir, dtype="checkpoint")
    ids = processor.tokenizer("The colour of the sky is", return_tensors="pt")["input_ids"]
    expected = jvlm.generate(model, ids, max_new_tokens=4, do_sample=False)
    assert out[0]["generated_text"] == processor.decode(expected[0, ids.shape[1]:])
