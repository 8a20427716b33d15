"""Every hyperparameter of a Jina-VLM model, and the sizes derived from them.

No torch and no file I/O here beyond JSON dictionaries: this module is imported by
everything else, including tools that never build a model (the cost report).

The nesting follows the data flow (vision -> connector -> text) plus the image
processing settings and the names of the special tokens. ``to_official_dict`` and
``from_official_dict`` translate to and from the field names of the released
``config.json`` (OLMo/Molmo-style nesting: ``vision_config.block_config.attn_config``...).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jvlm.errors import CheckpointError


@dataclass
class VisionConfig:
    """SigLIP2-style ViT over pre-patchified crops (linear patch embedding, no CLS token)."""

    n_layers: int = 27
    hidden_size: int = 1152
    n_heads: int = 16
    head_dim: int = 72
    mlp_size: int = 4304
    activation: str = "gelu_pytorch_tanh"
    image_size: int = 378  # crop side in pixels
    patch_size: int = 14
    n_channels: int = 3
    norm_eps: float = 1e-6
    norm_bias: bool = True
    # Hidden states tapped for the connector, indexed into the list
    # [block_0, ..., block_{n-1}, post_lnorm(block_{n-1})]; concatenated in this order.
    vit_layers: tuple[int, ...] = (-4, -10)

    @property
    def grid(self) -> int:
        """Patches per crop side (27 for 378/14)."""
        return self.image_size // self.patch_size

    @property
    def n_patches(self) -> int:
        return self.grid * self.grid

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch (14*14*3 = 588)."""
        return self.patch_size * self.patch_size * self.n_channels

    def tap_indices(self) -> list[int]:
        """vit_layers resolved to non-negative indices of the (n_layers + 1)-entry list."""
        n = self.n_layers + 1
        out = []
        for i in self.vit_layers:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ValueError(f"vit_layers entry {i} is out of range for {self.n_layers} ViT layers")
            out.append(j)
        return out

    def n_layers_used(self) -> int:
        """Blocks that must run to produce every tapped state (25 for the release)."""
        taps = self.tap_indices()
        return self.n_layers if self.n_layers in taps else max(taps) + 1


# "attention_meanq" is the released connector; "mean" and "none" are ablation variants
# (docs/decisions.md, "Connector variants for ablations").
POOLING_TYPES = ("attention_meanq", "mean", "none")


@dataclass
class ConnectorConfig:
    """2x2 attention pooling with a mean query, then a SwiGLU projector into the decoder width."""

    # "attention_meanq": cross-attention from each window's mean to its members (released).
    # "mean": the window's plain average, then pooling.out. "none": pooling_h = pooling_w = 1,
    # so every patch becomes one token (through pooling.out). Any window size is allowed for
    # the first two.
    pooling_type: str = "attention_meanq"
    padding_embed_type: str = "pad_and_partial_pad"
    pooling_h: int = 2
    pooling_w: int = 2
    n_heads: int = 16
    head_dim: int = 72
    projector_size: int = 6144  # SwiGLU inner width; the fused up matrix has 2x this many rows


@dataclass
class TextConfig:
    """Qwen3 decoder: GQA, per-head q/k RMSNorm before RoPE, SwiGLU MLP."""

    n_layers: int = 28
    hidden_size: int = 2048
    n_heads: int = 16
    n_kv_heads: int = 8
    head_dim: int = 128
    mlp_size: int = 6144
    vocab_size: int = 151936
    # Rows of the base embedding table (and of lm_head); None means vocab_size.
    embedding_size: int | None = None
    additional_vocab_size: int = 128
    rope_theta: float = 1_000_000.0
    # Block norms (attn_lnorm, ffn_lnorm, ln_f) read block_config.lnorm_config; the per-head
    # q/k norms read attn_config.lnorm_config (an eps of null means 1e-5 in both).
    norm_eps: float = 1e-6
    qk_norm_eps: float = 1e-6
    max_sequence_length: int = 40960
    # Decided by text_config.tie_word_embeddings (official default True). The loader unties
    # whenever the checkpoint stores lm_head.weight (spec, Corrections 2).
    tie_word_embeddings: bool = True

    @property
    def base_rows(self) -> int:
        return self.embedding_size or self.vocab_size

    @property
    def total_rows(self) -> int:
        return self.base_rows + self.additional_vocab_size


