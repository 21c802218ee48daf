"""Single-process training on the CPU: stage 1 -> stage 2 through the CLI, exact resume, bad data, NaN loss."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoProcessor, TrainerCallback

from minigemini import MiniGeminiForCausalLM, MiniGeminiProcessor
from minigemini.cli import main as cli_main
from minigemini.config import load_config
from minigemini.train.run import run_training
from minigemini.train.trainer import BadSampleError, NonFiniteLossError

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = REPO / "configs" / "tiny" / "pretrain.yaml"
TINY_FINETUNE = REPO / "configs" / "tiny" / "finetune.yaml"


def _params(path: Path) -> dict:
    return json.loads((path / "trainable_parameters.json").read_text())


def test_stage1_then_stage2_through_cli(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path) -> None:
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    over = overrides(s1, synthetic_dir / "captions.json", tiny_base, training__max_steps=4)
    over = [o for o in over if not o.startswith("training.report_to")]  # default: tensorboard
    assert cli_main(["train", str(TINY_PRETRAIN), *over]) == 0
    p1 = _params(s1)
    assert p1["mining"][0] > 0 and p1["projector"][0] > 0
    assert p1["llm"][0] == p1["vision_lr"][0] == p1["vision_hr"][0] == 0
    info = json.loads((s1 / "run_info.json").read_text())
    assert info["seed"] == 42 and info["minigemini_version"] and info["git_commit"]
    assert load_config(s1 / "run_config.yaml").training.stage == "pretrain"
    assert list((s1 / "runs").rglob("events.out.tfevents*")), "tensorboard logs are the default"
    assert (s1 / "checkpoint-4" / "optimizer.pt").is_file() and (s1 / "mm_projector.safetensors").is_file()

    # stage 2 at lr 0: the loaded stage-1 connector must come out unchanged
    over2 = overrides(s2, synthetic_dir / "train.json", tiny_base, training__max_steps=2,
                           model__pretrained_adapter=s1, training__learning_rate=0.0)
    assert cli_main(["train", str(TINY_FINETUNE), *over2]) == 0
    p2 = _params(s2)
    assert p2["llm"][0] == p2["llm"][1] > 0 and p2["mining"][0] > 0 and p2["vision_lr"][0] == 0
    from safetensors.torch import load_file

    a, b = load_file(str(s1 / "mm_projector.safetensors")), load_file(str(s2 / "mm_projector.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = MiniGeminiForCausalLM.from_pretrained(s2).eval()
    processor = MiniGeminiProcessor.from_pretrained(s2)
    batch = processor("USER: <image>\nWhat color is the big shape? ASSISTANT:",
                      images=[synthetic_dir / "images" / "train_000000.png"])
    assert torch.isfinite(model(**batch).logits).all()
    from minigemini.data.model_chat_template import chat_template_for
    from minigemini.infer.generate import Generator

    auto = AutoProcessor.from_pretrained(s2)  # the export carries the model's chat template
    assert type(auto) is MiniGeminiProcessor and auto.chat_template == chat_template_for(auto.config, auto.tokenizer)
    messages = [{"role": "user", "content": "<image>\nWhat color is the big shape?"}]
    assert auto.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        Generator(model, processor).chat_prompt(messages)
    assert cli_main(["train", str(TINY_PRETRAIN), "training.lr=1"]) == 2  # config error: exit 2, one line


@pytest.mark.parametrize("stage", ["pretrain", "finetune", "finetune-bf16"])
def test_resume_gives_identical_losses(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                       stage1_dir: Path, stage: str, crash_at) -> None:
    if stage == "pretrain":  # 12 captions, 6 steps per epoch: resume mid-epoch, continue into epoch 2
        preset, data, total, k, extra = TINY_PRETRAIN, "captions.json", 7, 5, {}
    else:  # short (plain-template) samples keep it fast; the chat template is covered by the other tests
        preset, data, total, k = TINY_FINETUNE, "train.json", 6, 3
        extra = {"model__pretrained_adapter": stage1_dir, "data__template": "plain"}
    if stage.endswith("bf16"):  # autocast, frozen towers stored in bf16 (rebuilt and cast again on resume)
        extra["training__precision"] = "bf16"

    def cfg(out: Path):
        return load_config(preset, overrides(out, synthetic_dir / data, tiny_base, training__max_steps=total,
                                                  training__save_steps=k, training__resume_from_checkpoint="auto",
                                                  training__learning_rate=5e-3, **extra))

    full = run_training(cfg(tmp_path / "full")).losses
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg(tmp_path / "killed"), callbacks=[crash_at(k + 1)])
    assert (tmp_path / "killed" / f"checkpoint-{k}").is_dir()
    resumed = run_training(cfg(tmp_path / "killed"))
    assert resumed.global_step == total
    after = list(range(k + 1, total + 1))
    assert [resumed.losses[s] for s in after] == [full[s] for s in after], (full, resumed.losses)
    assert len(set(full.values())) > 1


def test_corrupt_image_is_reported_or_fails_fast(overrides, tmp_path: Path, copy_synthetic, tiny_base: Path) -> None:
    data = copy_synthetic()
    (data / "images" / "train_000003.png").write_bytes(b"this is not a png")
    over = overrides(tmp_path / "skip", data / "captions.json", tiny_base, training__max_steps=6,
                          training__save_strategy="no")
    result = run_training(load_config(TINY_PRETRAIN, over))
    assert result.global_step == 6
    assert result.skipped["count"] >= 1
    assert "train_000003_caption" in {s["sample_id"] for s in result.skipped["samples"]}
    saved = json.loads((tmp_path / "skip" / "skipped_samples.json").read_text())
    assert saved["count"] == result.skipped["count"] and "cannot read image" in saved["samples"][0]["reason"]

    over = overrides(tmp_path / "fail", data / "captions.json", tiny_base, training__max_steps=6,
                          training__save_strategy="no", data__on_bad_sample="fail")
    expected = r"(?s)train_000003_caption.*captions.json.*cannot read image.*on_bad_sample=skip"
    with pytest.raises(BadSampleError, match=expected):
        run_training(load_config(TINY_PRETRAIN, over))


class PoisonProjector(TrainerCallback):
    """Makes the projector output NaN from step `step` on."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.projector.register_forward_hook(
            lambda mod, inp, out: out * float("nan") if state.global_step + 1 == self.step else out)


