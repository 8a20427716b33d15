"""Caches that let a second question about the same image skip work already done.

Two bounded LRU caches, both sized in bytes:

* ``FeatureCache``: ViT + connector output of one image, keyed by the image's content hash
  and every processing option that changes the crops (``image_cache_key``). A hit skips the
  vision tower, and also the pixel preprocessing: the entry keeps the image's layout, which is
  all the prompt needs to lay out its token block.
* ``PrefixCache``: the decoder's keys/values for a prompt prefix that ends with an image
  block (``<BOS> <|im_start|>user\\n [image block]`` under the chat template). The image
  block is most of the prompt, so a follow-up question then only prefills its own words.
  Keyed by the prefix token ids *and* the images' feature keys: two different images of the
  same size have identical token ids.

Neither cache knows about the model; the engine fills and reads them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if dataclasses.is_dataclass(value):
        return sum(_nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


class ByteLRU:
    """Least-recently-used mapping bounded by the bytes of the tensors it holds.

    Thread-safe, because the server's HTTP threads may look entries up while the engine's
    worker fills them. An entry larger than the whole budget is not stored at all.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Any | None:
        """The entry (now most recent), counting a hit or a miss."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def peek(self, key: str) -> Any | None:
        """The entry without counting or reordering (for internal checks)."""
        with self._lock:
            item = self._items.get(key)
            return None if item is None else item[0]

    def put(self, key: str, value: Any) -> None:
        size = _nbytes(value)
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key)[1]
            if size > self.max_bytes:
                log.debug("cache entry of %d bytes exceeds the %d-byte budget; not stored", size, self.max_bytes)
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._items),
                "bytes": self._bytes, "max_bytes": self.max_bytes}


@dataclass
class CachedImage:
    features: torch.Tensor  # (n_crops, tokens_per_crop, hidden)
    layout: Any = None  # processing.image.ImageLayout: lays out the token block without pixels


class FeatureCache(ByteLRU):
    """Image features by ``image_cache_key``. Default budget: 256 MiB (about 25 full-size
    12-tile images in bf16)."""

    def __init__(self, max_bytes: int = 256 * 2**20):
        super().__init__(max_bytes)


class PrefixCache(ByteLRU):
    """Decoder keys/values of image-ending prompt prefixes. Entries are (k, v), each
    (layers, 1, kv_heads, prefix_len, head_dim). Default budget: 1 GiB (about four 12-tile
    pages of the full model in bf16)."""

    def __init__(self, max_bytes: int = 2**30):
        super().__init__(max_bytes)


def prefix_key(prefix_ids: list[int], image_keys: list[str]) -> str:
    h = hashlib.sha256(np.asarray(prefix_ids, dtype=np.int64).tobytes())
    for k in image_keys:
        h.update(b"|" + k.encode())
    return h.hexdigest()


def image_content_hash(src) -> str:
    """sha256 of what the image *is*: encoded bytes as given, or decoded pixels with their shape.

    Paths are read here; callers should then pass the bytes on rather than reading twice.
    """
    from PIL import Image

    h = hashlib.sha256()
    if isinstance(src, (bytes, bytearray, memoryview)):
        h.update(b"bytes:")
        h.update(bytes(src))
    elif isinstance(src, np.ndarray):
        h.update(f"array:{src.dtype}:{src.shape}:".encode())
        h.update(np.ascontiguousarray(src).tobytes())
    elif isinstance(src, Image.Image):
        h.update(f"pil:{src.mode}:{src.size}:".encode())
        h.update(src.tobytes())
    else:
        raise TypeError(f"cannot hash an image given as {type(src).__name__}; pass bytes, a PIL image or an array")
    return h.hexdigest()


def image_cache_key(content_hash: str, image_config, max_crops: int | None) -> str:
    """Content hash + every option that changes the crops (the whole processing config)."""
    options = dataclasses.asdict(image_config)
    options["max_crops"] = image_config.max_crops if max_crops is None else int(max_crops)
    opts = hashlib.sha256(repr(sorted(options.items())).encode()).hexdigest()[:16]
    return f"{content_hash}:{opts}"