@dataclass
class ImageProcessingConfig:
    """Settings of the official ``overlap-and-resize`` processor (released values as defaults)."""

    cropping_method: str = "overlap-and-resize"
    crop_size: int = 378
    patch_size: int = 14
    overlap_margins: tuple[int, int] = (4, 4)  # in patches, (left/top, right/bottom)
    max_crops: int = 12
    min_pixels: int = 3136  # 56 * 56
    max_pixels: int = 1_003_520  # 28 * 28 * 1280
    resize_factor: int = 14
    max_aspect_ratio: float = 200.0
    pooling_h: int = 2
    pooling_w: int = 2
    normalization_method: str = "minmax"
    image_min: float = -1.0
    image_max: float = 1.0
    interpolation: str = "bilinear"
    antialias: bool = False
    resize_in_float32: bool = False
    # Reproduce the official mask quirk (last tile's mask row is -1, so it gets pad_embed[1]).
    last_tile_mask_quirk: bool = True
    # Opt-in: blend transparent pixels onto white. The release drops alpha (PIL convert("RGB")).
    composite_alpha_on_white: bool = False
    # Safety: refuse images whose header announces more pixels than this, before decoding.
    max_input_pixels: int = 64_000_000

    @property
    def grid(self) -> int:
        return self.crop_size // self.patch_size

    @property
    def tokens_per_side(self) -> int:
        """Pooled tokens per crop side: ceil(27 / 2) = 14."""
        return math.ceil(self.grid / self.pooling_h)

    @property
    def tokens_per_crop(self) -> int:
        return self.tokens_per_side * math.ceil(self.grid / self.pooling_w)

    @property
    def window_patches(self) -> int:
        """Tile stride in patches: 27 - 4 - 4 = 19."""
        return self.grid - sum(self.overlap_margins)

    @property
    def window_px(self) -> int:
        """Tile stride in pixels (266)."""
        return self.window_patches * self.patch_size

    @property
    def overlap_px(self) -> int:
        """Total margin per axis in pixels (112)."""
        return sum(self.overlap_margins) * self.patch_size


@dataclass
class SpecialTokens:
    """Names of the structural tokens. Their ids always come from the tokenizer."""

    im_start: str = "<im_start>"
    im_end: str = "<im_end>"
    im_patch: str = "<im_patch>"
    im_col: str = "<im_col>"
    image: str = "<|image|>"
    im_slice: str = "<im_slice>"

    def structural(self) -> list[str]:
        return [self.im_start, self.im_end, self.im_patch, self.im_col, self.image, self.im_slice]


