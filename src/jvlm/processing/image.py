"""Image preprocessing of the official ``overlap-and-resize`` method, and the token cost of an image.

An image becomes ``[thumbnail, tile(0,0), tile(0,1), ...]`` crops of 378x378 pixels, each cut
into 27x27 patches of 14x14x3 values, plus the layout of its token block in the text stream:

1. ``load_image``: any user input -> HxWx3 uint8 RGB, refusing huge images before decoding.
2. ``smart_resize_hw``: aspect-preserving resize to multiples of 14 inside a pixel budget.
3. ``select_tiling``: the Molmo rule picking (rows, cols) of 266-px windows.
4. The smart-resized image is stretched (aspect ratio *not* kept) to rows*266+112 x cols*266+112
   and cut into overlapping tiles; a 378x378 thumbnail is made from the smart-resized image.
5. ``image_layout`` / ``image_block_ids`` / ``image_input_idx``: pure arithmetic saying how many
   tokens the image costs and which ``<im_patch>`` token receives each pooled feature.

``image_layout`` is the one place that says how many tokens an image costs; the processor,
the model's count check and the cost report all call it. Every setting comes from
``ImageProcessingConfig`` (released values are its defaults), so a smaller crop works too.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from jvlm.config import ImageProcessingConfig
from jvlm.errors import ImageTooLargeError, InvalidImageError, JVLMError

log = logging.getLogger(__name__)

DROPPED_IDX = -10000  # image_input_idx value of a pooled cell that feeds no token (overlap)
_CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
_CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}


# --------------------------------------------------------------------------------- loading
def load_image(src, *, max_input_pixels: int | None = None, exif_for_pil: bool = False,
               composite_on_white: bool = False) -> np.ndarray:
    """Decode any supported input to an HxWx3 uint8 RGB array, as the release does.

    ``src`` is a file path, encoded bytes, a PIL image or a numpy array (HxW, HxWx1/3/4; uint8,
    uint16, bool, or float in [0, 1]). PIL images become RGB through PIL's ``convert("RGB")``
    (alpha dropped, palettes expanded, CMYK converted, 16-bit values clipped), like the
    released processor. EXIF orientation is applied to files and encoded bytes (paths and
    URLs), and to PIL images only when ``exif_for_pil`` (the release does it for images in
    chat messages). ``composite_on_white`` (opt-in) blends transparent pixels onto white
    instead of dropping alpha. ``max_input_pixels`` (default: the released
    ``ImageProcessingConfig`` cap) is checked from the header before any pixel is decoded;
    ``0`` or less disables it.

    Every failure is an ``InvalidImageError`` (``ImageTooLargeError`` for the cap), never a
    bare PIL/numpy error.
    """
    cap = ImageProcessingConfig().max_input_pixels if max_input_pixels is None else max_input_pixels
    try:
        if isinstance(src, np.ndarray):
            return _array_to_rgb(src, cap, composite_on_white)
        if isinstance(src, Image.Image):
            _check_size(src.size, cap)
            return _pil_to_rgb(src, exif=exif_for_pil, composite=composite_on_white)
        if isinstance(src, (str, Path)):
            path = Path(src)
            if not path.is_file():
                what = "is a directory, not an image file" if path.is_dir() else "does not exist"
                raise InvalidImageError(f"image path {str(path)!r} {what}; pass the path of an image file")
            with open(path, "rb") as fh:
                return _decode(fh, cap, what=f"file {str(path)!r}", composite=composite_on_white)
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            if not data:
                raise InvalidImageError("image bytes are empty; expected an encoded image (PNG, JPEG, WebP, ...)")
            return _decode(io.BytesIO(data), cap, what=f"{len(data):,} bytes", composite=composite_on_white)
    except JVLMError:
        raise
    except Exception as e:  # never let a decoder or numpy error escape untyped
        raise InvalidImageError(f"could not read the image: {type(e).__name__}: {e}") from e
    raise InvalidImageError(
        f"unsupported image input of type {type(src).__name__}; expected a path, bytes, "
        "a PIL image or a numpy array"
    )


def _check_size(size_wh: tuple[int, int], cap: int) -> None:
    w, h = size_wh
    if w <= 0 or h <= 0:
        raise InvalidImageError(f"image has zero size ({w}×{h}); expected at least 1×1 pixels")
    if cap > 0 and w * h > cap:
        raise ImageTooLargeError(
            f"image is {w}×{h} = {w * h:,} pixels, above the cap of {cap:,} pixels; downscale it, "
            "or raise ImageProcessingConfig.max_input_pixels to accept it"
        )


def _decode(fh, cap: int, what: str, composite: bool = False) -> np.ndarray:
    """Open lazily (header only), check the pixel cap, then decode.

    PIL runs its own decompression-bomb check inside ``Image.open``; our cap is checked first
    whenever the header can be read, so the user sees the size and the setting to change.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            im = Image.open(fh)
        with im:
            _check_size(im.size, cap)
            for w in caught:  # under our cap but above PIL's warning limit: PIL's limit decides
                if issubclass(w.category, Image.DecompressionBombWarning):
                    raise Image.DecompressionBombWarning(str(w.message))
            im.load()
            return _pil_to_rgb(im, exif=True, composite=composite)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        size = _header_size(fh)
        if size is not None:
            _check_size(size, cap)
        raise ImageTooLargeError(
            f"{what}: the decoder's safety limit refused the image ({e}); raise "
            f"PIL.Image.MAX_IMAGE_PIXELS (now {Image.MAX_IMAGE_PIXELS:,}) as well as "
            "ImageProcessingConfig.max_input_pixels to accept it"
        ) from e
    except Image.UnidentifiedImageError as e:
        raise InvalidImageError(
            f"{what}: not a recognised image format; expected an encoded image (PNG, JPEG, WebP, GIF, ...)"
        ) from e
    except JVLMError:
        raise
    except Exception as e:  # truncated data, corrupt chunks, unsupported modes
        raise InvalidImageError(
            f"{what} could not be decoded ({type(e).__name__}: {e}); the image may be truncated or corrupt"
        ) from e


