"""Patch info mining: each LR token queries only the HR cells of its own sub-region.

MGM's math: Q = Linear(LN(x_lr)), K = Linear(LN(hr)), V = Linear(LN(hr)); the HR map is regrouped
so that LR token i sees its own M x M window (M = HR side / sqrt(N)); softmax(Q K^T / sqrt(d)) V
over those M^2 cells; output = x_lr + mined. One batched call does every token at once.

The key/value projections are folded into the query and the output instead of being applied to
every HR cell (the same algebra as "absorbed" attention): with n_j = the HR cell j layer-normalised
without affine, and LN_k = g_k * n + b_k, K_j = W_k LN_k(hr_j) + c_k,

    q . K_j = ((W_k^T q) * g_k) . n_j + (terms equal for every j, which softmax ignores)
    sum_j a_j V_j = W_v (g_v * sum_j a_j n_j + b_v) + c_v          (since sum_j a_j = 1)

so the per-cell work is two C_hr-wide dot products instead of two C_hr x C_lr projections — about
40x fewer FLOPs for MGM's shapes (M^2 = 64 cells per token) and no [B, N, M^2, C_lr] K/V tensors.
The result equals the direct formula up to float rounding (`mine_reference` keeps the direct form).

Attention maps: set `keep_attention = True` and every call stores its softmax weights in
`attention` ([B, N, M^2]: LR token i's weights over the M x M cells of its own window, row-major),
detached, from the very pass that computes the output (no second forward).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def regroup_windows(hr: torch.Tensor, grid: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B, C, H, W] -> [B, grid*grid, M*M, C]: window t (row-major) holds its M x M cells row-major.
    One copy, which also casts to `dtype` (fastest from a channels-last map)."""
    b, c, h, w = hr.shape
    if h != w or h % grid:
        raise ValueError(f"HR map {h}x{w} cannot be split into {grid}x{grid} equal windows")
    m = h // grid
    x = hr.reshape(b, c, grid, m, grid, m).permute(0, 2, 4, 3, 5, 1)
    return x.to(dtype or hr.dtype, memory_format=torch.contiguous_format).reshape(b, grid * grid, m * m, c)


def _token_grid(lr: torch.Tensor) -> int:
    n = lr.shape[1]
    grid = math.isqrt(n)
    if grid * grid != n:
        raise ValueError(f"patch info mining needs a square LR token grid, got N={n}")
    return grid


class PatchInfoMining(nn.Module):
    """Cross-attention from N LR tokens (queries) to their own HR windows (keys/values)."""

    def __init__(self, lr_dim: int, hr_dim: int) -> None:
        super().__init__()
        self.query = nn.Sequential(nn.LayerNorm(lr_dim), nn.Linear(lr_dim, lr_dim))
        self.key = nn.Sequential(nn.LayerNorm(hr_dim), nn.Linear(hr_dim, lr_dim))
        self.value = nn.Sequential(nn.LayerNorm(hr_dim), nn.Linear(hr_dim, lr_dim))
        self.keep_attention = False  # opt-in: store the weights of the last call in `attention`
        self.attention: torch.Tensor | None = None

    def mine(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The mined HR embedding (att . V) for each LR token, before the residual: [B, N, C_lr]."""
        grid = _token_grid(lr)
        (ln_k, lin_k), (ln_v, lin_v) = self.key, self.value
        if ln_k.eps != ln_v.eps:  # the shared normalisation below needs one eps
            return self.mine_reference(lr, hr)
        device = lr.device.type  # under autocast the big tensors stay in its dtype (cast once, in the regroup)
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else lr.dtype
        cells = regroup_windows(hr, grid, dtype)  # [B, N, M^2, C_hr]
        normed = F.layer_norm(cells, cells.shape[-1:], eps=ln_k.eps)  # LN without affine, shared by K and V
        normed = normed.to(dtype)  # (autocast may run layer_norm in fp32)
        q = self.query(lr)  # [B, N, C_lr]
        scale = 1.0 / math.sqrt(lin_k.out_features)
        q_hr = q @ lin_k.weight  # W_k^T q: [B, N, C_hr]
        scores = normed @ (q_hr * (ln_k.weight * scale)).unsqueeze(-1)  # [B, N, M^2, 1]
        att = scores.squeeze(-1).softmax(dim=-1)
        if self.keep_attention:
            self.attention = att.detach()
        pooled = (att.unsqueeze(-2) @ normed).squeeze(-2)  # sum_j a_j n_j: [B, N, C_hr]
        mined = lin_v(pooled * ln_v.weight + ln_v.bias)
        # The key biases shift all scores of a window equally: their gradient is exactly zero. Keep
        # them in the graph (x 0) so every trainable parameter gets a gradient, as DDP/ZeRO expect.
        shift = (q_hr @ ln_k.bias + q @ lin_k.bias).unsqueeze(-1)
        return mined + 0.0 * shift

    def mine_reference(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The direct formula (K, V for every HR cell, one batched SDPA call): slower, same result."""
        windows = regroup_windows(hr.to(lr.dtype), _token_grid(lr))  # [B, N, M^2, C_hr]
        q = self.query(lr).unsqueeze(2)  # [B, N, 1, C]
        k = self.key(windows)  # [B, N, M^2, C]
        v = self.value(windows)
        if self.keep_attention:  # the weights SDPA uses (SDPA does not return them); the output stays SDPA's
            att = ((q @ k.transpose(-1, -2)) / math.sqrt(k.shape[-1])).softmax(dim=-1)
            self.attention = att.squeeze(2).detach()
        return F.scaled_dot_product_attention(q, k, v).squeeze(2)

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """x_lr + mined: [B, N, C_lr] (the token count stays N)."""
        return lr + self.mine(lr, hr)
