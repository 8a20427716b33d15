"""Vision-language connector: pad embeddings, 2x2 attention pooling with a mean query,
and a SwiGLU projector into the decoder width (spec §6).

Parameter names follow the official checkpoint (``pad_embed``, ``pooling.q_w``,
``pooling.kv_w``, ``pooling.q_b/k_b/v_b``, ``pooling.out``, ``projector.up/down``).

``ConnectorConfig.pooling_type`` picks the pooling; only the released "attention_meanq" has
trained weights. "mean" and "none" are ablation variants (docs/decisions.md): "mean" averages
each window and projects it with ``pooling.out`` alone; "none" is the same module over 1x1
windows, so every patch becomes one token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jvlm.config import POOLING_TYPES, JinaVLMConfig
from jvlm.model.text import linear_plus_bias


class AttentionPooling(nn.Module):
    """Cross-attention from the mean of each 2x2 window to its members (no mask)."""

    def __init__(self, in_dim: int, n_heads: int, head_dim: int, out_dim: int):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, head_dim
        inner = n_heads * head_dim
        self.q_w = nn.Linear(in_dim, inner, bias=False)
        self.kv_w = nn.Linear(in_dim, 2 * inner, bias=False)
        self.q_b = nn.Parameter(torch.zeros(inner))
        self.k_b = nn.Parameter(torch.zeros(inner))
        self.v_b = nn.Parameter(torch.zeros(inner))
        self.out = nn.Linear(inner, out_dim, bias=True)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, K, C) window members -> (M, out_dim) pooled vector."""
        m, k, _ = windows.shape
        h, d = self.n_heads, self.head_dim
        # Zero-padded members count in the mean (spec §6 step 5).
        query = windows.mean(dim=1, keepdim=True)  # (M, 1, C)
        q = linear_plus_bias(self.q_w, query, self.q_b).view(m, 1, h, d).transpose(1, 2)  # (M, H, 1, D)
        kv = linear_plus_bias(self.kv_w, windows, torch.cat([self.k_b, self.v_b]))  # (M, K, 2*H*D)
        kv = kv.view(m, k, 2, h, d).permute(2, 0, 3, 1, 4)  # (2, M, H, K, D): K first, then V
        # Softmax over only K=4 keys: an explicit product is cheaper than a fused kernel call here.
        scores = (q @ kv[0].transpose(-1, -2)) * (1.0 / math.sqrt(d))  # (M, H, 1, K)
        probs = scores.float().softmax(dim=-1).to(kv.dtype)
        y = (probs @ kv[1]).reshape(m, h * d)  # (M, H*D)
        return self.out(y)


class MeanPooling(nn.Module):
    """Plain average of each window's members, then ``out`` (ablation; no q/k/v weights).

    With 1x1 windows (pooling_type "none") the mean is the patch itself and this is a
    per-patch linear map into the ViT width.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.out = nn.Linear(in_dim, out_dim, bias=True)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """(M, K, C) window members -> (M, out_dim) pooled vector."""
        # Zero-padded members count, exactly as in the attention pooling's mean query.
        return self.out(windows.mean(dim=1))  # (M, out_dim)


class SwiGLUProjector(nn.Module):
    """down(silu(gate) * value) where the fused ``up`` output is [value | gate] (spec §6.8)."""

    def __init__(self, in_dim: int, size: int, out_dim: int):
        super().__init__()
        self.size = size
        self.up = nn.Linear(in_dim, 2 * size, bias=False)
        self.down = nn.Linear(size, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.up(x)
        value, gate = u[..., : self.size], u[..., self.size :]  # value first, gate second
        return self.down(F.silu(gate) * value)


class VisionLanguageConnector(nn.Module):
    def __init__(self, cfg: JinaVLMConfig):
        super().__init__()
        v, c, t = cfg.vision, cfg.connector, cfg.text
        if c.pooling_type not in POOLING_TYPES:
            raise ValueError(f"pooling_type {c.pooling_type!r} is not supported; use one of {POOLING_TYPES}")
        if c.padding_embed_type != "pad_and_partial_pad":
            raise ValueError(f"padding_embed_type {c.padding_embed_type!r} is not supported")
        feat_dim = len(v.vit_layers) * v.hidden_size
        self.grid = v.grid
        self.ph, self.pw = c.pooling_h, c.pooling_w
        self.pad_embed = nn.Parameter(torch.zeros(2, feat_dim))
        self.pooling: nn.Module
        if c.pooling_type == "attention_meanq":
            self.pooling = AttentionPooling(feat_dim, c.n_heads, c.head_dim, v.hidden_size)
        else:  # "mean", or "none" (validated to 1x1 windows by the config)
            self.pooling = MeanPooling(feat_dim, v.hidden_size)
        self.projector = SwiGLUProjector(v.hidden_size, c.projector_size, t.hidden_size)

    def pool(self, feats: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """(B, T, P, C) ViT features + (B, T, P) coverage masks -> (B, T, tokens, width)."""
        b, t, p, c = feats.shape
        g, ph, pw = self.grid, self.ph, self.pw
        masks = masks.to(feats.dtype)[..., None]  # (B, T, P, 1)
        full = (masks == 0).to(feats.dtype)
        # "partial" is literally mask < 1 and mask != 0, so the -1 sentinel counts (spec §3.2.8).
        partial = ((masks < 1) & (masks != 0)).to(feats.dtype)
        feats = feats + full * self.pad_embed[0] + partial * self.pad_embed[1]
        x = feats.view(b * t, g, g, c)  # (N, 27, 27, C)
        gh, gw = math.ceil(g / ph), math.ceil(g / pw)
        x = F.pad(x, (0, 0, 0, gw * pw - g, 0, gh * ph - g))  # zero rows at the bottom, cols at the right
        x = x.view(b * t, gh, ph, gw, pw, c).permute(0, 1, 3, 2, 4, 5)  # (N, gh, gw, ph, pw, C)
        windows = x.reshape(b * t * gh * gw, ph * pw, c)  # (N*196, 4, C); members in (dy, dx) order
        # With 1x1 windows ("none") the pad and view above are no-ops: (N*729, 1, C).
        pooled = self.pooling(windows)  # (N*196, width)
        return pooled.view(b, t, gh * gw, -1)

    def forward(self, feats: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return self.projector(self.pool(feats, masks))
