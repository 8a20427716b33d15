"""Tensors the decoder streams, in 2 MiB pages where the operating system offers them.

A decode step reads every decoder weight once, 3.4 GB in bf16 for the released model. In
4 KiB pages that is some 850,000 pages a token: each needs its address translation, and the
hardware prefetchers stop at every page boundary. Linux backs memory advised with
``MADV_HUGEPAGE`` by 2 MiB pages where it can ("transparent huge pages", when
``/sys/kernel/mm/transparent_hugepage/enabled`` is "always" or "madvise", the common
defaults). On AMD Zen 4 with two threads, weights in such pages streamed 15-20% faster for
one activation row and 13-27% faster for four (docs/decisions.md).

``place(t)`` returns a copy of a large CPU tensor in fresh memory so advised, or ``t`` itself
when huge pages are unavailable (another OS, the setting "never", ``JVLM_HUGE_PAGES=0``) or
the tensor is too small to fill one. The copy owns its memory (a private anonymous mapping,
released with the tensor), so it behaves as any other tensor: views, pickling, ``clone``.
The kernel may still back part of a range with small pages (fragmented memory): the advice
is a request, and the data are the same either way.
"""

from __future__ import annotations

import functools
import mmap
import os
from pathlib import Path

import torch

_THP = Path("/sys/kernel/mm/transparent_hugepage")


def _huge_page_bytes() -> int:
    """The kernel's transparent huge page size: 2 MiB on x86-64 and on ARM64 with 4 KiB pages."""
    try:
        return int((_THP / "hpage_pmd_size").read_text())
    except (OSError, ValueError):
        return 2 << 20


HUGE_PAGE = _huge_page_bytes()


@functools.lru_cache(maxsize=1)
def huge_pages() -> tuple[bool, str]:
    """(whether ``place`` advises huge pages, why): read once per process."""
    if os.environ.get("JVLM_HUGE_PAGES", "1").strip().lower() in ("0", "false", "no", "off"):
        return False, "turned off by JVLM_HUGE_PAGES"
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False, "not offered by this operating system"
    try:
        setting = (_THP / "enabled").read_text()
    except OSError:
        return False, "no transparent huge pages in this kernel"
    chosen = setting[setting.find("[") + 1:setting.find("]")] if "[" in setting else setting.strip()
    if chosen not in ("always", "madvise"):
        return False, f"transparent huge pages are set to {chosen!r}"
    return True, f"transparent huge pages ({chosen})"


def place(t: torch.Tensor) -> torch.Tensor:
    """``t`` copied into memory advised for 2 MiB pages (contiguous, same values), or ``t``
    itself when that is not possible or not worth it (under one huge page of data)."""
    if not _worth(t.shape, t.dtype, t.device):
        return t
    out = _advised(t.shape, t.dtype)
    out.copy_(t)
    return out


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
    """``torch.zeros(shape, dtype=dtype, device=device)``, in memory advised for 2 MiB pages
    when it is on the CPU and at least one huge page large (fresh mappings read as zeros)."""
    if not _worth(shape, dtype, device):
        return torch.zeros(shape, dtype=dtype, device=device)
    return _advised(shape, dtype)


def _nbytes(shape, dtype: torch.dtype) -> int:
    return torch.Size(shape).numel() * dtype.itemsize


def _worth(shape, dtype: torch.dtype, device) -> bool:
    """Whether a tensor of this shape, dtype and device goes into advised memory."""
    return torch.device(device).type == "cpu" and _nbytes(shape, dtype) >= HUGE_PAGE and huge_pages()[0]


def _advised(shape, dtype: torch.dtype) -> torch.Tensor:
    """A tensor over a fresh private anonymous mapping (zeros), its whole huge pages advised."""
    nbytes = _nbytes(shape, dtype)
    # private (shared anonymous memory is shmem, whose huge pages have a setting of their own, usually
    # "never") and untouched: the first write to each page takes the advice
    area = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    start = -torch.frombuffer(area, dtype=torch.uint8, count=1).data_ptr() % HUGE_PAGE
    try:
        area.madvise(mmap.MADV_HUGEPAGE, start, nbytes // HUGE_PAGE * HUGE_PAGE)
    except OSError:  # refused (a container's seccomp policy, an old kernel): small pages it is
        pass
    out = torch.frombuffer(area, dtype=torch.uint8, count=nbytes, offset=start)  # keeps ``area`` alive
    return out.view(dtype).view(shape)
