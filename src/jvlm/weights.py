"""Checkpoint I/O: safetensors only, strict, with one declarative key table per layout.

Layouts:
- ``official`` — the released Hugging Face checkpoint (spec §9.1). Our module tree mirrors
  it, so its keys are our ``state_dict()`` keys unchanged.
- ``mlx`` — the MLX conversion (spec §9.2): renamed norms, the connector moved to the top
  level, and fused qkv / kv biases. Only unquantised (float) MLX files are read.

Pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are refused: unpickling runs
arbitrary code from the file.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from jvlm.errors import CheckpointError, ModelFolderError

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
INDEX_FILE = "model.safetensors.index.json"

# --------------------------------------------------------------------------- MLX table
# (official regex, mlx replacement) for one-to-one renames, applied in order.
_MLX_RENAMES: list[tuple[str, str]] = [
    (r"^model\.vision_model\.vl_connector\.projector\.up\.", "vl_connector.projector.gate_up."),
    # Everything else of the connector (pad_embed, pooling.q/kv/out, projector.down) keeps its
    # name and moves to the top level, as mlx-vlm's Model.vl_connector expects.
    (r"^model\.vision_model\.vl_connector\.", "vl_connector."),
    (r"^model\.vision_model\.post_lnorm\.", "vision_model.post_norm."),
    (r"^model\.vision_model\.", "vision_model."),
    (r"^model\.language_model\.(layers\.\d+)\.attn\.q_lnorm\.", r"language_model.\1.attn.q_norm."),
    (r"^model\.language_model\.(layers\.\d+)\.attn\.k_lnorm\.", r"language_model.\1.attn.k_norm."),
    (r"^model\.language_model\.(layers\.\d+)\.ffn\.up\.", r"language_model.\1.ffn.gate_up."),
    (r"^model\.language_model\.", "language_model."),
]
# Norm names are shared by both towers: attn_lnorm -> attn_norm, ffn_lnorm -> ffn_norm.
_MLX_NORMS = [(r"\.attn_lnorm\.", ".attn_norm."), (r"\.ffn_lnorm\.", ".ffn_norm.")]
# Fused groups: mlx weight/bias key <- official weight key + concatenated bias keys.
_MLX_FUSED: list[tuple[str, str, tuple[str, ...]]] = [
    # (official weight-key pattern with {p} = prefix, mlx prefix, official bias names)
    (r"^(model\.vision_model\.layers\.\d+\.attn)\.qkv_w\.weight$", "qkv", ("q_b", "k_b", "v_b")),
    (r"^(model\.language_model\.layers\.\d+\.attn)\.qkv_w\.weight$", "qkv", ("q_b", "k_b", "v_b")),
    (r"^(model\.vision_model\.vl_connector\.pooling)\.q_w\.weight$", "q", ("q_b",)),
    (r"^(model\.vision_model\.vl_connector\.pooling)\.kv_w\.weight$", "kv", ("k_b", "v_b")),
]
# The MLX conversion has no text q/k/v bias (mlx-vlm's decoder qkv is bias=False): such a fused
# bias is left out when it is all zeros, and kept (so that nothing is lost silently and mlx-vlm's
# strict load refuses the file) when it is not.
_MLX_TEXT_QKV_BIAS = re.compile(r"^language_model\.layers\.\d+\.attn\.qkv\.bias$")


def _mlx_name(key: str) -> str:
    for pat, rep in _MLX_RENAMES:
        new, n = re.subn(pat, rep, key)
        if n:
            key = new
            break
    for pat, rep in _MLX_NORMS:
        key = re.sub(pat, rep, key)
    return key


def _mlx_plan(template: dict[str, torch.Tensor]) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """Official key -> (MLX key, row slice of a fused tensor or None)."""
    plan: dict[str, tuple[str, tuple[int, int] | None]] = {}
    for key in template:
        for pat, fused, biases in _MLX_FUSED:
            m = re.match(pat, key)
            if not m:
                continue
            prefix = m.group(1)
            mprefix = _mlx_name(prefix + ".x")[:-2]
            plan[key] = (f"{mprefix}.{fused}.weight", None)
            offset = 0
            for b in biases:
                n = template[f"{prefix}.{b}"].shape[0]
                plan[f"{prefix}.{b}"] = (f"{mprefix}.{fused}.bias", (offset, offset + n))
                offset += n
    for key in template:
        plan.setdefault(key, (_mlx_name(key), None))
    return plan


def official_to_mlx(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official-layout tensors -> MLX-conversion names (fused biases concatenated).

    Zero text q/k/v biases are left out, as in the released MLX conversion (see
    ``_MLX_TEXT_QKV_BIAS``); ``lm_head.weight`` keeps the file name (mlx-vlm's ``sanitize``
    moves it to ``language_model.lm_head``).
    """
    out: dict[str, torch.Tensor] = {}
    slices: dict[str, list[tuple[int, torch.Tensor]]] = {}
    for key, (name, sl) in _mlx_plan(sd).items():
        if sl is None:
            out[name] = sd[key]
        else:
            slices.setdefault(name, []).append((sl[0], sd[key]))
    for name, parts in slices.items():
        fused = torch.cat([t for _, t in sorted(parts, key=lambda p: p[0])])
        if _MLX_TEXT_QKV_BIAS.match(name):
            if not bool(fused.any()):
                continue  # absent from the MLX layout; mlx_to_official reads it back as zeros
            log.warning("%s is non-zero; mlx-vlm has no text q/k/v bias and will refuse this tensor", name)
        out[name] = fused
    return out