@dataclass
class JinaVLMConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    text: TextConfig = field(default_factory=TextConfig)
    image: ImageProcessingConfig = field(default_factory=ImageProcessingConfig)
    tokens: SpecialTokens = field(default_factory=SpecialTokens)
    bos_token_id: int | None = 151643
    eos_token_id: int | list[int] | None = 151643
    pad_token_id: int | None = 151643
    image_token_index: int | None = 151940

    def validate(self) -> "JinaVLMConfig":
        v, c, t, im = self.vision, self.connector, self.text, self.image
        if v.hidden_size % 1 or v.n_heads * v.head_dim != v.hidden_size:
            raise ValueError(f"vision: n_heads*head_dim ({v.n_heads}*{v.head_dim}) != hidden_size {v.hidden_size}")
        if t.n_heads % t.n_kv_heads:
            raise ValueError(f"text: n_heads {t.n_heads} is not a multiple of n_kv_heads {t.n_kv_heads}")
        if im.crop_size != v.image_size or im.patch_size != v.patch_size:
            raise ValueError(
                f"image processing crop/patch ({im.crop_size}/{im.patch_size}) must match the ViT "
                f"({v.image_size}/{v.patch_size})"
            )
        if (c.pooling_h, c.pooling_w) != (im.pooling_h, im.pooling_w):
            raise ValueError("connector and image processing disagree on the pooling window")
        if c.pooling_type not in POOLING_TYPES:
            raise ValueError(
                f"connector: pooling_type {c.pooling_type!r} is not supported; use one of {POOLING_TYPES}"
            )
        if c.pooling_h < 1 or c.pooling_w < 1:
            raise ValueError(f"connector: the pooling window must be at least 1x1, got {c.pooling_h}x{c.pooling_w}")
        if c.pooling_type == "none" and (c.pooling_h, c.pooling_w) != (1, 1):
            raise ValueError(
                f"connector: pooling_type 'none' keeps every patch, so it needs pooling_h = pooling_w = 1 "
                f"(in both the connector and the image processing config), got {c.pooling_h}x{c.pooling_w}"
            )
        if c.pooling_type == "attention_meanq" and c.n_heads * c.head_dim != v.hidden_size:
            raise ValueError("connector: n_heads*head_dim must equal the ViT width")
        v.tap_indices()
        return self

    # ------------------------------------------------------------------ presets
    @classmethod
    def preset(cls, name: str) -> "JinaVLMConfig":
        try:
            factory = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return factory().validate()

    # ------------------------------------------------------------- dictionaries
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def copy(self) -> "JinaVLMConfig":
        return copy.deepcopy(self)

    def to_official_dict(self) -> dict[str, Any]:
        """The released ``config.json`` layout (field names of JinaVLMConfig in the remote code)."""
        v, c, t, im = self.vision, self.connector, self.text, self.image
        ln_v = {"type": "default", "eps": v.norm_eps, "bias": v.norm_bias, "with_affine": True}
        ln_t = {"type": "rms", "eps": t.norm_eps, "bias": False, "with_affine": True}
        ln_qk = {**ln_t, "eps": t.qk_norm_eps}
        return {
            "model_type": "jvlm",
            "architectures": ["JinaVLMForConditionalGeneration"],
            "tie_word_embeddings": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "image_token_index": self.image_token_index,
            "vision_config": {
                "n_layers": v.n_layers,
                "hidden_size": v.hidden_size,
                "input_size": [v.image_size, v.image_size],
                "patch_size": v.patch_size,
                "n_channels": v.n_channels,
                "linear_patch_embedding": True,
                "patch_embedding_bias": True,
                "pre_lnorm": False,
                "post_lnorm": True,
                "use_absolute_positional_embeddings": True,
                "use_cls_token": False,
                "vit_layers": list(v.vit_layers),
                "output_size": t.hidden_size,
                "block_config": {
                    "attn_config": {
                        "n_heads": v.n_heads,
                        "head_dim": v.head_dim,
                        "q_bias": True,
                        "k_bias": True,
                        "v_bias": True,
                        "o_bias": True,
                        "lnorm_config": ln_v,
                    },
                    "ffn_config": {
                        "size": v.mlp_size,
                        "activation_type": v.activation,
                        "gated_activation": False,
                        "bias": True,
                        "lnorm_config": ln_v,
                    },
                    "lnorm_config": ln_v,
                    "postnorm": False,
                },
                "vl_connector_config": {
                    "pooling_type": c.pooling_type,
                    "padding_embed_type": c.padding_embed_type,
                    "projector_type": "mlp",
                    "pooling_h": c.pooling_h,
                    "pooling_w": c.pooling_w,
                    "attn_pooling_config": {
                        "n_heads": c.n_heads,
                        "head_dim": c.head_dim,
                        "q_bias": True,
                        "k_bias": True,
                        "v_bias": True,
                        "o_bias": True,
                    },
                    "mlp_projector_config": {
                        "size": c.projector_size,
                        "activation_type": "silu",
                        "gated_activation": True,
                        "bias": False,
                    },
                },
            },
            "text_config": {
                "n_layers": t.n_layers,
                "hidden_size": t.hidden_size,
                "vocab_size": t.vocab_size,
                "embedding_size": t.embedding_size,
                "additional_vocab_size": t.additional_vocab_size,
                "max_sequence_length": t.max_sequence_length,
                "rope": True,
                "rope_theta": t.rope_theta,
                "partial_rotary_factor": 1.0,
                "rope_scaling": None,
                "normalize_input_embeds": False,
                "tie_word_embeddings": t.tie_word_embeddings,
                "block_config": {
                    "attn_config": {
                        "n_heads": t.n_heads,
                        "n_kv_heads": t.n_kv_heads,
                        "head_dim": t.head_dim,
                        "q_lnorm": True,
                        "k_lnorm": True,
                        "qkv_lnorm_on_heads": True,
                        "q_bias": False,
                        "k_bias": False,
                        "v_bias": False,
                        "o_bias": False,
                        "lnorm_config": ln_qk,
                    },
                    "ffn_config": {
                        "size": t.mlp_size,
                        "activation_type": "silu",
                        "gated_activation": True,
                        "bias": False,
                    },
                    "lnorm_config": ln_t,
                },
            },
            # Not part of the released config.json (it lives in preprocessor_config.json there);
            # kept here so a jvlm folder is self-describing. Ignored by other readers.
            "jvlm_image_processing": dataclasses.asdict(im),
        }

    @classmethod
    def from_official_dict(cls, d: dict[str, Any]) -> "JinaVLMConfig":
        """Read a released-style ``config.json``. Missing fields take the released values."""
        cfg = cls()
        vc = d.get("vision_config") or {}
        tc = d.get("text_config") or {}
        v, c, t = cfg.vision, cfg.connector, cfg.text

        vb = vc.get("block_config") or {}
        va = vb.get("attn_config") or {}
        vf = vb.get("ffn_config") or {}
        vln = vb.get("lnorm_config") or va.get("lnorm_config") or {}
        v.n_layers = vc.get("n_layers", v.n_layers)
        v.hidden_size = vc.get("hidden_size", v.hidden_size)
        if vc.get("input_size"):
            v.image_size = int(vc["input_size"][0])
        v.patch_size = vc.get("patch_size", v.patch_size)
        v.n_channels = vc.get("n_channels", v.n_channels)
        v.vit_layers = tuple(vc.get("vit_layers", v.vit_layers))
        v.n_heads = va.get("n_heads", v.n_heads)
        v.head_dim = va.get("head_dim", v.head_dim)
        v.mlp_size = vf.get("size", v.mlp_size)
        v.activation = vf.get("activation_type", v.activation)
        # Corrections 5: eps null means 1e-5; LayerNorm has a bias only if lnorm_config.bias is truthy.
        if vln:
            v.norm_eps = 1e-5 if vln.get("eps") is None else float(vln["eps"])
            v.norm_bias = bool(vln.get("bias"))

        cc = vc.get("vl_connector_config") or {}
        ca = cc.get("attn_pooling_config") or {}
        cm = cc.get("mlp_projector_config") or {}
        c.pooling_type = cc.get("pooling_type", c.pooling_type)
        c.padding_embed_type = cc.get("padding_embed_type", c.padding_embed_type)
        c.pooling_h = cc.get("pooling_h", c.pooling_h)
        c.pooling_w = cc.get("pooling_w", c.pooling_w)
        c.n_heads = ca.get("n_heads", c.n_heads)
        c.head_dim = ca.get("head_dim", c.head_dim)
        c.projector_size = cm.get("size", c.projector_size)

        tb = tc.get("block_config") or {}
        ta = tb.get("attn_config") or {}
        tf = tb.get("ffn_config") or {}
        tln_block = tb.get("lnorm_config")
        tln_attn = ta.get("lnorm_config")
        t.n_layers = tc.get("n_layers", t.n_layers)
        t.hidden_size = tc.get("hidden_size", t.hidden_size)
        t.vocab_size = tc.get("vocab_size", t.vocab_size)
        t.embedding_size = tc.get("embedding_size", t.embedding_size)
        t.additional_vocab_size = tc.get("additional_vocab_size", t.additional_vocab_size)
        t.max_sequence_length = tc.get("max_sequence_length", t.max_sequence_length)
        t.rope_theta = float(tc.get("rope_theta", t.rope_theta))
        t.tie_word_embeddings = bool(tc.get("tie_word_embeddings", True))
        t.n_heads = ta.get("n_heads", t.n_heads)
        t.n_kv_heads = ta.get("n_kv_heads") or t.n_heads
        t.head_dim = ta.get("head_dim", t.head_dim)
        t.mlp_size = tf.get("size", t.mlp_size)
        # Corrections 5, as the release reads it: block norms take the block's lnorm_config,
        # the q/k norms the attention's; eps null means 1e-5. A config with only one of the
        # two sections uses it for both.
        tln_block, tln_attn = tln_block or tln_attn, tln_attn or tln_block
        if tln_block:
            t.norm_eps = 1e-5 if tln_block.get("eps") is None else float(tln_block["eps"])
        if tln_attn:
            t.qk_norm_eps = 1e-5 if tln_attn.get("eps") is None else float(tln_attn["eps"])

        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "image_token_index"):
            if key in d:
                setattr(cfg, key, d[key])
        im = d.get("jvlm_image_processing")
        if im:
            cfg.image = dataclass_from_dict(ImageProcessingConfig, im, "config.json: jvlm_image_processing",
                                            error=CheckpointError, unknown_keys="ignore")
        else:
            cfg.image.crop_size, cfg.image.patch_size = v.image_size, v.patch_size
            cfg.image.pooling_h, cfg.image.pooling_w = c.pooling_h, c.pooling_w
        return cfg.validate()

    def apply_preprocessor_config(self, d: dict[str, Any]) -> None:
        """Overlay the image settings of a released ``preprocessor_config.json``."""
        im = self.image
        for key in (
            "max_crops", "min_pixels", "max_pixels", "normalization_method", "image_min", "image_max",
            "interpolation", "antialias", "resize_in_float32", "cropping_method", "max_aspect_ratio",
        ):
            if key in d and d[key] is not None:
                setattr(im, key, d[key])
        if "overlap_margins" in d and d["overlap_margins"] is not None:
            im.overlap_margins = tuple(d["overlap_margins"])
        if "base_input_size" in d and d["base_input_size"]:
            size = d["base_input_size"]
            im.crop_size = int(size[0] if isinstance(size, (list, tuple)) else size)
        if "patch_size" in d and d["patch_size"]:
            im.patch_size = int(d["patch_size"])

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(self.to_official_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> "JinaVLMConfig":
        from jvlm.errors import ModelFolderError

        folder = Path(folder)
        path = folder / "config.json"
        if not folder.is_dir():
            raise ModelFolderError(f"model folder {folder} does not exist")
        if not path.is_file():
            raise ModelFolderError(f"{folder} has no config.json; is it a model folder?")
        cfg = cls.from_official_dict(json.loads(path.read_text()))
        pre = folder / "preprocessor_config.json"
        if pre.is_file() and "jvlm_image_processing" not in json.loads(path.read_text()):
            cfg.apply_preprocessor_config(json.loads(pre.read_text()))
        return cfg.validate()


def dataclass_from_dict(klass, raw: Any, where: str, *, error: type[Exception] = ValueError,
                        unknown_keys: str = "error"):
    """``klass(**raw)`` for a config dataclass, checked: the project's one dict -> dataclass parser.

    ``unknown_keys="error"`` refuses keys the dataclass lacks (a typo in a hand-written config
    must not be silently ignored); ``"ignore"`` drops them (a checkpoint written by a newer
    version may carry more). A JSON/YAML list becomes a tuple where the field's default is
    one. Problems raise ``error`` naming ``where``.
    """
    if not isinstance(raw, dict):
        raise error(f"{where}: expected a mapping, found {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(klass)}
    unknown = sorted(set(raw) - set(fields))
    if unknown and unknown_keys == "error":
        raise error(f"{where}: unknown keys {unknown}; allowed: {sorted(fields)}")
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            continue
        f = fields[key]
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        kwargs[key] = tuple(value) if isinstance(value, list) and isinstance(default, tuple) else value
    try:
        return klass(**kwargs)
    except TypeError as e:
        raise error(f"{where}: {e}") from None


def _jina_vlm() -> JinaVLMConfig:
    return JinaVLMConfig(text=TextConfig(tie_word_embeddings=False))


def _tiny() -> JinaVLMConfig:
    """A few-MB random model with the released image geometry, used by tests.

    Same crop/patch/tiling/pooling as the release (so every token count is the real one);
    narrow and shallow everywhere else. 10 ViT blocks keep vit_layers = (-4, -10) meaningful.
    Vocabulary sizes match the project's small test tokenizer (see processing.text).
    """
    return JinaVLMConfig(
        vision=VisionConfig(n_layers=10, hidden_size=32, n_heads=2, head_dim=16, mlp_size=64),
        connector=ConnectorConfig(n_heads=2, head_dim=16, projector_size=64),
        text=TextConfig(
            n_layers=2, hidden_size=64, n_heads=4, n_kv_heads=2, head_dim=16, mlp_size=128,
            vocab_size=1024, additional_vocab_size=128, max_sequence_length=8192,
            tie_word_embeddings=False,
        ),
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        image_token_index=None,
    )


def _jvlm_demo() -> JinaVLMConfig:
    """The shipped default model, trained from scratch on the synthetic data (jvlm_demo.demo).

    Same ViT -> 2x2 attention pooling -> SwiGLU projector -> Qwen3 design and the same
    overlap-and-resize tiling; only smaller: 224 px crops (16x16 patches -> 64 pooled tokens
    per crop), at most 1 tile besides the thumbnail by default, and a 2,048-id vocabulary
    (jvlm_demo.demo_tokenizer). Width and depth were picked by measured training speed on
    two CPU cores (docs/reproduction.md). The special ids come from the tokenizer when the
    model folder is written.
    """
    return JinaVLMConfig(
        vision=VisionConfig(n_layers=4, hidden_size=128, n_heads=2, head_dim=64, mlp_size=512,
                            image_size=224, vit_layers=(-1, -3)),
        connector=ConnectorConfig(n_heads=2, head_dim=64, projector_size=768),
        text=TextConfig(
            n_layers=4, hidden_size=256, n_heads=4, n_kv_heads=2, head_dim=64, mlp_size=768,
            vocab_size=2048, additional_vocab_size=128, max_sequence_length=2048,
            tie_word_embeddings=False,
        ),
        image=ImageProcessingConfig(crop_size=224, max_crops=1),
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        image_token_index=None,
    )


PRESETS = {"jina-vlm": _jina_vlm, "tiny": _tiny, "jvlm-demo": _jvlm_demo}
