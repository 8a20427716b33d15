"""Image preprocessing: geometry of spec section 4.2, token bookkeeping, pixels, and bad inputs."""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from jvlm.config import ImageProcessingConfig
from jvlm.errors import ImageTooLargeError, InvalidImageError
from jvlm.processing.image import (
    DROPPED_IDX,
    image_block_ids,
    image_input_idx,
    image_layout,
    load_image,
    preprocess_image,
    select_tiling,
    smart_resize_hw,
)

CFG = ImageProcessingConfig()
IDS = {"im_start": 101, "im_end": 102, "im_patch": 103, "im_col": 104}


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _gradient(h: int, w: int) -> np.ndarray:
    """An image whose every pixel value says where it is (up to mod 256)."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y % 256, x % 256, (7 * y + 13 * x) % 256], axis=-1).astype(np.uint8)


# ------------------------------------------------------------------------- geometry (4.2)
# input HxW, smart-resized, tiling, stretched, pooled grid, feature tokens, block tokens, crops
TABLE = [
    ((64, 64), (70, 70), (1, 1), (378, 378), (14, 14), 392, 424, 2),
    ((480, 640), (476, 644), (2, 2), (644, 644), (24, 24), 772, 814, 5),
    ((1000, 1000), (994, 994), (3, 3), (910, 910), (34, 34), 1352, 1404, 10),
    ((200, 1200), (196, 1204), (1, 5), (378, 1442), (14, 54), 952, 984, 6),
    ((2046, 2728), (854, 1148), (3, 4), (910, 1176), (34, 44), 1692, 1744, 13),
    ((3000, 1000), (1722, 574), (6, 2), (1708, 644), (64, 24), 1732, 1814, 13),
    # short side below 112 px after resize: every scale is negative -> a single tile
    ((100, 1200), (98, 1204), (1, 1), (378, 378), (14, 14), 392, 424, 2),
    # short side exactly 112 px: infinite scale on that axis -> 1x5
    ((112, 1204), (112, 1204), (1, 5), (378, 1442), (14, 54), 952, 984, 6),
]


@pytest.mark.parametrize("inp, resized, tiling, stretched, pooled, feats, block, crops", TABLE)
def test_worked_table(inp, resized, tiling, stretched, pooled, feats, block, crops):
    lay = image_layout(*inp, CFG)
    assert lay.input_hw == inp
    assert lay.resized_hw == resized
    assert lay.tiling == tiling
    assert lay.stretched_hw == stretched
    assert lay.pooled_hw == pooled
    assert (lay.n_feature_tokens, lay.n_block_tokens, lay.n_crops) == (feats, block, crops)
    assert select_tiling(*resized, CFG, CFG.max_crops) == tiling


def test_smart_resize_rounds_half_to_even():
    # 35/14 = 2.5 -> 2 (Python round), not 3; a half-up rule would give 42 and another tiling
    assert smart_resize_hw(35, 2000, CFG) == (28, 2002)
    assert smart_resize_hw(21, 2000, CFG) == (28, 2002)  # 1.5 -> 2


def test_smart_resize_respects_pixel_budget():
    for h, w in [(5000, 5000), (10, 10), (3, 600), (4000, 30)]:
        rh, rw = smart_resize_hw(h, w, CFG)
        assert rh % 14 == 0 and rw % 14 == 0
        assert CFG.min_pixels <= rh * rw <= CFG.max_pixels


def test_extreme_aspect_ratio_is_refused():
    with pytest.raises(InvalidImageError, match="aspect ratio"):
        image_layout(10, 2500, CFG)


def test_max_crops_override_bounds_the_grid():
    lay = image_layout(2046, 2728, CFG, max_crops=6)
    assert lay.tiling == (2, 3) and lay.n_crops == 7
    assert image_layout(2046, 2728, CFG, max_crops=1).tiling == (1, 1)


# ------------------------------------------------------------------ block and input idx
SIZES = [(64, 64), (480, 640), (2046, 2728), (3000, 1000), (200, 1200), (900, 300), (700, 700)]


def _check_bijection(lay, cfg):
    block = image_block_ids(lay, **IDS)
    idx = image_input_idx(lay, cfg)
    th, tw = lay.crop_pooled_hw
    assert block.shape == (lay.n_block_tokens,) and block.dtype == np.int64
    assert idx.shape == (lay.n_crops, th * tw) and idx.dtype == np.int64
    kept = idx[idx >= 0]
    # every pooled feature that is kept lands on a distinct <im_patch>, and every <im_patch> gets one
    assert len(kept) == len(set(kept.tolist())) == lay.n_feature_tokens
    assert set(kept.tolist()) == set(np.nonzero(block == IDS["im_patch"])[0].tolist())
    assert set(idx[idx < 0].tolist()) <= {DROPPED_IDX}


@pytest.mark.parametrize("hw", SIZES)
def test_input_idx_is_a_bijection_onto_patch_tokens(hw):
    _check_bijection(image_layout(*hw, CFG), CFG)


def _official_style_idx(lay, cfg):
    """The official bookkeeping: number kept cells tile by tile, transpose to raster order,
    invert the permutation, gather patch-token positions. Independent of the raster shortcut."""
    rows, cols = lay.tiling
    th, tw = lay.crop_pooled_hw
    left, right = cfg.overlap_margins
    win = cfg.grid - left - right
    grids, on = [], 0
    for i in range(rows):
        y0 = 0 if i == 0 else left // cfg.pooling_h
        ch = win + (left if i == 0 else 0) + (right if i == rows - 1 else 0)
        for j in range(cols):
            x0 = 0 if j == 0 else left // cfg.pooling_w
            cw = win + (left if j == 0 else 0) + (right if j == cols - 1 else 0)
            ph, pw = -(-ch // cfg.pooling_h), -(-cw // cfg.pooling_w)
            g = np.full((th, tw), -1)
            g[y0:y0 + ph, x0:x0 + pw] = np.arange(on, on + ph * pw).reshape(ph, pw)
            grids.append(g)
            on += ph * pw
    stack = np.stack(grids)
    order = stack.reshape(-1).copy()
    raster = stack.reshape(rows, cols, th, tw).transpose(0, 2, 1, 3).reshape(-1)
    order[order >= 0] = raster[raster >= 0]
    order = np.concatenate([np.arange(th * tw), np.where(order >= 0, order + th * tw, -1)])
    pos = np.nonzero(image_block_ids(lay, **IDS) == IDS["im_patch"])[0]
    valid = order >= 0
    inv = np.zeros(valid.sum(), dtype=np.int64)
    inv[order[valid]] = np.arange(valid.sum())
    ex = np.full(order.shape, -1)
    ex[valid] = inv
    return np.where(ex >= 0, pos[np.maximum(ex, 0)], DROPPED_IDX).reshape(-1, th * tw)


@pytest.mark.parametrize("hw", SIZES)
def test_input_idx_matches_official_bookkeeping(hw):
    lay = image_layout(*hw, CFG)
    np.testing.assert_array_equal(image_input_idx(lay, CFG), _official_style_idx(lay, CFG))


def test_block_layout_and_overlap_sharing():
    lay = image_layout(2046, 2728, CFG)
    block = image_block_ids(lay, **IDS)
    # thumbnail block: 14 rows of 14 patches + col, framed; then the 34x44 tile grid
    assert block[0] == IDS["im_start"] and block[211] == IDS["im_end"] and block[212] == IDS["im_start"]
    assert block[-1] == IDS["im_end"]
    assert (block[1:211].reshape(14, 15)[:, -1] == IDS["im_col"]).all()
    assert (block[213:-1].reshape(34, 45)[:, -1] == IDS["im_col"]).all()
    idx = image_input_idx(lay, CFG)
    np.testing.assert_array_equal(idx[0], (1 + np.arange(14)[:, None] * 15 + np.arange(14)).ravel())
    # first tile keeps pooled rows/cols 0-11, a middle tile 2-11, the last 2-13 (spec 3.3)
    first, middle = idx[1].reshape(14, 14), idx[2].reshape(14, 14)
    assert (first[:12, :12] >= 0).all() and (first[12:] == DROPPED_IDX).all() and (first[:, 12:] < 0).all()
    assert (middle[:12, 2:12] >= 0).all() and (middle[:, :2] < 0).all() and (middle[:, 12:] < 0).all()
    last = idx[-1].reshape(14, 14)
    assert (last[2:, 2:] >= 0).all() and (last[:2] < 0).all()
    # global raster: tile (0,1)'s first kept cell sits right after tile (0,0)'s 12 columns
    assert middle[0, 2] == first[0, 11] + 1


@pytest.mark.parametrize("crop, margins", [(224, (4, 4)), (210, (2, 2)), (112, (2, 2))])
def test_smaller_crop_configs(crop, margins):
    cfg = dataclasses.replace(CFG, crop_size=crop, overlap_margins=margins, max_crops=6)
    for hw in [(50, 60), (300, 500), (1000, 250)]:
        _check_bijection(image_layout(*hw, cfg), cfg)
    p = preprocess_image(_gradient(300, 500), cfg)
    g = crop // 14
    assert p.crops.shape == (p.layout.n_crops, g * g, 588)
    assert p.image_input_idx.shape == (p.layout.n_crops, (-(-g // 2)) ** 2)


# ---------------------------------------------------------------------------- pixels
def test_mask_quirk_marks_last_tile():
    p = preprocess_image(_gradient(480, 640), CFG)
    assert p.masks.shape == (5, 729) and p.masks.dtype == np.float32
    assert (p.masks[:-1] == 1).all() and (p.masks[-1] == -1).all()
    p1 = preprocess_image(_gradient(64, 64), CFG)  # one tile: the tile itself is the last crop
    assert (p1.masks[0] == 1).all() and (p1.masks[1] == -1).all()
    off = preprocess_image(_gradient(64, 64), dataclasses.replace(CFG, last_tile_mask_quirk=False))
    assert (off.masks == 1).all()


def test_patch_vector_order_is_dy_dx_channel():
    img = _gradient(378, 378)  # no resize, 1x1 tiling, no stretch: crops are the image itself
    p = preprocess_image(img, CFG)
    assert p.layout.tiling == (1, 1) and p.crops.shape == (2, 729, 588) and p.crops.dtype == np.float32
    for gy, gx in [(0, 0), (1, 2), (26, 26)]:
        vec = p.crops[1, gy * 27 + gx]
        for dy in (0, 5, 13):
            for dx in (0, 9, 13):
                for c in range(3):
                    want = img[gy * 14 + dy, gx * 14 + dx, c] / 255.0 * 2 - 1
                    assert vec[(dy * 14 + dx) * 3 + c] == pytest.approx(want, abs=1e-6)
    np.testing.assert_array_equal(p.crops[0], p.crops[1])  # thumbnail of a 378x378 image is itself


def test_tiles_are_row_major_windows_with_266_stride():
    img = _gradient(644, 644)  # smart resize keeps it; 2x2 tiling at scale 1 -> stretch is identity
    p = preprocess_image(img, CFG)
    assert p.layout.tiling == (2, 2) and p.layout.stretched_hw == (644, 644)
    norm = img.astype(np.float64) / 255.0 * 2 - 1
    for r in range(2):
        for c in range(2):
            win = norm[r * 266:r * 266 + 378, c * 266:c * 266 + 378]
            want = win.reshape(27, 14, 27, 14, 3).transpose(0, 2, 1, 3, 4).reshape(729, 588)
            np.testing.assert_allclose(p.crops[1 + r * 2 + c], want, atol=1e-6)


def test_normalisation_range():
    rng = np.random.default_rng(0)
    p = preprocess_image(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8), CFG)
    assert p.crops.min() >= -1 and p.crops.max() <= 1
    # Black and white map to the ends of the range. The float resize of a constant image may
    # land one float32 step short of 1 (it depends on which vectorised kernel torch picks for
    # the thread count), so the ends are checked to within a few float32 steps.
    np.testing.assert_allclose(preprocess_image(np.zeros((64, 64, 3), np.uint8), CFG).crops, -1, atol=1e-6)
    np.testing.assert_allclose(preprocess_image(np.full((64, 64, 3), 255, np.uint8), CFG).crops, 1, atol=1e-6)
    gauss = preprocess_image(np.full((64, 64, 3), 255, np.uint8), dataclasses.replace(CFG, normalization_method="gaussian"))
    np.testing.assert_allclose(gauss.crops[0, 0, :3], (1 - np.array([0.48145466, 0.4578275, 0.40821073])) /
                               np.array([0.26862954, 0.26130258, 0.27577711]), rtol=1e-5)


def test_resampling_settings_change_pixels_not_layout():
    img = np.random.default_rng(2).integers(0, 256, (500, 700, 3), dtype=np.uint8)
    base = preprocess_image(img, CFG)
    for kw in ({"interpolation": "bicubic"}, {"antialias": True}, {"resize_in_float32": True}):
        other = preprocess_image(img, dataclasses.replace(CFG, **kw))
        assert other.layout == base.layout and other.crops.shape == base.crops.shape
        assert other.crops.min() >= -1 and other.crops.max() <= 1
        assert not np.array_equal(other.crops, base.crops), kw


def test_thumbnail_comes_from_the_smart_resized_image():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (1400, 1100, 3), dtype=np.uint8)
    p = preprocess_image(img, CFG)
    rh, rw = p.layout.resized_hw
    assert (rh, rw) != (1400, 1100)
    src = torch.from_numpy(img).permute(2, 0, 1)[None]
    # the release's uint8 smart resize: float interpolation, rounded, cast back to 8 bits
    resized_u8 = F.interpolate(src.float(), size=(rh, rw), mode="bilinear", align_corners=False).round().to(torch.uint8)
    via_resized = F.interpolate(resized_u8.float() / 255, size=(378, 378), mode="bilinear", align_corners=False)
    direct = F.interpolate(src.float() / 255, size=(378, 378), mode="bilinear", align_corners=False)

    def as_crop(t):
        return (t[0].permute(1, 2, 0).numpy() * 2 - 1).reshape(27, 14, 27, 14, 3).transpose(0, 2, 1, 3, 4).reshape(729, 588)

    np.testing.assert_allclose(p.crops[0], as_crop(via_resized), atol=1e-5)
    assert np.abs(p.crops[0] - as_crop(direct)).max() > 0.05
    # the stretch runs in float and is not re-quantised to 8 bits
    lattice = (p.crops[1:] + 1) / 2 * 255
    assert np.abs(lattice - np.round(lattice)).max() > 0.01


# ---------------------------------------------------------------------------- loading
def _png_header_only(w: int, h: int) -> bytes:
    """A PNG whose IHDR announces w x h but whose pixel data is a few junk bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)  # 1-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_huge_header_is_refused_before_decoding():
    data = _png_header_only(20000, 20000)
    with pytest.raises(ImageTooLargeError) as e:
        load_image(data)
    msg = str(e.value)
    assert "20000×20000" in msg and "400,000,000" in msg and "64,000,000" in msg and "max_input_pixels" in msg
    with pytest.raises(ImageTooLargeError):
        preprocess_image(data, CFG)
    # inside PIL's warning zone (89M-179M pixels) our cap still speaks first
    with pytest.raises(ImageTooLargeError, match="10000×10000"):
        load_image(_png_header_only(10000, 10000))
    # raising our cap above PIL's own bomb limit still gives a typed error, not a PIL one
    with pytest.raises(ImageTooLargeError, match="MAX_IMAGE_PIXELS"):
        load_image(data, max_input_pixels=10**9)


