"""Gradient checkpointing with frozen towers and with cached features: same losses, fewer saved bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM
from minigemini.config import load_config
from minigemini.data.feature_cache_build import build_feature_cache
from minigemini.train.activations import measure_step, proxy_batch
from minigemini.train.run import run_training
from minigemini.train.stages import apply_stage

REPO = Path(__file__).resolve().parents[2]
TINY_FINETUNE = REPO / "configs" / "tiny" / "finetune.yaml"


@pytest.mark.parametrize("cached", [False, True], ids=["towers", "feature_cache"])
def test_checkpointing_gives_the_same_losses(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                             stage1_dir: Path, cached: bool) -> None:
    data = synthetic_dir / "train.json"
    extra: dict[str, object] = {}
    if cached:
        build_feature_cache(stage1_dir, data, tmp_path / "cache", image_folder=synthetic_dir, dtype="fp32",
                            workers=0, progress=False)
        extra["data__feature_cache"] = tmp_path / "cache"
    losses = {}
    for ckpt in (False, True):
        cfg = load_config(TINY_FINETUNE, overrides(
            tmp_path / f"ckpt_{ckpt}", data, tiny_base, training__max_steps=3, training__save_strategy="no",
            training__gradient_checkpointing=str(ckpt).lower(), model__pretrained_adapter=stage1_dir, **extra))
        result = run_training(cfg)
        llm = result.trainer.model.language_model
        assert any(getattr(m, "gradient_checkpointing", False) for m in llm.modules()) == ckpt
        losses[ckpt] = result.losses
    assert len(losses[False]) == 3
    assert losses[True] == pytest.approx(losses[False], rel=1e-6, abs=0)  # fp32, step by step


def _checkpointed_bytes(model: MiniGeminiForCausalLM, batch: dict) -> int:
    """Saved-tensor bytes + the layer inputs a non-reentrant checkpoint holds outside autograd's saved tensors."""
    text = model.config.text_config
    kept_inputs = text.num_hidden_layers * batch["input_ids"].numel() * text.hidden_size * 4  # fp32
    return measure_step(model, batch) + kept_inputs


@pytest.mark.parametrize("cached", [False, True], ids=["towers", "feature_cache"])
def test_checkpointing_keeps_fewer_activation_bytes(cached: bool) -> None:
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(MiniGeminiConfig.tiny())
    apply_stage(model, "finetune")  # towers frozen; LLM, mining, projector train
    batch = proxy_batch(model, supervised=16, text_tokens=96)
    if cached:
        with torch.no_grad():
            batch["lr_features"] = model.encode_lr(batch.pop("images"))
            batch["hr_features"] = model.vision_hr.stage_maps(batch.pop("images_aux"))
    plain = measure_step(model, batch)
    loss_plain = model(**batch).loss
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    ckpt = _checkpointed_bytes(model, batch)
    assert model(**batch).loss.item() == loss_plain.item()
    assert ckpt < 0.75 * plain, (ckpt, plain)