def _header_size(fh) -> tuple[int, int] | None:
    """(W, H) announced by the header, read with PIL's format plugins minus PIL's bomb check.

    Only used when PIL refused the image, to tell the user its size against our own cap.
    """
    try:
        fh.seek(0)
        prefix = fh.read(16)
        Image.init()
        plugins = [Image.OPEN[fmt] for fmt in Image.ID]
    except (OSError, ValueError, KeyError):
        return None
    for factory, accept in plugins:
        try:
            ok = accept(prefix) if accept else True
            if not ok or isinstance(ok, str):  # a str is the plugin's reason to refuse
                continue
            fh.seek(0)
            return tuple(factory(fh, "").size)
        except Exception as e:  # noqa: BLE001 - best effort: any plugin failure means "size unknown"
            log.debug("header size via %s failed: %s", factory, e)
    return None


def _pil_to_rgb(im: Image.Image, exif: bool, composite: bool = False) -> np.ndarray:
    if exif:
        im = ImageOps.exif_transpose(im)
    if composite and (im.mode in _ALPHA_MODES or "transparency" in im.info):
        return _composite_on_white(np.asarray(im.convert("RGBA")))
    return np.array(im.convert("RGB"))  # a writable copy, unlike np.asarray


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    rgb = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:4].astype(np.uint32)
    # rgb*a/255 + 255*(255-a)/255, rounded half up, in integers
    out = (rgb * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _array_to_rgb(a: np.ndarray, cap: int, composite: bool = False) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        h, w, c = a.shape
    elif a.ndim == 2:
        (h, w), c = a.shape, 1
        a = a[:, :, None]
    else:
        raise InvalidImageError(f"image array has shape {a.shape}; expected HxW or HxWxC with C in 1, 3, 4")
    _check_size((w, h), cap)
    if a.dtype == np.uint8:
        u8 = a
    elif a.dtype == np.bool_:
        u8 = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        u8 = np.rint(a / 257.0).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        lo, hi = float(np.min(a)), float(np.max(a))
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
            raise InvalidImageError(
                f"float image array holds values in [{lo}, {hi}]; expected [0, 1] "
                "(divide 0-255 data by 255, or pass it as uint8)"
            )
        u8 = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise InvalidImageError(f"image array has dtype {a.dtype}; expected uint8, uint16, bool or float in [0, 1]")
    if c == 1:
        return np.repeat(u8, 3, axis=2)
    if c == 4:
        return _composite_on_white(u8) if composite else np.array(u8[:, :, :3], order="C")
    return np.array(u8, order="C")  # never alias the caller's array


# -------------------------------------------------------------------------------- geometry
def smart_resize_hw(h: int, w: int, cfg: ImageProcessingConfig) -> tuple[int, int]:
    """Aspect-preserving target size: multiples of ``resize_factor``, area in [min_pixels, max_pixels].

    The Qwen-VL rule with Python's ``round`` (half to even), because the official processor
    uses it and the rounding direction at exactly half a factor changes the tiling.
    """
    if h <= 0 or w <= 0:
        raise InvalidImageError(f"image has zero size ({w}×{h}); expected at least 1×1 pixels")
    ratio = max(h, w) / min(h, w)
    if ratio > cfg.max_aspect_ratio:
        raise InvalidImageError(
            f"image is {w}×{h}, aspect ratio {ratio:.1f}, above the limit of {cfg.max_aspect_ratio:g} "
            "(ImageProcessingConfig.max_aspect_ratio); crop or pad it first"
        )
    f = cfg.resize_factor
    h_bar, w_bar = round(h / f) * f, round(w / f) * f
    if h_bar * w_bar > cfg.max_pixels:
        beta = math.sqrt(h * w / cfg.max_pixels)
        h_bar = max(f, math.floor(h / beta / f) * f)
        w_bar = max(f, math.floor(w / beta / f) * f)
    elif h_bar * w_bar < cfg.min_pixels:
        beta = math.sqrt(cfg.min_pixels / (h * w))
        h_bar = math.ceil(h * beta / f) * f
        w_bar = math.ceil(w * beta / f) * f
    # Only reachable with min_pixels <= 0: never hand a zero side to the resampler.
    return max(f, h_bar), max(f, w_bar)


def select_tiling(h: int, w: int, cfg: ImageProcessingConfig, max_crops: int) -> tuple[int, int]:
    """(rows, cols) of tile windows for a smart-resized image of h x w pixels (the Molmo rule).

    Candidates are all grids with rows*cols <= max_crops, sorted by (rows*cols, rows). Each
    needs the scale min(rows*266/(h-112), cols*266/(w-112)). If every candidate must shrink
    the image, the largest scale wins; otherwise the smallest scale >= 1 (least upscaling).
    Ties go to the first in sort order. The arithmetic is float32 as in the official code, and
    the zero/negative denominators are kept on purpose: a short side of exactly 112 px gives
    an infinite scale, one below 112 px a negative scale that makes the image fall back to 1x1.
    """
    if max_crops < 1:
        raise ValueError(f"max_crops must be at least 1, got {max_crops}")
    cands = sorted(
        ((i, j) for i in range(1, max_crops + 1) for j in range(1, max_crops + 1) if i * j <= max_crops),
        key=lambda t: (t[0] * t[1], t[0]),
    )
    grids = np.array(cands, dtype=np.float32) * np.float32(cfg.window_px)  # (n, 2) pixels covered
    usable = np.array([h - cfg.overlap_px, w - cfg.overlap_px], dtype=np.float32)
    with np.errstate(divide="ignore"):
        scale = np.min(grids / usable, axis=1)  # (n,)
    if np.all(scale < 1):
        ix = int(np.argmax(scale))
    else:
        ix = int(np.argmin(np.where(scale < 1, np.float32(1e9), scale)))
    return cands[ix]


def _axis_windows(n_tiles: int, cfg: ImageProcessingConfig, pool: int) -> list[tuple[int, int]]:
    """Per tile along one axis: (first kept pooled cell, number of kept pooled cells).

    A tile keeps its window of 19 patches plus the outer margin on the image border; the
    4-patch overlap margins facing a neighbour are dropped after pooling (spec section 3.3).
    """
    left, right = cfg.overlap_margins
    tokens_side = math.ceil(cfg.grid / pool)
    out = []
    for k in range(n_tiles):
        span = cfg.window_patches + (left if k == 0 else 0) + (right if k == n_tiles - 1 else 0)
        start = 0 if k == 0 else left // pool
        kept = math.ceil(span / pool)
        if start + kept > tokens_side:
            raise ValueError(
                f"overlap margins {cfg.overlap_margins} do not fit a {cfg.grid}-patch crop pooled by {pool}"
            )
        out.append((start, kept))
    return out


@dataclass(frozen=True)
class ImageLayout:
    """Geometry and token cost of one image; all sizes are (height, width)."""

    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]  # after smart resize
    tiling: tuple[int, int]  # (rows, cols) of tiles
    stretched_hw: tuple[int, int]  # the image the tiles are cut from
    crop_pooled_hw: tuple[int, int]  # pooled grid of one crop (14, 14); also the thumbnail's grid
    pooled_hw: tuple[int, int]  # (H_tok, W_tok): the global pooled grid over all tiles
    n_crops: int  # thumbnail + tiles
    n_feature_tokens: int  # <im_patch> tokens that receive a feature
    n_block_tokens: int  # length of the image block in the text stream

    @property
    def thumbnail_block_len(self) -> int:
        th, tw = self.crop_pooled_hw
        return th * (tw + 1) + 2


