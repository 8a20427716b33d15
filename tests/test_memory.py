"""Streamed tensors in 2 MiB pages (``jvlm.memory``): same values, memory that asks for huge
pages where the OS offers them, freed with the tensor, and a plain tensor everywhere else."""

from __future__ import annotations

import gc

import pytest
import torch

from jvlm import memory


def _mapping(address: int) -> tuple[str, list[str]]:
    """(the /proc/self/smaps header line of the mapping holding ``address``, its VmFlags)."""
    header, flags = None, []
    for line in open("/proc/self/smaps").read().splitlines():
        first = line.split()[0]
        if "-" in first and ":" not in first:
            lo, hi = (int(x, 16) for x in first.split("-"))
            header = line if lo <= address < hi else None
        elif header is not None and line.startswith("VmFlags:"):
            return header, line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.fixture
def huge_on():
    on, why = memory.huge_pages()
    if not on:
        pytest.skip(f"huge pages unavailable here: {why}")  # the fallback is tested below either way
    return on


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.int8, torch.uint8, torch.float32])
def test_place_keeps_values_shape_and_dtype(dtype):
    t = (torch.randn(1536, 1024) * 50).to(dtype)  # 1.5-6 MB: at least one huge page for 2 of them
    out = memory.place(t)
    assert out.dtype == t.dtype and out.shape == t.shape and out.is_contiguous()
    assert torch.equal(out, t)
    big = t.numel() * t.element_size() >= memory.HUGE_PAGE
    assert (out.data_ptr() != t.data_ptr()) == (big and memory.huge_pages()[0])


def test_placed_memory_is_advised_and_freed_with_the_tensor(huge_on):
    out = memory.place(torch.ones(memory.HUGE_PAGE * 3 // 2, dtype=torch.uint8))
    aligned = out.data_ptr() + (-out.data_ptr() % memory.HUGE_PAGE)
    header, flags = _mapping(aligned)
    assert out.data_ptr() % memory.HUGE_PAGE == 0 and "hg" in flags  # whole 2 MiB pages, advised
    assert header.split()[1].endswith("p")  # private: shared anonymous memory follows shmem's setting
    assert out.sum().item() == memory.HUGE_PAGE * 3 // 2
    view = out[1000:]  # a view keeps the mapping alive
    del out
    gc.collect()
    assert _mapping(aligned)[0] == header and view[0].item() == 1
    del view
    gc.collect()
    assert header.split()[0] not in open("/proc/self/maps").read()


def test_small_tensors_and_switched_off_huge_pages_stay_as_they_are(monkeypatch):
    small = torch.ones(1000)
    assert memory.place(small) is small
    big = torch.ones(1 << 20)  # 4 MB
    monkeypatch.setenv("JVLM_HUGE_PAGES", "0")
    memory.huge_pages.cache_clear()
    try:
        assert memory.huge_pages() == (False, "turned off by JVLM_HUGE_PAGES")
        assert memory.place(big) is big
        z = memory.zeros((1 << 20,), torch.float32)
        assert z.count_nonzero() == 0
    finally:
        monkeypatch.undo()
        memory.huge_pages.cache_clear()


def test_zeros_are_zeros_and_writable():
    for shape in [(3, 5), (4, 2, 8, 512, 128)]:  # under and over one huge page
        z = memory.zeros(shape, torch.bfloat16)
        assert z.shape == shape and z.dtype == torch.bfloat16 and z.count_nonzero() == 0
        z[..., 0] = 2
        assert z.float().sum().item() == 2 * z[..., 0].numel()


def test_kv_cache_grows_in_advised_memory_and_keeps_its_columns():
    from jvlm.model.text import KVCache

    cache = KVCache(4, 2, 8, 64, 512, torch.bfloat16)  # 4 MB per tensor
    k = torch.randn(2, 8, 300, 64).to(torch.bfloat16)
    for layer in range(4):
        cache.write(layer, k + layer, -k)
    cache.advance(300)
    cache.reserve(400)  # grows to 1,024 columns
    assert cache.capacity == 1024
    keys, values = cache.filled()
    for layer in range(4):
        assert torch.equal(keys[layer], k + layer) and torch.equal(values[layer], -k)
    assert cache.k[:, :, :, 300:].count_nonzero() == 0
    cache.select([1])  # a request leaves the batch: the other row's history stays whole
    keys, values = cache.filled()
    assert keys.shape[1] == 1 and torch.equal(keys[2], k[1:2] + 2) and torch.equal(values[3], -k[1:2])


def test_decode_setup_says_whether_weights_ask_for_huge_pages(tiny_model_dir):
    import jvlm
    from jvlm.inference.quantize import prepare_decoding

    model, _ = jvlm.load(tiny_model_dir, dtype="fp32")
    setup = prepare_decoding(model, "int8", None)
    on, why = memory.huge_pages()
    assert setup.huge_pages == (f"yes ({why})" if on else f"no ({why})")
