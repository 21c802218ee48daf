"""`data.packing`: training on packed rows gives the padded run's loss; bookkeeping never reaches forward;
feature cache + packing; clear errors for settings that cannot pack."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, OPTConfig, TrainerCallback

from minigemini.config import load_config
from minigemini.data.feature_cache_build import build_feature_cache
from minigemini.data.packing import packing_problem
from minigemini.model.configuration import tiny_text_config
from minigemini.train.run import check_packing_support, run_training

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = REPO / "configs" / "tiny" / "pretrain.yaml"
TINY_FINETUNE = REPO / "configs" / "tiny" / "finetune.yaml"


class RecordForward(TrainerCallback):
    """Records the keyword arguments (and row count) of every model forward."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def hook(module, args_, kwargs_):
            self.calls.append({"keys": set(kwargs_), "rows": kwargs_["input_ids"].shape[0]})
        model.register_forward_pre_hook(hook, with_kwargs=True)


def _finetune(overrides, out: Path, synthetic_dir: Path, tiny_base: Path, **extra):
    """Stage 2 (the LLM trains too) on the VQA records with the chat template, 4 samples per step."""
    return load_config(TINY_FINETUNE, overrides(
        out, synthetic_dir / "train.json", tiny_base, model__pretrained_adapter="null", training__max_steps=2,
        training__per_device_train_batch_size=4, training__save_strategy="no", training__export="false",
        data__num_workers=0, **extra))


def test_packed_run_has_the_padded_runs_loss(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path) -> None:
    runs, seen = {}, {}
    for name, extra in (("padded", {}), ("packed", {"data__packing": "true", "data__pack_length": 320})):
        seen[name] = RecordForward()
        runs[name] = run_training(_finetune(overrides, tmp_path / name, synthetic_dir, tiny_base, **extra),
                                  callbacks=[seen[name]])
    padded, packed = runs["padded"], runs["packed"]
    assert packed.global_step == padded.global_step == 2
    assert all(math.isfinite(v) for v in packed.losses.values()) and set(packed.losses) == {1, 2}
    # same seed, same sampler order, same 4 samples: the first step's loss (before any update) must agree;
    # num_items_in_batch counts labels[..., 1:] != -100, the same in both layouts (first label of a sample is -100)
    assert math.isclose(packed.losses[1], padded.losses[1], rel_tol=1e-4), (packed.losses, padded.losses)
    assert math.isclose(packed.losses[2], padded.losses[2], rel_tol=1e-3), (packed.losses, padded.losses)
    data = [h for h in packed.trainer.state.log_history if "loss" in h]
    assert 0.0 <= data[0]["padding_fraction"] < 1.0 and "padding_fraction" not in padded.trainer.state.log_history[0]
    assert packed.trainer.state.num_input_tokens_seen == padded.trainer.state.num_input_tokens_seen
    # what forward saw: packed rows (fewer than the 4 samples), position ids, no mask, no bookkeeping keys
    calls = seen["packed"].calls
    assert calls and all(not c["keys"] & {"packed_rows", "sample_ids", "skipped_samples"} for c in calls)
    assert all("position_ids" in c["keys"] and "attention_mask" not in c["keys"] for c in calls)
    assert all(c["rows"] < 4 for c in calls) and all(c["rows"] == 4 for c in seen["padded"].calls)
    # evaluation goes through prediction_step with the same collators: equal losses (models equal up to fp noise)
    evals = {name: run.trainer.evaluate(eval_dataset=run.trainer.train_dataset) for name, run in runs.items()}
    assert math.isclose(evals["packed"]["eval_loss"], evals["padded"]["eval_loss"], rel_tol=1e-3), evals


