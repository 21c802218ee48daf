"""Two CPU ranks under DeepSpeed ZeRO-2 and ZeRO-3 (DS_ACCELERATOR=cpu, bf16), launched with `deepspeed`.

ZeRO-2 trains stage 1, ZeRO-3 trains stage 2 (full LLM); the loss must go down over a couple of dozen
steps, and the ZeRO-3 export must load with `from_pretrained` and give the logits of the gathered engine weights.
DeepSpeed's first run on a machine compiles a small communication op (about a minute); later runs reuse it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigemini import MiniGeminiForCausalLM, MiniGeminiProcessor

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CONFIGS = REPO / "configs" / "tiny"
DEEPSPEED = Path(sys.executable).with_name("deepspeed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: Path, overrides: list[str], log: Path, expect_ok: bool = True, script: bool = False) -> str:
    """2 CPU ranks: `deepspeed ds_worker.py ...`, or (script=True) the user-facing scripts/train_deepspeed.sh."""
    if not DEEPSPEED.exists():
        pytest.skip(f"deepspeed launcher not found beside {sys.executable}")
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1", "NUM_GPUS": "2", "MASTER_PORT": str(_free_port()),
           "PATH": f"{DEEPSPEED.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if script:
        cmd = ["bash", str(REPO / "scripts" / "train_deepspeed.sh"), str(config), *overrides]
    else:
        cmd = [str(DEEPSPEED), "--no_local_rank", "--num_gpus", "2", "--master_port", env["MASTER_PORT"],
               str(HERE / "ds_worker.py"), str(config), *overrides]
    proc = subprocess.run(cmd, env=env, cwd=log.parent, capture_output=True, text=True, timeout=900)
    log.write_text(proc.stdout + proc.stderr)
    if expect_ok:
        assert proc.returncode == 0, f"deepspeed run failed (log {log}):\n{(proc.stdout + proc.stderr)[-6000:]}"
    else:
        assert proc.returncode != 0, f"the run should have failed (log {log})"
    return proc.stdout + proc.stderr


def _decreasing(losses: dict[str, float]) -> tuple[float, float]:
    values = [losses[k] for k in sorted(losses, key=int)]
    head, tail = values[:4], values[-4:]
    return sum(head) / len(head), sum(tail) / len(tail)


def test_zero2_two_ranks_loss_decreases(overrides, tmp_path: Path, copy_synthetic, tiny_base: Path) -> None:
    """Also trains on packed rows (data.packing: each rank packs its 2 samples into one row)."""
    data = copy_synthetic()
    (data / "images" / "train_000005.png").write_bytes(b"corrupt")  # skipped and reported, the run goes on
    out = tmp_path / "zero2"
    over = overrides(out, data / "captions.json", tiny_base, training__max_steps=24,
                     training__learning_rate=1e-2, training__precision="bf16", training__save_strategy="no",
                     deepspeed__config="zero2", data__packing="true", data__pack_length=256)
    _launch(CONFIGS / "pretrain.yaml", over, tmp_path / "zero2.log")
    info = json.loads((out / "losses.json").read_text())
    assert info["world_size"] == 2 and not info["zero3"] and len(info["losses"]) == 24
    assert len(info["padding_fraction"]) == 24 and max(info["padding_fraction"]) < 0.5, info["padding_fraction"]
    first, last = _decreasing(info["losses"])
    assert last < first - 0.05, info["losses"]
    assert (out / "mm_projector.safetensors").is_file() and (out / "model.safetensors").is_file()
    skipped = json.loads((out / "skipped_samples.json").read_text())
    assert skipped["count"] >= 1 and {s["sample_id"] for s in skipped["samples"]} == {"train_000005_caption"}


def test_bad_sample_fail_fast_stops_every_rank(overrides, tmp_path: Path, copy_synthetic, tiny_base: Path) -> None:
    data = copy_synthetic()
    (data / "images" / "train_000002.png").write_bytes(b"corrupt")
    records = json.loads((data / "captions.json").read_text())[:4]  # one step of 2 ranks x 2 holds all four
    (data / "four.json").write_text(json.dumps(records))
    over = overrides(tmp_path / "failfast", data / "four.json", tiny_base, training__max_steps=3,
                     training__save_strategy="no", data__on_bad_sample="fail", deepspeed__config="zero2")
    log = _launch(CONFIGS / "pretrain.yaml", over, tmp_path / "failfast.log", expect_ok=False, script=True)
    for rank in (0, 1):
        assert f"[rank{rank}]: minigemini.train.trainer.BadSampleError: step 1" in log, log[-3000:]
    assert "train_000002_caption" in log and "four.json" in log


def test_zero3_two_ranks_export_matches_engine(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                               stage1_dir: Path) -> None:
    out = tmp_path / "zero3"
    over = overrides(out, synthetic_dir / "train.json", tiny_base, training__max_steps=20, data__template="plain",
                     training__learning_rate=2e-3, training__precision="bf16", training__save_steps=10,
                     model__pretrained_adapter=stage1_dir, deepspeed__config="zero3")
    _launch(CONFIGS / "finetune.yaml", over, tmp_path / "zero3.log")
    info = json.loads((out / "losses.json").read_text())
    assert info["world_size"] == 2 and info["zero3"]
    first, last = _decreasing(info["losses"])
    assert last < first - 0.05, info["losses"]
    assert (out / "checkpoint-20" / "global_step20").is_dir(), "DeepSpeed checkpoint with the full state"

    from safetensors.torch import load_file

    engine = load_file(str(out / "engine_state.safetensors"))
    exported = MiniGeminiForCausalLM.from_pretrained(out).eval()
    state = exported.state_dict()
    assert set(engine) <= set(state)
    assert all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in engine.items())
    reference = MiniGeminiForCausalLM.from_pretrained(out).eval()
    reference.load_state_dict(engine, strict=False)
    processor = MiniGeminiProcessor.from_pretrained(out)
    batch = processor("<image>\n", images=[synthetic_dir / "images" / "train_000001.png"])
    with torch.no_grad():
        assert torch.equal(exported(**batch).logits, reference(**batch).logits)
