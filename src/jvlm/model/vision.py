"""The SigLIP2 ViT of Jina-VLM, run over pre-patchified crops.

Module and parameter names mirror the official checkpoint (``patch_embed.proj``,
``pos_embed``, ``layers.L.attn.qkv_w`` + ``q_b/k_b/v_b``, ``attn_lnorm`` ...), so the
state dict of this module *is* the ``model.vision_model.`` part of the released layout.
The connector lives inside the vision model in that layout, hence ``self.vl_connector``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jvlm.config import JinaVLMConfig
from jvlm.model.connector import VisionLanguageConnector


class VisionAttention(nn.Module):
    """Bidirectional multi-head attention; fused qkv weight, separate q/k/v bias vectors."""

    def __init__(self, width: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        inner = n_heads * head_dim
        self.qkv_w = nn.Linear(width, 3 * inner, bias=False)
        self.q_b = nn.Parameter(torch.zeros(inner))
        self.k_b = nn.Parameter(torch.zeros(inner))
        self.v_b = nn.Parameter(torch.zeros(inner))
        self.out = nn.Linear(inner, width, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        bias = torch.cat([self.q_b, self.k_b, self.v_b])
        qkv = F.linear(x, self.qkv_w.weight, bias)  # (N, T, 3*H*D)
        qkv = qkv.view(n, t, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, N, H, T, D)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, H, T, D)
        y = y.transpose(1, 2).reshape(n, t, self.n_heads * self.head_dim)
        return self.out(y)


class VisionMLP(nn.Module):
    def __init__(self, width: int, size: int):
        super().__init__()
        self.up = nn.Linear(width, size, bias=True)
        self.down = nn.Linear(size, width, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class VisionBlock(nn.Module):
    """Pre-norm transformer block (LayerNorm with bias)."""

    def __init__(self, cfg: JinaVLMConfig):
        super().__init__()
        v = cfg.vision
        self.attn_lnorm = nn.LayerNorm(v.hidden_size, eps=v.norm_eps, bias=v.norm_bias)
        self.attn = VisionAttention(v.hidden_size, v.n_heads, v.head_dim)
        self.ffn_lnorm = nn.LayerNorm(v.hidden_size, eps=v.norm_eps, bias=v.norm_bias)
        self.ffn = VisionMLP(v.hidden_size, v.mlp_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_lnorm(x))
        return x + self.ffn(self.ffn_lnorm(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_dim: int, width: int):
        super().__init__()
        self.proj = nn.Linear(patch_dim, width, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: JinaVLMConfig):
        super().__init__()
        v = cfg.vision
        self.cfg = cfg
        self.patch_embed = PatchEmbed(v.patch_dim, v.hidden_size)
        self.pos_embed = nn.Parameter(torch.zeros(v.n_patches, v.hidden_size))
        self.layers = nn.ModuleList(VisionBlock(cfg) for _ in range(v.n_layers))
        self.post_lnorm = nn.LayerNorm(v.hidden_size, eps=v.norm_eps, bias=v.norm_bias)
        self.vl_connector = VisionLanguageConnector(cfg)
        self._taps = v.tap_indices()
        # Blocks after the deepest tap never influence the output: skip them at run time
        # (their weights stay in the checkpoint).
        self._n_run = v.n_layers_used()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """ViT features of every crop: (B, T, P, 588) -> (B, T, P, len(vit_layers) * width).

        Crops whose every value is exactly -1 are batch padding; their features are zeroed
        (official behaviour, which also zeroes a perfectly black crop).
        """
        b, t, p, d = images.shape
        x = images.reshape(b * t, p, d).to(self.pos_embed.dtype)  # (N, P, 588)
        valid = ~(x == -1).all(dim=2).all(dim=1)  # (N,)
        x = self.patch_embed(x) + self.pos_embed  # (N, P, W)
        n_layers = len(self.layers)
        states: dict[int, torch.Tensor] = {}
        for i in range(self._n_run):
            x = self.layers[i](x)
            if i in self._taps:
                states[i] = x
        if n_layers in self._taps:
            states[n_layers] = self.post_lnorm(x)
        feats = torch.cat([states[i] for i in self._taps], dim=-1)  # (N, P, len(taps)*W)
        feats = feats * valid.to(feats.dtype)[:, None, None]
        return feats.view(b, t, p, -1)

    def forward(self, images: torch.Tensor, image_masks: torch.Tensor) -> torch.Tensor:
        """(B, T, P, 588), (B, T, P) -> decoder-width features (B, T, tokens_per_crop, hidden)."""
        return self.vl_connector(self.encode(images), image_masks)