def test_pixel_cap_applies_to_arrays_and_can_be_lowered():
    with pytest.raises(ImageTooLargeError, match="100×100"):
        load_image(np.zeros((100, 100, 3), np.uint8), max_input_pixels=5000)
    assert load_image(np.zeros((100, 100, 3), np.uint8), max_input_pixels=0).shape == (100, 100, 3)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_are_invalid(fmt):
    data = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize("bad", [b"definitely not an image", b"", np.zeros((0, 10, 3), np.uint8),
                                 np.zeros((10, 10, 2), np.uint8), np.full((4, 4, 3), 7.5), 42])
def test_bad_inputs_raise_typed_errors(bad):
    with pytest.raises(InvalidImageError):
        load_image(bad)


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(InvalidImageError, match="nope.png"):
        load_image(missing)
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(str(tmp_path))


def test_path_and_bytes_inputs_decode(tmp_path):
    img = _gradient(30, 40)
    path = tmp_path / "a.png"
    Image.fromarray(img).save(path)
    np.testing.assert_array_equal(load_image(path), img)
    np.testing.assert_array_equal(load_image(str(path)), img)
    np.testing.assert_array_equal(load_image(memoryview(path.read_bytes())), img)
    np.testing.assert_array_equal(load_image(img.astype(np.float32) / 255), img)


