"""`minigemini plan`: model states from DeepSpeed's own estimators, activations against what autograd saves."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from minigemini.config import load_config
from minigemini.train import plan as planning
from minigemini.train.activations import (default_dtype, measure_activation_model, measure_step, proxy_batch,
                                          saved_tensor_bytes)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def tiny_cfg(tmp_path: Path, synthetic_dir: Path, tiny_base: Path, overrides):
    def make(*extra: str):
        return load_config(REPO / "configs" / "tiny" / "finetune.yaml",
                           overrides(tmp_path / "out", synthetic_dir / "train.json", tiny_base)
                           + ["model.pretrained_adapter=null", *extra])
    return make


def test_saved_tensor_bytes_counts_what_autograd_keeps():
    x = torch.randn(8, 16, requires_grad=True)
    w = torch.randn(16, 32, requires_grad=True)
    # x @ w saves x and w (excluded: w); tanh saves its output (8 x 32 fp32); sum saves nothing
    got = saved_tensor_bytes(lambda: torch.tanh(x @ w).sum(), exclude=[w])
    assert got == 8 * 16 * 4 + 8 * 32 * 4


@pytest.mark.parametrize("stage", ["pretrain", "finetune"])
def test_model_states_equal_deepspeed_estimators(tiny_cfg, stage):
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    from minigemini.model.builder import build_model_and_processor
    from minigemini.train.tiny_base import resolve_tiny
    from minigemini.train.stages import apply_stage

    cfg = tiny_cfg(f"training.stage={stage}")
    meta_model, _ = planning.build_planned_model(cfg)
    counts = planning.count_parameters(meta_model)
    assert meta_model.language_model.device.type == "meta"  # no weights were loaded to count

    real, _ = build_model_and_processor(resolve_tiny(cfg.model, cfg.data.train))  # independent count on real weights
    apply_stage(real, stage)
    trainable = sum(p.numel() for p in real.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in real.parameters() if not p.requires_grad)
    assert (counts.trainable, counts.frozen) == (trainable, frozen)
    assert (frozen > trainable) == (stage == "pretrain")  # pretrain trains the connector only

    rows = {r.deepspeed_config: r for r in planning.model_state_rows(counts, gpus_per_node=4, nodes=2)}
    cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, 4, 2, cpu_offload=False)
    assert (rows["zero2.json"].gpu_bytes, rows["zero2.json"].cpu_bytes) == (gpu + 2 * frozen, cpu)
    cpu, gpu = estimate_zero2_model_states_mem_needs(trainable, 4, 2, cpu_offload=True)
    assert (rows["zero2_offload.json"].gpu_bytes, rows["zero2_offload.json"].cpu_bytes) == (gpu + 2 * frozen, cpu)
    cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trainable, counts.largest_layer, 4, 2, cpu_offload=False,
                                                        cpu_offload_params=False)
    assert rows["zero3.json"].gpu_bytes == gpu + 2 * frozen // 8
    assert rows[None].gpu_bytes == 16 * trainable + 2 * frozen


@pytest.mark.parametrize("stage,dtype", [("finetune", torch.bfloat16), ("pretrain", torch.float32)])
def test_activation_estimate_matches_measured_step(tiny_cfg, stage, dtype):
    """Fitted on 1-2-layer proxies with one sample; checked on the whole model, 3 rows, other lengths."""
    cfg = tiny_cfg(f"training.stage={stage}")
    meta_model, prepare = planning.build_planned_model(cfg)
    fitted = measure_activation_model(meta_model.config, dtype, prepare=prepare)

    from minigemini.model import MiniGeminiForCausalLM

    torch.manual_seed(0)
    with default_dtype(dtype):
        model = MiniGeminiForCausalLM(meta_model.config)
    model.set_attn_implementation("sdpa")
    prepare(model)
    rows = [proxy_batch(model, supervised=40, text_tokens=150, seed=i) for i in range(3)]
    batch = {k: torch.cat([r[k] for r in rows]) for k in rows[0]}
    measured = measure_step(model, batch)
    estimate = fitted.estimate(3, batch["input_ids"].shape[1], 40)
    assert measured > 0
    assert abs(estimate - measured) / measured < 0.05, (estimate, measured)


def test_recommendation_picks_the_fastest_config_that_fits():
    counts = planning.ParameterCounts(trainable=7_000_000_000, frozen=500_000_000, largest_layer=500_000_000)
    rows = planning.model_state_rows(counts, gpus_per_node=8, nodes=1)
    by = {r.deepspeed_config: r for r in rows}
    act = 10 * planning.GIB
    plan = planning.Plan(counts, rows, act, 2 * act, checkpointing=True)
    roomy = (by["zero2.json"].gpu_bytes + act) / planning.HEADROOM + 1
    assert planning.recommend(plan, int(roomy)).deepspeed_config == "zero2.json"
    tight = (by["zero3.json"].gpu_bytes + act) / planning.HEADROOM + 1
    assert by["zero3.json"].gpu_bytes < by["zero2.json"].gpu_bytes
    assert planning.recommend(plan, int(tight)).deepspeed_config == "zero3.json"
    assert planning.recommend(plan, int(act / 2)) is None


def test_parse_size():
    assert planning.parse_size("80GB") == 80 * 1024**3
    assert planning.parse_size("24000MB") == 24000 * 1024**2
    with pytest.raises(ValueError, match="80GB"):
        planning.parse_size("eighty")


def test_plan_command_prints_the_table(tiny_cfg, tmp_path, synthetic_dir, tiny_base, overrides, capsys):
    from minigemini.cli import main

    args = overrides(tmp_path / "out", synthetic_dir / "train.json", tiny_base) + ["model.pretrained_adapter=null"]
    assert main(["plan", str(REPO / "configs" / "tiny" / "finetune.yaml"), *args, "--gpus", "2",
                 "--gpu-mem", "1GB"]) == 0
    out = capsys.readouterr().out
    assert "ZeRO-3 + offload (zero3_offload.json)" in out
    assert "recommended for 1 GiB GPUs: deepspeed.config=configs/deepspeed/zero2.json" in out
    assert main(["plan", str(REPO / "configs" / "tiny" / "finetune.yaml"), *args, "--gpus", "0"]) == 2
    assert "--gpus and --nodes must be at least 1" in capsys.readouterr().err
