"""Projectors from the mined visual tokens to the LLM's embedding width."""

from __future__ import annotations

import re

from torch import nn


def build_projector(projector_type: str, in_dim: int, out_dim: int) -> nn.Module:
    """`linear`, `identity`, or `mlp{k}x_gelu` (k Linear layers with GELU between, as LLaVA/MGM)."""
    if projector_type == "linear":
        return nn.Linear(in_dim, out_dim)
    if projector_type == "identity":
        return nn.Identity()
    match = re.fullmatch(r"mlp(\d+)x_gelu", projector_type)
    if match is None:
        raise ValueError(f"unknown projector_type {projector_type!r}; use linear, identity or mlp<k>x_gelu")
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(out_dim, out_dim)]
    return nn.Sequential(*layers)
