"""Towers, patch info mining and projector on tiny configs."""

from __future__ import annotations

import math

import pytest
import torch

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM
from minigemini.model.mining import PatchInfoMining, regroup_windows
from minigemini.model.projector import build_projector
from minigemini.model.towers import build_tower


@pytest.mark.parametrize("hd", [False, True])
def test_tower_and_token_shapes(hd: bool) -> None:
    torch.manual_seed(0)
    cfg = MiniGeminiConfig.tiny(hd=hd)
    model = MiniGeminiForCausalLM(cfg).eval()
    n_images = 2
    views = 5 if hd else 1
    lr_in = torch.randn(n_images, views, 3, 56, 56) if hd else torch.randn(n_images, 3, 56, 56)
    hr_in = torch.randn(n_images, 3, cfg.image_size_aux, cfg.image_size_aux)
    lr = model.encode_lr(lr_in)
    hr = model.vision_hr(hr_in)
    assert lr.shape == (n_images * views, 16, 48)  # (56/14)^2 tokens, CLS dropped
    # ConvNeXt stem stride 4; channels 8+16+32+64
    assert hr.shape == (n_images, 120, cfg.image_size_aux // 4, cfg.image_size_aux // 4)
    windows = model.hr_windows(hr)
    assert windows.shape == (n_images * views, 120, 32, 32)  # every view sees an 8x8 window per token
    tokens = model.encode_images(lr_in, hr_in)
    assert tokens.shape == (n_images, 16 * views, 64)
    assert cfg.num_image_tokens == 16 * views


def test_lr_tower_select_layer_matches_hf_hidden_states() -> None:
    torch.manual_seed(0)
    spec = MiniGeminiConfig.tiny().vision_lr
    tower = build_tower(spec)
    x = torch.randn(2, 3, 56, 56)
    ours = tower(x)
    ref = tower.clip(x, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)
    assert tower.frozen and not tower.training
    tower.train()
    assert not tower.training, "a frozen tower must stay in eval mode"


def test_hr_tower_stage_concat_and_upsampling() -> None:
    torch.manual_seed(0)
    tower = build_tower(MiniGeminiConfig.tiny().vision_hr)
    x = torch.randn(1, 3, 128, 128)
    out = tower(x)
    feats = tower.stem(x)
    maps = []
    for stage in tower.stages:
        feats = stage(feats)
        maps.append(feats)
    assert [m.shape[-1] for m in maps] == [32, 16, 8, 4]
    torch.testing.assert_close(out[:, :8], maps[0])
    up = torch.nn.functional.interpolate(maps[3], size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, 56:], up)


def test_regroup_windows_is_row_major_subregion() -> None:
    hr = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    win = regroup_windows(hr, grid=2)  # 4 windows of 4x4
    assert win.shape == (2, 4, 16, 3)
    # window 1 = rows 0..3, cols 4..7; its cell 5 = (row 1, col 1) of the window = hr[:, :, 1, 5]
    torch.testing.assert_close(win[:, 1, 5], hr[:, :, 1, 5])
    torch.testing.assert_close(win[:, 2, 0], hr[:, :, 4, 0])
    torch.testing.assert_close(win[:, 3, 15], hr[:, :, 7, 7])


def test_mining_hand_computed_single_token() -> None:
    torch.manual_seed(0)
    mining = PatchInfoMining(lr_dim=4, hr_dim=3)
    lr = torch.randn(1, 1, 4)
    hr = torch.randn(1, 3, 2, 2)  # one token, a 2x2 window
    cells = hr[0].permute(1, 2, 0).reshape(4, 3)  # row-major cells
    q = mining.query(lr[0, 0])
    k = mining.key(cells)
    v = mining.value(cells)
    scores = torch.stack([(q * k[j]).sum() / math.sqrt(4) for j in range(4)])
    weights = torch.exp(scores) / torch.exp(scores).sum()
    expected = lr[0, 0] + (weights[:, None] * v).sum(0)
    torch.testing.assert_close(mining(lr, hr)[0, 0], expected, rtol=1e-5, atol=1e-6)