def test_feature_cache_with_packing(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                    stage1_dir: Path) -> None:
    captions = synthetic_dir / "captions.json"
    build_feature_cache(stage1_dir, captions, tmp_path / "cache", image_folder=synthetic_dir, dtype="fp32",
                        workers=0, progress=False)
    losses, seen = {}, {}
    for name, extra in (("images", {}), ("cached", {"data__feature_cache": tmp_path / "cache"})):
        seen[name] = RecordForward()
        cfg = load_config(TINY_PRETRAIN, overrides(tmp_path / name, captions, tiny_base, training__max_steps=2,
                                                   training__per_device_train_batch_size=3, data__packing="true",
                                                   training__save_strategy="no", training__export="false",
                                                   data__num_workers=0, **extra))
        losses[name] = run_training(cfg, callbacks=[seen[name]]).losses
    assert len(losses["cached"]) == 2 and all(math.isfinite(v) for v in losses["cached"].values())
    assert losses["cached"] == losses["images"]  # features in packed order = the towers on the packed images
    assert all({"lr_features", "hr_features"} <= c["keys"] and "images" not in c["keys"] for c in seen["cached"].calls)


def test_unsupported_attention_implementation_is_refused(overrides, tmp_path: Path, synthetic_dir: Path,
                                                         tiny_base: Path) -> None:
    cfg = load_config(TINY_PRETRAIN, overrides(tmp_path / "run", synthetic_dir / "captions.json", tiny_base,
                                               training__max_steps=1, data__packing="true",
                                               model__attn_implementation="'paged|eager'"))
    with pytest.raises(ValueError, match=r"data\.packing=true cannot be used.*'paged\|eager'.*"
                                         r"use one that does: .*sdpa.*data\.packing=false"):
        run_training(cfg)


def _packed_sample_leaks(language_model: torch.nn.Module) -> bool:
    """Independent of the probe: does sample [3, 2, 1] give other logits packed after [5, 6, 7] (positions reset
    to 0) than alone? Then the model lets packed samples see each other."""
    alone = torch.tensor([[3, 2, 1]])
    packed = torch.tensor([[5, 6, 7, 3, 2, 1]])
    with torch.no_grad():
        ref = language_model(input_ids=alone, position_ids=torch.tensor([[0, 1, 2]]), use_cache=False).logits
        out = language_model(input_ids=packed, position_ids=torch.tensor([[0, 1, 2, 0, 1, 2]]), use_cache=False).logits
    return not torch.allclose(ref, out[:, 3:], rtol=1e-4, atol=1e-5)


def test_llm_whose_mask_ignores_position_ids_is_refused() -> None:
    torch.manual_seed(0)
    for impl in ("sdpa", "eager"):
        llama = AutoModelForCausalLM.from_config(tiny_text_config("llama"), attn_implementation=impl).eval()
        assert not _packed_sample_leaks(llama)
        assert packing_problem(llama) is None
    # OPT (transformers 5.24) builds its causal mask without position_ids (Falcon, used here before, now
    # honours the resets): a real model whose packed samples attend to the ones before them.
    opt = AutoModelForCausalLM.from_config(OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=4, ffn_dim=64, word_embed_proj_dim=32),
                                           attn_implementation="sdpa").eval()
    assert _packed_sample_leaks(opt)
    opt.train()
    assert "OPTForCausalLM does not build its attention mask from position_ids" in packing_problem(opt)
    assert opt.training  # the probe restores the mode
    with pytest.raises(ValueError, match=r"cannot be used with this LLM .*OPTForCausalLM.*use another LLM; "
                                         r"or .*data\.packing=false"):
        check_packing_support(SimpleNamespace(language_model=opt), "sdpa")


def test_pack_length_errors(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path) -> None:
    cfg = load_config(TINY_PRETRAIN, overrides(tmp_path / "run", synthetic_dir / "captions.json", tiny_base,
                                               data__packing="true"))
    unset = copy.deepcopy(cfg)
    unset.model.model_max_length = None  # e.g. a RunConfig built in code
    with pytest.raises(ValueError, match=r"data\.packing=true needs a row length: set data\.pack_length=N"):
        run_training(unset)
    zero = copy.deepcopy(cfg)
    zero.data.pack_length = 0
    with pytest.raises(ValueError, match=r"data\.pack_length=0 is not a positive row length"):
        run_training(zero)
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written
