"""Patch info mining: each LR token queries only the HR cells of its own sub-region.

MGM's math: Q = Linear(LN(x_lr)), K = Linear(LN(hr)), V = Linear(LN(hr)); the HR map is regrouped
so that LR token i sees its own M x M window (M = HR side / sqrt(N)); softmax(Q K^T / sqrt(d)) V
over those M^2 cells; output = x_lr + mined. One batched SDPA call does every token at once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def regroup_windows(hr: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, grid*grid, M*M, C]: window t (row-major) holds its M x M cells row-major."""
    b, c, h, w = hr.shape
    if h != w or h % grid:
        raise ValueError(f"HR map {h}x{w} cannot be split into {grid}x{grid} equal windows")
    m = h // grid
    x = hr.reshape(b, c, grid, m, grid, m).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, grid * grid, m * m, c)


class PatchInfoMining(nn.Module):
    """Cross-attention from N LR tokens (queries) to their own HR windows (keys/values)."""

    def __init__(self, lr_dim: int, hr_dim: int) -> None:
        super().__init__()
        self.query = nn.Sequential(nn.LayerNorm(lr_dim), nn.Linear(lr_dim, lr_dim))
        self.key = nn.Sequential(nn.LayerNorm(hr_dim), nn.Linear(hr_dim, lr_dim))
        self.value = nn.Sequential(nn.LayerNorm(hr_dim), nn.Linear(hr_dim, lr_dim))

    def mine(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The mined HR embedding (att . V) for each LR token, before the residual: [B, N, C_lr]."""
        n = lr.shape[1]
        grid = math.isqrt(n)
        if grid * grid != n:
            raise ValueError(f"patch info mining needs a square LR token grid, got N={n}")
        windows = regroup_windows(hr.to(lr.dtype), grid)  # [B, N, M^2, C_hr]
        q = self.query(lr).unsqueeze(2)  # [B, N, 1, C]
        k = self.key(windows)  # [B, N, M^2, C]
        v = self.value(windows)
        return F.scaled_dot_product_attention(q, k, v).squeeze(2)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """x_lr + mined: [B, N, C_lr] (the token count stays N)."""
        return lr + self.mine(lr, hr)