def test_nonfinite_loss_stops_or_skips(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path) -> None:
    def cfg(out: Path, **extra):
        return load_config(TINY_PRETRAIN, overrides(out, synthetic_dir / "captions.json", tiny_base,
                                                         training__max_steps=3, training__save_strategy="no", **extra))

    expected = r"non-finite loss at step 2 .*: rank 0: loss nan, samples \['train_"
    with pytest.raises(NonFiniteLossError, match=expected):
        run_training(cfg(tmp_path / "stop"), callbacks=[PoisonProjector(2)])
    result = run_training(cfg(tmp_path / "skip", training__nan_policy="skip"), callbacks=[PoisonProjector(2)])
    assert result.global_step == 3 and [s["step"] for s in result.skipped["nonfinite_steps"]] == [2]
    model = result.trainer.model
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("frozen_dtype", ["auto", "fp32"])
def test_bf16_run_stores_frozen_weights_in_bf16(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                                frozen_dtype: str) -> None:
    """precision bf16 without DeepSpeed: frozen parts in bf16 (auto) or fp32; trained weights fp32; the export
    reloads with the same weights."""
    out = tmp_path / frozen_dtype
    cfg = load_config(TINY_PRETRAIN, overrides(out, synthetic_dir / "captions.json", tiny_base, training__max_steps=2,
                                               training__precision="bf16", model__frozen_dtype=frozen_dtype))
    result = run_training(cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in result.losses.values()) and len(result.losses) == 2
    model = result.trainer.model
    frozen = torch.bfloat16 if frozen_dtype == "auto" else torch.float32
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else frozen), name
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"mining", "projector"}
    reloaded = MiniGeminiForCausalLM.from_pretrained(out, dtype=torch.float32)
    trained = dict(model.named_parameters())
    for name, p in reloaded.named_parameters():
        assert torch.equal(p, trained[name].float()), name  # bf16 -> fp32 is exact


def test_frozen_dtype_rejects_unknown_value(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path) -> None:
    cfg = load_config(TINY_PRETRAIN, overrides(tmp_path, synthetic_dir / "captions.json", tiny_base,
                                               model__frozen_dtype="bf16"))
    with pytest.raises(ValueError, match="model.frozen_dtype must be one of auto, fp32, got 'bf16'"):
        run_training(cfg)
