"""The command line's images: checked before the weights load, over-large ones downscaled.

The files are the user's own, so the CLI treats a photo bigger than the processor's pixel cap
the way other VLM tools do: it shrinks it (keeping the aspect ratio) and says so on stderr,
rather than refusing it with advice about a setting the command line cannot reach. A file
that is damaged is named for what it is: a PNG that ends early is a *truncated PNG*, not
"something that is not an image".
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from jvlm.errors import InvalidImageError

#: the default of ``--max-image-pixels``: the processor's own cap (``ImageProcessingConfig``)
DEFAULT_MAX_PIXELS = 64_000_000

#: above this many pixels an image is refused, not downscaled: decoding it would take gigabytes
#: (a 48 KB bilevel PNG can claim 400 megapixels). PIL's own hard decompression-bomb limit.
MAX_DECODE_PIXELS = 2 * 89_478_485

#: first bytes of the formats users send, to name a file whose header is cut off
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"RIFF", "WebP"),
          (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


@dataclass(frozen=True)
class Downscaled:
    """What happened to an over-large image (for the notice)."""

    name: str
    size: tuple[int, int]
    new_size: tuple[int, int]
    limit: int

    def notice(self) -> str:
        (w, h), (nw, nh) = self.size, self.new_size
        return (f"note: {self.name} is {w}×{h} = {w * h:,} pixels, above --max-image-pixels {self.limit:,}; "
                f"downscaled to {nw}×{nh} (the model tiles it to its own budget anyway)")


def check_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS):
    """``(image, downscaled)``: the bytes unchanged when they decode within ``max_pixels``
    (``0`` = no limit), else a smaller PIL image and what was done; an ``InvalidImageError``
    that names the problem when the file cannot be decoded."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    fmt = next((f for magic, f in _MAGIC if data.startswith(magic)), None)
    try:
        with warnings.catch_warnings():  # the user's own file: PIL's bomb warning is our notice
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(io.BytesIO(data))
                fmt = im.format or fmt
                w, h = im.size
                if w * h > MAX_DECODE_PIXELS:
                    raise InvalidImageError(
                        f"{name} is too large to decode safely: {w}×{h} = {w * h:,} pixels, above the "
                        f"{MAX_DECODE_PIXELS:,}-pixel limit (a decompression bomb?); shrink it before sending it")
                if max_pixels <= 0 or w * h <= max_pixels:
                    im.load()  # a truncated or corrupt file fails here, before the weights load
                    return data, None
                scale = math.sqrt(max_pixels / (w * h))
                target = (max(1, int(w * scale)), max(1, int(h * scale)))
                im.draft("RGB", target)  # JPEG decodes at a fraction of the size directly
                im = ImageOps.exif_transpose(im)
                if im.mode in ("P", "PA", "1"):  # palette and bilevel images resample badly as they are
                    im = im.convert("RGBA")
                elif im.mode not in ("RGB", "RGBA", "L", "LA"):  # 16-bit, CMYK, ...: to 8-bit RGB
                    im = im.convert("RGB")
                small = im.resize(_fit(im.size, max_pixels), Image.Resampling.LANCZOS, reducing_gap=3.0)
                return small, Downscaled(name, (w, h), small.size, max_pixels)
            finally:
                Image.MAX_IMAGE_PIXELS = previous
    except InvalidImageError:
        raise
    except UnidentifiedImageError:
        if fmt:
            raise InvalidImageError(f"{name} is a truncated or damaged {fmt} image (its header cannot be read); "
                                    "re-download or re-export it") from None
        raise InvalidImageError(f"{name} is neither an image (PNG, JPEG, WebP, GIF, ...) nor a PDF") from None
    except (OSError, ValueError, SyntaxError) as e:
        what = "truncated" if "truncated" in str(e).lower() else "damaged"
        raise InvalidImageError(f"{name} is a {what} {fmt or 'image'} file ({e}); re-download or re-export it") \
            from None


def _fit(size: tuple[int, int], max_pixels: int) -> tuple[int, int]:
    w, h = size
    scale = min(1.0, math.sqrt(max_pixels / (w * h)))
    nw, nh = max(1, int(w * scale)), max(1, int(h * scale))
    while nw * nh > max_pixels:  # rounding up to one pixel over: shave it
        nw, nh = max(1, nw - 1), max(1, nh - 1)
    return nw, nh
