"""Numerical equivalence with tensors produced by the official MGM code (fp32, <= 1e-4).

Runs over every folder under shared/fixtures/mgm_reference/ and every folder listed in
MG_EXTRA_FIXTURES (colon-separated), each handled from its own config.json.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minigemini.model.convert import convert_mgm_checkpoint

from .mgm_inputs import expand_mgm_inputs

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mgm_reference"
TOL = 1e-4


def fixture_dirs() -> list[Path]:
    dirs = sorted(p for p in ROOT.iterdir() if (p / "config.json").exists()) if ROOT.exists() else []
    extra = os.environ.get("MG_EXTRA_FIXTURES", "")
    dirs += [Path(p) for p in extra.split(":") if p]
    return dirs


def _views_to_tokens(per_view: torch.Tensor, n_images: int, grid: int, use_global: bool) -> torch.Tensor:
    """Our per-view tensor (crops of all images, then globals) -> MGM's [B, V*N, C] in [global, crops] order."""
    if grid == 1:
        return per_view
    n_crops = n_images * grid * grid
    crops = per_view[:n_crops].reshape(n_images, -1, per_view.shape[-1])
    return torch.cat([per_view[n_crops:], crops], dim=1) if use_global else crops


def _close(name: str, ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape, f"{name}: shape {tuple(ours.shape)} != reference {tuple(ref.shape)}"
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= TOL, f"{name}: max |diff| {diff:.3e} > {TOL}"


@pytest.mark.parametrize("folder", fixture_dirs(), ids=lambda p: f"mgm_reference-{p.name}")
def test_mgm_reference_equivalence(folder: Path) -> None:
    torch.set_num_threads(2)
    mgm_config = json.loads((folder / "config.json").read_text())
    model = convert_mgm_checkpoint(folder)
    model.config.supervised_logits_only = False  # compare full logits
    cfg = model.config
    inputs = load_file(str(folder / "inputs.safetensors"))
    expected = load_file(str(folder / "expected.safetensors"))
    grid, use_global = cfg.image_grid, cfg.image_global
    assert grid == int(mgm_config.get("image_grid", 1) or 1)
    images, images_aux = inputs["images"], inputs["images_aux"]
    n_images = images_aux.shape[0]

    ids, mask, labels = expand_mgm_inputs(inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                          cfg.image_token_id, cfg.num_image_tokens, pad_token_id=0)
    with torch.no_grad():
        lr = model.encode_lr(images)
        hr = model.vision_hr(images_aux)
        if "lr_features" in expected:
            ref = expected["lr_features"]
            _close("lr_features", lr if ref.dim() == 3 and ref.shape[0] == lr.shape[0] else
                   _views_to_tokens(lr, n_images, grid, use_global), ref)
        if "hr_features" in expected:
            _close("hr_features", hr, expected["hr_features"])
        visual = model.encode_images(images, images_aux)
        if "projector_output" in expected:
            _close("projector_output", visual, expected["projector_output"])
        if "mining_output" in expected:
            mined_tokens = _mining_output(model, lr, hr)
            ref = expected["mining_output"]
            _close("mining_output", mined_tokens if mined_tokens.shape == ref.shape else
                   _views_to_tokens(mined_tokens, n_images, grid, use_global), ref)
            if "mining_hr_embed" in expected:
                _close("mining_hr_embed", (mined_tokens - lr) if mined_tokens.shape == ref.shape else
                       _views_to_tokens(mined_tokens - lr, n_images, grid, use_global), expected["mining_hr_embed"])
        out = model(ids, mask, labels=labels, images=images, images_aux=images_aux)

    valid = expected["llm_attention_mask"].bool()
    assert torch.equal(mask.bool(), valid), "spliced sequence layout differs from MGM's"
    assert torch.equal(labels, expected["llm_labels"]), "spliced labels differ from MGM's"
    if "inputs_embeds" in expected:
        with torch.no_grad():
            embeds = model.embed_tokens(ids, visual)
        _close("inputs_embeds (valid positions)", embeds[valid], expected["inputs_embeds"][valid])
    _close("logits (valid positions)", out.logits[valid], expected["logits"][valid])
    _close("loss", out.loss, expected["loss"])


def _mining_output(model, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """x_lr + mined for every view, in our per-view order (crops of all images, then globals)."""
    return model.mining(lr, model.hr_windows(hr))