def _check_cfg(cfg: ImageProcessingConfig) -> None:
    if cfg.cropping_method != "overlap-and-resize":
        raise ValueError(f"cropping_method {cfg.cropping_method!r} is not supported; use 'overlap-and-resize'")
    if cfg.crop_size % cfg.patch_size or cfg.window_patches < 1:
        raise ValueError(
            f"crop_size {cfg.crop_size} must be a multiple of patch_size {cfg.patch_size} and wider "
            f"than the overlap margins {cfg.overlap_margins}"
        )


def image_layout(h: int, w: int, cfg: ImageProcessingConfig, max_crops: int | None = None) -> ImageLayout:
    """How an h x w input image is tiled and how many tokens it costs. Pure arithmetic, no pixels."""
    _check_cfg(cfg)
    max_crops = cfg.max_crops if max_crops is None else max_crops
    rh, rw = smart_resize_hw(h, w, cfg)
    rows, cols = select_tiling(rh, rw, cfg, max_crops)
    stretched = (rows * cfg.window_px + cfg.overlap_px, cols * cfg.window_px + cfg.overlap_px)
    th, tw = math.ceil(cfg.grid / cfg.pooling_h), math.ceil(cfg.grid / cfg.pooling_w)
    h_tok = sum(kept for _, kept in _axis_windows(rows, cfg, cfg.pooling_h))
    w_tok = sum(kept for _, kept in _axis_windows(cols, cfg, cfg.pooling_w))
    return ImageLayout(
        input_hw=(h, w),
        resized_hw=(rh, rw),
        tiling=(rows, cols),
        stretched_hw=stretched,
        crop_pooled_hw=(th, tw),
        pooled_hw=(h_tok, w_tok),
        n_crops=1 + rows * cols,
        n_feature_tokens=th * tw + h_tok * w_tok,
        n_block_tokens=th * (tw + 1) + 2 + h_tok * (w_tok + 1) + 2,
    )


