"""The Transformers processor and image processor give what the release gives, for every
image input the release accepts."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from jvlm.processing.image import load_image, preprocess_image


# the auto classes registered (and mlx-vlm's AutoProcessor patch undone) for this module
pytestmark = pytest.mark.usefixtures("transformers_registered")


@pytest.fixture(scope="module")
def processors(tiny_model_dir):
    import jvlm  # noqa: F401 - registers the auto classes
    from transformers import AutoProcessor
    from transformers.models.auto.image_processing_auto import AutoImageProcessor  # no torchvision needed

    return AutoProcessor.from_pretrained(str(tiny_model_dir)), AutoImageProcessor.from_pretrained(str(tiny_model_dir))


def _rgba(h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    a[:5, :, 3] = 0  # fully transparent rows keep their colour under convert("RGB")
    return a


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _modes():
    rgba = Image.fromarray(_rgba(), "RGBA")
    pal = Image.fromarray(_rgba()[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal_t = pal.copy()
    pal_t.info["transparency"] = 3
    deep = Image.fromarray((np.random.default_rng(1).integers(0, 65536, (30, 40))).astype(np.uint16))
    return {
        "RGBA": rgba, "LA": rgba.convert("LA"), "P": pal, "P+transparency": pal_t,
        "CMYK": rgba.convert("RGB").convert("CMYK"), "I;16": deep, "L": rgba.convert("L"), "1": rgba.convert("1"),
        "RGB": rgba.convert("RGB"),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_every_pil_mode_becomes_rgb_as_pil_convert_does(mode):
    im = _modes()[mode]
    expected = np.array(im.convert("RGB"))
    np.testing.assert_array_equal(load_image(im), expected)
    # the same image as a PNG file's bytes (PNG keeps RGBA/LA/P/I;16/L/1; CMYK is not a PNG mode)
    if mode != "CMYK":
        np.testing.assert_array_equal(load_image(_png(im)), np.array(Image.open(io.BytesIO(_png(im))).convert("RGB")))


def test_uint8_smart_resize_is_float_interpolation_rounded(processors):
    _, ip = processors
    img = np.random.default_rng(3).integers(0, 256, (611, 457, 3), dtype=np.uint8)
    cfg = ip.image_config
    p = ip.process(img)
    rh, rw = p.layout.resized_hw
    assert (rh, rw) != img.shape[:2]
    src = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    ref_u8 = F.interpolate(src, size=(rh, rw), mode="bilinear", align_corners=False).round().clamp(0, 255)
    native = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], size=(rh, rw), mode="bilinear",
                           align_corners=False)
    assert not torch.equal(native.float(), ref_u8)  # the two really differ on this image
    # feeding the rounded resize in directly (already at the target size) gives identical crops
    direct = preprocess_image(ref_u8[0].permute(1, 2, 0).to(torch.uint8).numpy(), cfg)
    np.testing.assert_array_equal(p.crops, direct.crops)


def test_inputs_of_every_kind_give_the_same_pixels(processors, tmp_path):
    proc, ip = processors
    rgb = np.random.default_rng(4).integers(0, 256, (90, 140, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    ref = ip.preprocess(rgb)["images"]
    for src in (Image.fromarray(rgb), str(path), path, path.read_bytes(), rgb.astype(np.float32) / 255,
                np.concatenate([rgb, np.zeros_like(rgb[..., :1])], axis=2)):
        assert torch.equal(ip.preprocess(src)["images"], ref), type(src)
    batch = proc(text="<|image|>What?", images=Image.fromarray(rgb))
    assert torch.equal(batch["images"][0], ref)


def test_exif_is_applied_to_files_and_chat_images_not_to_processor_pil_inputs(processors):
    proc, _ = processors
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, :40] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    pil = Image.open(io.BytesIO(buf.getvalue()))
    assert load_image(buf.getvalue()).shape[:2] == (80, 40)  # bytes (files, URLs): rotated
    assert load_image(pil).shape[:2] == (40, 80)  # an in-memory PIL image: as stored
    direct = proc(text="<|image|>What?", images=pil)
    msgs = [{"role": "user", "content": [{"type": "image", "image": pil}, {"type": "text", "text": "What?"}]}]
    chat = proc.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt")
    up = proc.image_processor.process(np.array(pil.transpose(Image.Transpose.ROTATE_270)))
    side = proc.image_processor.process(np.array(pil))
    assert torch.equal(direct["images"][0, :side.crops.shape[0]], torch.from_numpy(side.crops))
    assert torch.equal(chat["images"][0, :up.crops.shape[0]], torch.from_numpy(up.crops))


def test_a_prompt_ending_in_eos_loses_it(processors):
    proc, _ = processors
    eos = proc.tokenizer.eos_token
    with_eos = proc(text="hello world" + eos)["input_ids"][0].tolist()
    without = proc(text="hello world")["input_ids"][0].tolist()
    assert with_eos == without
    inner = proc(text="hello" + eos + " world")["input_ids"][0].tolist()
    assert proc.tokenizer.eos_token_id in inner[1:]  # only a trailing one is dropped


def test_compositing_on_white_is_opt_in(processors):
    import dataclasses

    _, ip = processors
    rgba = _rgba()
    cfg = dataclasses.replace(ip.image_config, composite_alpha_on_white=True)
    white = preprocess_image(rgba, cfg).crops
    dropped = preprocess_image(rgba, ip.image_config).crops
    assert not np.array_equal(white, dropped)
    np.testing.assert_array_equal(dropped, preprocess_image(rgba[..., :3].copy(), ip.image_config).crops)


def test_a_url_gives_the_same_pixels_as_the_file(processors, tmp_path):
    import functools
    import http.server
    import threading

    proc, ip = processors
    stored = np.random.default_rng(6).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: files and URLs get the EXIF orientation applied
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, "JPEG", exif=exif.tobytes(), quality=95)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/photo.jpg"
        msgs = [{"role": "user", "content": [{"type": "image", "url": url}, {"type": "text", "text": "What?"}]}]
        via_url = proc.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt")
    finally:
        server.shutdown()
    via_file = ip.preprocess(str(path))["images"]
    assert torch.equal(via_url["images"][0], via_file)
    assert ip.process(str(path)).layout.resized_hw[0] > ip.process(str(path)).layout.resized_hw[1]  # upright


# ---------------------------------------------------------------- options: applied or refused
def test_processor_padding_options_shape_the_batch(processors):
    proc, _ = processors
    texts = ["hi", "a much longer prompt than the first"]
    longest = proc(text=texts)["input_ids"]
    assert proc(text=texts, padding="longest")["input_ids"].tolist() == longest.tolist()
    padded = proc(text=texts, padding="max_length", max_length=longest.shape[1] + 5)
    assert padded["input_ids"].shape == (2, longest.shape[1] + 5)
    # left padding: the prompts end where they ended, the mask covers only them
    assert padded["input_ids"][:, 5:].tolist() == longest.tolist()
    assert padded["attention_mask"].sum(1).tolist() == proc(text=texts)["attention_mask"].sum(1).tolist()
    same = proc(text=["hi", "hi"], padding=False)["input_ids"]
    assert same.shape[0] == 2 and same[0].tolist() == same[1].tolist()


@pytest.mark.parametrize("options, error", [
    ({"padding": False}, "one length"),  # two prompts of different lengths cannot be stacked unpadded
    ({"truncation": True}, "truncation"),
    ({"max_length": 4}, "padding='max_length'"),
    ({"padding": "max_length", "max_length": 2}, "never truncates"),
    ({"padding": "maximal"}, "padding="),
    ({"return_tensors": "tf"}, "return_tensors"),
    ({"pad_to_multiple_of": 8}, "pad_to_multiple_of"),
])
def test_processor_options_it_cannot_apply_raise(processors, options, error):
    proc, _ = processors
    with pytest.raises((TypeError, ValueError), match=error):
        proc(text=["hi", "a much longer prompt than the first"], **options)


def test_chat_template_passes_processor_kwargs_to_the_processor(processors):
    proc, _ = processors
    chat = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    plain = proc.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    padded = proc.apply_chat_template(chat, tokenize=True, return_dict=True,
                                      processor_kwargs={"padding": "max_length", "max_length": plain.shape[1] + 3})
    assert padded["input_ids"].shape[1] == plain.shape[1] + 3
    with pytest.raises(TypeError, match="unknown_option"):
        proc.apply_chat_template(chat, tokenize=True, processor_kwargs={"unknown_option": 1})
    with pytest.raises(ValueError, match="tokenize=True"):
        proc.apply_chat_template(chat, tokenize=False, processor_kwargs={"max_crops": 2})


def test_image_processor_options_it_cannot_apply_raise(processors):
    _, image_processor = processors
    im = Image.new("RGB", (40, 30))
    assert image_processor(im, max_crops=1)["images"].shape[0] >= 1
    with pytest.raises(TypeError, match="do_normalize"):
        image_processor(im, do_normalize=False)
    with pytest.raises(ValueError, match="return_tensors"):
        image_processor(im, return_tensors="jax")


def test_loading_options_that_would_do_nothing_raise(tiny_model_dir):
    from transformers import AutoProcessor
    from transformers.models.auto.image_processing_auto import AutoImageProcessor

    from jvlm.processing.processor import JinaVLMProcessor

    with pytest.raises(TypeError, match="use_fast"):
        AutoProcessor.from_pretrained(str(tiny_model_dir), use_fast=False)
    with pytest.raises(TypeError, match="do_resize"):
        AutoImageProcessor.from_pretrained(str(tiny_model_dir), do_resize=False)
    with pytest.raises(TypeError, match="padding_side"):
        JinaVLMProcessor.from_pretrained(tiny_model_dir, padding_side="right")  # the core class: a folder only
    # the hub's options and the auto classes' plumbing are taken
    AutoProcessor.from_pretrained(str(tiny_model_dir), revision="main", local_files_only=True, trust_remote_code=True)