def test_mining_sees_only_its_own_subregion() -> None:
    torch.manual_seed(0)
    mining = PatchInfoMining(lr_dim=8, hr_dim=6)
    lr = torch.randn(1, 4, 8)  # 2x2 tokens
    hr = torch.randn(1, 6, 8, 8)  # each token owns a 4x4 window
    base = mining(lr, hr)
    outside = hr.clone()
    outside[:, :, 4:, :] += 3 * torch.randn(1, 6, 4, 8)  # windows 2 and 3 (bottom half); not a per-cell constant, which LN removes
    out = mining(lr, outside)
    torch.testing.assert_close(out[:, :2], base[:, :2], rtol=0, atol=0)
    assert (out[:, 2:] - base[:, 2:]).abs().max() > 1e-3
    inside = hr.clone()
    inside[:, :, 0, 3] += 3 * torch.randn(1, 6)  # a cell of window 0 only
    out = mining(lr, inside)
    assert (out[:, 0] - base[:, 0]).abs().max() > 1e-3
    torch.testing.assert_close(out[:, 1:], base[:, 1:], rtol=0, atol=0)


def test_batched_mining_equals_per_token_loop() -> None:
    torch.manual_seed(0)
    mining = PatchInfoMining(lr_dim=16, hr_dim=12)
    lr = torch.randn(3, 9, 16)  # 3x3 tokens
    hr = torch.randn(3, 12, 12, 12)  # 4x4 windows
    batched = mining(lr, hr)
    ref = torch.empty_like(batched)
    for b in range(3):
        for t in range(9):
            r, c = divmod(t, 3)
            cells = hr[b, :, 4 * r:4 * r + 4, 4 * c:4 * c + 4].reshape(12, 16).T
            q, k, v = mining.query(lr[b, t]), mining.key(cells), mining.value(cells)
            att = torch.softmax(k @ q / math.sqrt(16), dim=0)
            ref[b, t] = lr[b, t] + att @ v
    torch.testing.assert_close(batched, ref, rtol=1e-5, atol=1e-5)


def test_mining_rejects_non_square_grid() -> None:
    mining = PatchInfoMining(4, 3)
    with pytest.raises(ValueError, match="square"):
        mining(torch.randn(1, 3, 4), torch.randn(1, 3, 6, 6))


def test_projector_types() -> None:
    mlp = build_projector("mlp2x_gelu", 8, 16)
    assert [type(m).__name__ for m in mlp] == ["Linear", "GELU", "Linear"]
    assert build_projector("linear", 8, 16).out_features == 16
    with pytest.raises(ValueError, match="unknown projector_type"):
        build_projector("qformer", 8, 16)


def test_hd_encoding_equals_mgm_flow_with_separate_global_and_grid_passes() -> None:
    """MGM-HD (image_grid=2, image_global=True) the way the official encode_images does it: the global
    view mined against the HR map downsampled x1/2 in its own call, the 2x2 crops against the HR map's
    quarters in another, tokens ordered [global, crop1..crop4]. Ours does one batched call."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(MiniGeminiConfig.tiny(hd=True)).eval()
    images = torch.randn(2, 5, 3, 56, 56)  # per image: 4 crops (row-major), then the global view
    images_aux = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        ours = model.encode_images(images, images_aux)
        feats = model.vision_lr(torch.cat([images[:, :4].flatten(0, 1), images[:, 4]], dim=0))
        grid_feats, global_feats = feats[:8], feats[8:]
        raw = model.vision_hr(images_aux)  # [2, 120, 64, 64]
        global_hr = F.interpolate(raw.float(), scale_factor=0.5, mode="bilinear", align_corners=False)
        global_mined = model.mining(global_feats, global_hr)
        quarters = raw.reshape(2, 120, 2, 32, 2, 32).permute(0, 2, 4, 1, 3, 5).flatten(1, 2).flatten(0, 1)
        grid_mined = model.mining(grid_feats, quarters).reshape(2, 4 * 16, 48)
        expected = model.projector(torch.cat([global_mined, grid_mined], dim=1))
    assert ours.shape == (2, 80, 64)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    # crop 2 of image 1 (top-right quarter) really is mined against that quarter of the HR map
    torch.testing.assert_close(quarters[5], raw[1, :, :32, 32:])