def _grid_block(rows: int, cols: int, *, im_start: int, im_end: int, im_patch: int, im_col: int) -> np.ndarray:
    body = np.full((rows, cols + 1), im_patch, dtype=np.int64)  # (rows, cols + col token)
    body[:, -1] = im_col
    return np.concatenate([[im_start], body.reshape(-1), [im_end]]).astype(np.int64)


def image_block_ids(layout: ImageLayout, *, im_start: int, im_end: int, im_patch: int, im_col: int) -> np.ndarray:
    """Token ids of the image block: the thumbnail grid, then one global grid over all tiles.

    ``<im_start> (<im_patch> x W <im_col>) x H <im_end>`` twice; int64 [n_block_tokens].
    """
    ids = {"im_start": im_start, "im_end": im_end, "im_patch": im_patch, "im_col": im_col}
    out = np.concatenate([_grid_block(*layout.crop_pooled_hw, **ids), _grid_block(*layout.pooled_hw, **ids)])
    assert out.shape[0] == layout.n_block_tokens
    return out


def image_input_idx(layout: ImageLayout, cfg: ImageProcessingConfig) -> np.ndarray:
    """Block position of the ``<im_patch>`` token each pooled cell feeds; int64 [n_crops, th*tw].

    Positions are relative to the block start. Thumbnail cell k feeds the k-th patch token of
    the thumbnail grid. A kept tile cell feeds the token at its global raster location in the
    tile grid (rows kept by the tiles above plus its row inside the kept window; columns
    likewise). Overlap cells that are dropped get ``DROPPED_IDX``. This is what the official
    patch-ordering / transpose / inverse-permutation steps compute, written directly.
    """
    th, tw = layout.crop_pooled_hw
    rows, cols = layout.tiling
    _, w_tok = layout.pooled_hw

    def global_index(n_tiles: int, pool: int, side: int) -> np.ndarray:
        # (n_tiles, side): global pooled row (or column) of each local cell, -1 where dropped
        out = np.full((n_tiles, side), -1, dtype=np.int64)
        offset = 0
        for k, (start, kept) in enumerate(_axis_windows(n_tiles, cfg, pool)):
            out[k, start:start + kept] = offset + np.arange(kept)
            offset += kept
        return out

    ys = global_index(rows, cfg.pooling_h, th)  # (rows, th)
    xs = global_index(cols, cfg.pooling_w, tw)  # (cols, tw)
    Y = ys[:, None, :, None]  # (rows, 1, th, 1)
    X = xs[None, :, None, :]  # (1, cols, 1, tw)
    base = layout.thumbnail_block_len + 1  # first token after the tile grid's <im_start>
    tiles = np.where((Y >= 0) & (X >= 0), base + Y * (w_tok + 1) + X, DROPPED_IDX)  # (rows, cols, th, tw)
    thumb = 1 + np.arange(th)[:, None] * (tw + 1) + np.arange(tw)[None, :]  # (th, tw)
    return np.concatenate([thumb.reshape(1, th * tw), tiles.reshape(rows * cols, th * tw)]).astype(np.int64)