def mlx_to_official(sd: dict[str, torch.Tensor], template: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """MLX-conversion tensors -> official names, using ``template`` (official key -> tensor of
    the right shape) to split fused biases. Text q/k/v biases absent from MLX files (the
    conversion drops them when they are zero) load as zeros."""
    sd = dict(sd)
    if "language_model.lm_head.weight" in sd:  # mlx-vlm's own renaming of lm_head
        sd["lm_head.weight"] = sd.pop("language_model.lm_head.weight")
    if any(k.endswith(".scales") for k in sd):
        raise CheckpointError(
            "this MLX checkpoint is quantised (uint32 weights with .scales/.biases); only float "
            "(bf16/fp16/fp32) MLX conversions can be loaded"
        )
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key, (name, sl) in _mlx_plan(template).items():
        if name in sd:
            out[key] = sd[name] if sl is None else sd[name][sl[0]:sl[1]]
            used.add(name)
        elif sl is not None and key.startswith("model.language_model."):
            out[key] = torch.zeros_like(template[key], device="cpu") if not template[key].is_meta else torch.zeros(template[key].shape)
    for name, t in sd.items():
        if name not in used:
            out[name] = t  # reported as unexpected by the strict check
    return out


# ------------------------------------------------------------------------- reading
def checkpoint_files(folder: str | Path) -> list[Path]:
    """The safetensors files of a model folder (sharded via the index, or single)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist")
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise ModelFolderError(f"{index} is not a valid safetensors index ({e})") from None
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelFolderError(f"{folder} is incomplete: shards listed in {INDEX_FILE} are missing: {missing}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelFolderError(
            f"{folder} holds only pickle files ({', '.join(pickles)}). jvlm never unpickles weights, "
            "since loading a pickle can run arbitrary code; convert them to safetensors first "
            "(e.g. with safetensors.torch.save_file in a trusted environment)"
        )
    raise ModelFolderError(f"{folder} has no *.safetensors weights")


def read_tensors(files: Iterable[Path], dtype: torch.dtype | None = None,
                 on_tensor: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """Read every tensor (converted to ``dtype`` when floating point)."""
    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for k in fh.keys():
                    t = fh.get_tensor(k)
                    if dtype is not None and t.is_floating_point():
                        t = t.to(dtype)
                    out[k] = t
                    if on_tensor:
                        on_tensor(k)
        except Exception as e:  # safetensors raises its own SafetensorError for corrupt files
            if isinstance(e, FileNotFoundError):
                raise ModelFolderError(f"weights file {f} is missing") from None
            raise CheckpointError(f"cannot read {f}: {e} (truncated or not a safetensors file?)") from None
    return out


def unify_float_dtype(sd: dict[str, torch.Tensor]) -> torch.dtype | None:
    """Cast a state dict whose floating tensors mix dtypes (e.g. bf16 and fp32 in one file) to
    the widest of them, in place, so the model has one dtype. Returns that dtype (None when
    there are no floating tensors)."""
    found = {t.dtype for t in sd.values() if t.is_floating_point()}
    if not found:
        return None
    if len(found) == 1:
        return found.pop()
    widest = torch.float64 if torch.float64 in found else torch.float32  # holds bf16 and fp16 exactly
    log.info("checkpoint mixes %s; loading every tensor as %s", sorted(map(str, found)), widest)
    for k, t in sd.items():
        if t.is_floating_point() and t.dtype != widest:
            sd[k] = t.to(widest)
    return widest


def count_tensors(files: Iterable[Path]) -> int:
    n = 0
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                n += len(list(fh.keys()))
        except Exception as e:
            raise CheckpointError(f"cannot read {f}: {e} (truncated or not a safetensors file?)") from None
    return n


def detect_layout(keys: Iterable[str]) -> str:
    keys = list(keys)
    if any(k.startswith("model.") for k in keys):
        return "official"
    if any(k.startswith(("vision_model.", "vl_connector.", "language_model.")) for k in keys):
        return "mlx"
    raise CheckpointError("unrecognised checkpoint layout: no 'model.*' (official) or 'vision_model.*' (MLX) keys")


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor],
                     optional: Iterable[str] = ()) -> None:
    """Raise one CheckpointError naming every missing, unexpected and mis-shaped key."""
    optional = set(optional)
    missing = sorted(k for k in expected if k not in got and k not in optional)
    unexpected = sorted(k for k in got if k not in expected)
    shapes = sorted(
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                parts.append(f"{len(items)} {title}: " + "; ".join(shown))
        raise CheckpointError("checkpoint does not match the model config — " + " | ".join(parts))


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Strictly load official-layout tensors into a JinaVLMForConditionalGeneration.

    lm_head: used untied when stored; tied to the base embedding only when absent and the
    text config asks for tying (spec, Corrections 2).
    """
    expected = {k: v for k, v in model.state_dict().items()}
    layout = detect_layout(sd)
    if layout == "mlx":
        sd = mlx_to_official(sd, expected)
    has_head = "lm_head.weight" in sd
    optional = set()
    if not has_head:
        if not model.cfg.text.tie_word_embeddings:
            raise CheckpointError(
                "checkpoint has no lm_head.weight and text_config.tie_word_embeddings is false: the "
                "output projection is missing"
            )
        optional.add("lm_head.weight")
    check_state_dict(expected, sd, optional)
    on_meta = any(p.is_meta for p in model.parameters())
    model.load_state_dict(sd, strict=False, assign=on_meta)
    if not has_head:
        model.tie_lm_head()


def save_official(model: torch.nn.Module, folder: str | Path, max_shard_bytes: int | None = None,
                  dtype: torch.dtype | None = None) -> list[Path]:
    """Write the model's tensors in the official layout (sharded with an index when large)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {}
    for k, v in model.state_dict().items():
        if getattr(model, "tied", False) and k == "lm_head.weight":
            continue  # a tied head is not stored: loading re-ties it
        t = v.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        sd[k] = t.contiguous().cpu()
    meta = {"format": "pt"}
    if not max_shard_bytes:
        path = folder / "model.safetensors"
        save_file(sd, str(path), metadata=meta)
        return [path]
    # huggingface_hub's writer: the Hub's shard names, its index format, and stale shards of an
    # earlier save in the same folder removed. A model that fits one shard still gets an index
    # there, since the caller asked for sharding.
    from huggingface_hub import save_torch_state_dict

    save_torch_state_dict(sd, folder, max_shard_size=max_shard_bytes, metadata=meta)
    single = folder / "model.safetensors"
    if single.is_file():
        name = "model-00001-of-00001.safetensors"
        single.rename(folder / name)
        total = sum(t.numel() * t.element_size() for t in sd.values())
        (folder / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                                     "weight_map": {k: name for k in sd}}, indent=2))
    index = json.loads((folder / INDEX_FILE).read_text())
    return [folder / name for name in sorted(set(index["weight_map"].values()))]