def test_result_is_a_writable_copy():
    # the model pipeline hands it to torch, which warns on read-only arrays; callers may edit it
    arr = _gradient(8, 8)
    out = load_image(arr)
    out[0, 0] = 0
    assert arr[0, 0, 1] == 0 and arr[0, 1, 1] == 1 and out is not arr
    assert load_image(_encode(Image.fromarray(arr), "PNG")).flags.writeable


def test_exif_rotated_jpeg_comes_out_upright():
    stored = np.zeros((20, 40, 3), np.uint8)  # H=20, W=40: left half red, right half blue
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = load_image(_encode(Image.fromarray(stored), "JPEG", exif=exif.tobytes(), quality=95))
    assert out.shape == (40, 20, 3)
    assert out[5, 10, 0] > 200 and out[5, 10, 2] < 60  # top is the former left (red)
    assert out[35, 10, 2] > 200 and out[35, 10, 0] < 60  # bottom is blue


def test_alpha_is_dropped_like_pil_convert_rgb_and_compositing_is_opt_in():
    # The release converts with PIL's convert("RGB"): a transparent pixel keeps its colour.
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque
    rgba[0, 1] = (10, 20, 30, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    for src in (rgba, Image.fromarray(rgba, "RGBA"), _encode(Image.fromarray(rgba, "RGBA"), "PNG")):
        out = load_image(src)
        np.testing.assert_array_equal(out, rgba[..., :3])
        white = load_image(src, composite_on_white=True)
        assert tuple(white[0, 0]) == (10, 20, 30)
        assert tuple(white[0, 1]) == (255, 255, 255)
        assert all(abs(int(v) - 127) <= 1 for v in white[1, 0])


def test_other_modes_become_rgb():
    gray = Image.fromarray(np.array([[0, 128], [255, 64]], np.uint8), "L")
    assert tuple(load_image(_encode(gray, "PNG"))[0, 1]) == (128, 128, 128)
    assert load_image(_encode(gray.convert("1"), "PNG")).shape == (2, 2, 3)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    for src in (cmyk, _encode(cmyk, "JPEG")):
        px = load_image(src)[4, 4]
        assert px[0] > 200 and px[1] < 60 and px[2] < 60
    pal = Image.fromarray(_gradient(8, 8)).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert load_image(_encode(pal, "PNG")).shape == (8, 8, 3)
    pal.info["transparency"] = 0
    assert load_image(_encode(pal, "PNG", transparency=0)).shape == (8, 8, 3)
    deep = Image.fromarray(np.array([[65535, 256], [0, 32896]], np.uint16))  # 16-bit grey
    out = load_image(_encode(deep, "PNG"))
    assert [int(v) for v in out[..., 0].ravel()] == [255, 255, 0, 255]  # clipped, as PIL's convert("RGB")