# ---------------------------------------------------------------------------------- pixels
def _resize(chw: torch.Tensor, hw: tuple[int, int], cfg: ImageProcessingConfig) -> torch.Tensor:
    """Resample a (C, H, W) tensor like torchvision's tensor resize (align_corners=False).

    uint8 in -> uint8 out, as the release does it: interpolate in float32, round (half to
    even), clamp, cast back to 8 bits. (torch's native uint8 bilinear kernel rounds its
    fixed-point weights differently: one grey level apart on ~15% of the pixels.)
    """
    if tuple(chw.shape[-2:]) == tuple(hw):
        return chw
    mode = cfg.interpolation
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"interpolation {mode!r} is not supported; use 'bilinear' or 'bicubic'")
    kw = {"size": hw, "mode": mode, "align_corners": False, "antialias": cfg.antialias}
    if chw.dtype == torch.uint8:
        out = F.interpolate(chw[None].float(), **kw)[0]
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return F.interpolate(chw[None], **kw)[0]


def _normalize(x: np.ndarray, cfg: ImageProcessingConfig) -> np.ndarray:
    """[0, 1] HxWx3 -> model input range: minmax (released: 2x - 1) or CLIP mean/std."""
    if cfg.normalization_method == "minmax":
        return x * np.float32(cfg.image_max - cfg.image_min) + np.float32(cfg.image_min)
    if cfg.normalization_method == "gaussian":
        return (x - _CLIP_MEAN) / _CLIP_STD
    raise ValueError(f"normalization_method {cfg.normalization_method!r} is not supported; use 'minmax' or 'gaussian'")


