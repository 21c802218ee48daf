"""Patch-info-mining attention maps: exact weights on constructed projections, same pass as the output."""

from __future__ import annotations

import math

import pytest
import torch

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM
from minigemini.model.mining import PatchInfoMining

BRIGHT = [3, 0, 1, 2]  # window t's bright cell (row-major in its 2x2 window)


def constructed_mining(strength: float) -> PatchInfoMining:
    """q = (strength, 0) for every token; K_j = (n_j[0], 0): the score of a cell is strength * n_j[0] / sqrt(2)."""
    mining = PatchInfoMining(lr_dim=2, hr_dim=3)
    with torch.no_grad():
        for module in (mining.query[1], mining.key[1], mining.value[1]):
            module.weight.zero_()
            module.bias.zero_()
        mining.query[1].bias.copy_(torch.tensor([strength, 0.0]))
        mining.key[1].weight[0, 0] = 1.0
        mining.value[1].weight.copy_(torch.eye(2, 3))
    return mining


def hr_with_bright_cells() -> torch.Tensor:
    """A 4x4 map (2x2 tokens, 2x2 cells each): cells (0, 0, 1), window t's BRIGHT[t] cell (1, 0, 0)."""
    hr = torch.zeros(1, 3, 4, 4)
    hr[0, 2] = 1.0
    for t, cell in enumerate(BRIGHT):
        row, col = 2 * (t // 2) + cell // 2, 2 * (t % 2) + cell % 2
        hr[0, :, row, col] = torch.tensor([1.0, 0.0, 0.0])
    return hr


def expected_weights(strength: float, eps: float = 1e-5) -> torch.Tensor:
    """By hand: LN of (1,0,0) has channel 0 = (2/3)/sqrt(2/9 + eps); of (0,0,1) it is -(1/3)/sqrt(2/9 + eps)."""
    std = math.sqrt(2 / 9 + eps)
    bright, dull = strength * (2 / 3) / std / math.sqrt(2), strength * (-1 / 3) / std / math.sqrt(2)
    w_bright = math.exp(bright) / (math.exp(bright) + 3 * math.exp(dull))
    w_dull = math.exp(dull) / (math.exp(bright) + 3 * math.exp(dull))
    out = torch.full((1, 4, 4), w_dull, dtype=torch.float64)
    for t, cell in enumerate(BRIGHT):
        out[0, t, cell] = w_bright
    return out


@pytest.mark.parametrize("reference", [False, True])
def test_weights_land_on_the_bright_cell_exactly(reference: bool) -> None:
    mining = constructed_mining(strength=4.0)
    if reference:  # different eps on K and V: the direct (SDPA-form) path; same eps as the expected values
        mining.value[0].eps = 1e-6
    mining.keep_attention = True
    torch.manual_seed(0)
    lr, hr = torch.randn(1, 4, 2), hr_with_bright_cells()
    out = mining(lr, hr)
    att = mining.attention
    assert att.shape == (1, 4, 4)
    torch.testing.assert_close(att.double(), expected_weights(4.0), rtol=0, atol=1e-6)
    assert att.argmax(-1).tolist() == [BRIGHT]
    torch.testing.assert_close(att.sum(-1), torch.ones(1, 4), rtol=0, atol=1e-6)
    assert not att.requires_grad
    mining.keep_attention = False
    torch.testing.assert_close(mining(lr, hr), out, rtol=0, atol=0)  # recording does not change the output


def test_recording_is_off_by_default() -> None:
    mining = constructed_mining(strength=1.0)
    mining(torch.randn(1, 4, 2), hr_with_bright_cells())
    assert mining.attention is None


@pytest.mark.parametrize("hd", [False, True])
def test_model_records_one_map_per_view_in_the_pass_that_encodes(hd: bool) -> None:
    torch.manual_seed(0)
    cfg = MiniGeminiConfig.tiny(hd=hd)
    model = MiniGeminiForCausalLM(cfg).eval()
    views = cfg.num_views
    lr = torch.randn(2, views, 3, 56, 56) if hd else torch.randn(2, 3, 56, 56)
    hr = torch.randn(2, 3, cfg.image_size_aux, cfg.image_size_aux)
    plain = model.encode_images(lr, hr)
    model.mining.keep_attention = True
    recorded = model.encode_images(lr, hr)
    torch.testing.assert_close(recorded, plain, rtol=0, atol=0)
    att = model.mining.attention
    assert att.shape == (2 * views, 16, 64)  # 4x4 LR tokens, 8x8 HR cells each
    torch.testing.assert_close(att.sum(-1), torch.ones(2 * views, 16), rtol=0, atol=1e-5)