def _patchify(crops: np.ndarray, patch: int) -> np.ndarray:
    """(n, S, S, C) crops -> (n, g*g, patch*patch*C) with each patch vector ordered (dy, dx, c)."""
    n, s, _, c = crops.shape
    g = s // patch
    x = crops.reshape(n, g, patch, g, patch, c)  # (n, gy, dy, gx, dx, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (n, gy, gx, dy, dx, c)
    return np.ascontiguousarray(x.reshape(n, g * g, patch * patch * c))


@dataclass
class ProcessedImage:
    """Model inputs for one image. Crops are [thumbnail, tiles row-major]."""

    crops: np.ndarray  # float32 [n_crops, 729, 588]
    masks: np.ndarray  # float32 [n_crops, 729]; 1 = real pixels, -1 = official last-tile quirk
    image_input_idx: np.ndarray  # int64 [n_crops, 196], relative to the block start
    layout: ImageLayout


def preprocess_image(src, cfg: ImageProcessingConfig, max_crops: int | None = None,
                     exif_for_pil: bool = False) -> ProcessedImage:
    """Load an image and turn it into crops, masks, ``image_input_idx`` and its layout.

    ``exif_for_pil``: apply EXIF orientation to an in-memory PIL image too (the release does
    it for chat-message images; files and bytes always get it)."""
    rgb = load_image(src, max_input_pixels=cfg.max_input_pixels, exif_for_pil=exif_for_pil,
                     composite_on_white=cfg.composite_alpha_on_white)
    h, w = rgb.shape[:2]
    layout = image_layout(h, w, cfg, max_crops)

    # Smart resize: on uint8 unless resize_in_float32 (Corrections 3); HWC view as CHW.
    chw = torch.from_numpy(rgb).permute(2, 0, 1)  # (3, H, W) uint8
    if cfg.resize_in_float32:
        resized = _resize(chw.float() / 255.0, layout.resized_hw, cfg).clamp_(0.0, 1.0)
    else:
        resized = _resize(chw, layout.resized_hw, cfg).float() / 255.0  # (3, h, w) in [0, 1]

    # Stretch and thumbnail run on float [0, 1], clipped, not re-quantised.
    stretched = _resize(resized, layout.stretched_hw, cfg).clamp_(0.0, 1.0)  # (3, Hs, Ws)
    thumb = _resize(resized, (cfg.crop_size, cfg.crop_size), cfg).clamp_(0.0, 1.0)  # (3, S, S)
    stretched = _normalize(stretched.permute(1, 2, 0).numpy(), cfg)  # (Hs, Ws, 3)
    thumb = _normalize(thumb.permute(1, 2, 0).numpy(), cfg)  # (S, S, 3)

    rows, cols = layout.tiling
    s, step = cfg.crop_size, cfg.window_px
    tiles = [stretched[r * step:r * step + s, c * step:c * step + s] for r in range(rows) for c in range(cols)]
    crops = _patchify(np.stack([thumb, *tiles]).astype(np.float32, copy=False), cfg.patch_size)

    # The official mask array covers the tiles only and gets a -1 row appended, while the
    # thumbnail is prepended to the pixels: the last tile ends up marked -1 ("partial padding").
    masks = np.ones((layout.n_crops, cfg.grid * cfg.grid), dtype=np.float32)
    if cfg.last_tile_mask_quirk:
        masks[-1] = -1.0
    return ProcessedImage(crops=crops, masks=masks, image_input_idx=image_input_idx(layout, cfg), layout=layout)
