"""Fault injection: each way a run can lose work is planted and must end in a clear error or a correct result.

Saving by role, strict loading, a half-written checkpoint, a run killed mid-save, SIGTERM (pre-emption),
`kill -9` then resume (same loss curve), `nan_policy=skip` (no update at all), bad config input (exit 2).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from minigemini import MiniGeminiForCausalLM
from minigemini.cli import main as cli_main
from minigemini.config import load_config
from minigemini.train import saving
from minigemini.train.run import run_training

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = REPO / "configs" / "tiny" / "pretrain.yaml"
TINY_FINETUNE = REPO / "configs" / "tiny" / "finetune.yaml"


def _cfg(overrides, out: Path, synthetic_dir: Path, tiny_base: Path, preset: Path = TINY_PRETRAIN, **extra):
    data = synthetic_dir / ("captions.json" if preset == TINY_PRETRAIN else "train.json")
    return load_config(preset, overrides(out, data, tiny_base, **extra))


def _subprocess_train(overrides, out: Path, synthetic_dir: Path, tiny_base: Path, **extra) -> subprocess.Popen:
    args = overrides(out, synthetic_dir / "captions.json", tiny_base, **extra)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "minigemini.train.run", str(TINY_PRETRAIN), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {path} appeared:\n{proc.stdout.read()}")
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.02)


# ---- saving by role, strict loading ---------------------------------------------------------------------------


def test_export_is_complete_whatever_the_folder_name(overrides, tmp_path: Path, synthetic_dir: Path,
                                                     tiny_base: Path) -> None:
    """A run whose output folder is called `checkpoints` still exports every weight (no random-init on load)."""
    out = tmp_path / "checkpoints"
    result = run_training(_cfg(overrides, out, synthetic_dir, tiny_base, training__max_steps=2,
                               training__save_steps=2))
    model = MiniGeminiForCausalLM.from_pretrained(out)  # strict: raises on any missing weight
    trained = dict(result.trainer.model.named_parameters())
    assert all(torch.equal(p, trained[n]) for n, p in model.named_parameters())
    # the checkpoint holds only the trained weights: loading it as a model is an error naming them
    with pytest.raises(ValueError, match=r"checkpoint-2: the weights do not fit the model: \d+ missing "
                                         r"\(language_model\..*allow_partial=True"):
        MiniGeminiForCausalLM.from_pretrained(out / "checkpoint-2")
    partial = MiniGeminiForCausalLM.from_pretrained(out / "checkpoint-2", allow_partial=True)
    assert torch.equal(partial.projector.state_dict()["0.weight"], model.projector.state_dict()["0.weight"])


def test_empty_or_partitioned_weights_are_never_written(tmp_path: Path) -> None:
    from minigemini.model.weights import save_weight_subset

    with pytest.raises(ValueError, match="no weights selected"):
        save_weight_subset({"a": torch.ones(2)}, tmp_path / "x.safetensors", keep={"b"})
    with pytest.raises(ValueError, match="empty .*stage3_gather_16bit_weights_on_model_save=true"):
        save_weight_subset({"a": torch.empty(0)}, tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_stage2_template_and_sources_under_init_from(overrides, tmp_path: Path, synthetic_dir: Path,
                                                     tiny_base: Path, stage1_dir: Path) -> None:
    """init_from: the stage-2 template override reaches the exported config; run_info names the real source."""
    out = tmp_path / "s2"
    run_training(_cfg(overrides, out, synthetic_dir, tiny_base, TINY_FINETUNE, training__max_steps=1,
                      training__save_strategy="no", model__init_from=stage1_dir, model__pretrained_adapter="null",
                      data__template="mistral_instruct"))
    assert json.loads((out / "config.json").read_text())["template"] == "mistral_instruct"
    sources = json.loads((out / "run_info.json").read_text())["model_sources"]
    assert sources["init_from"] == str(stage1_dir.resolve()) and "llm" not in sources
    assert sources["init_from_sources"]["llm"] == str(tiny_base / "llm")


# ---- checkpoints: atomic, interrupted saves ------------------------------------------------------------------


def test_half_written_checkpoints_are_not_resumed(overrides, tmp_path: Path, synthetic_dir: Path,
                                                  tiny_base: Path, capsys) -> None:
    out = tmp_path / "run"
    extra = dict(training__save_steps=2, training__save_total_limit="null", training__resume_from_checkpoint="auto")
    run_training(_cfg(overrides, out, synthetic_dir, tiny_base, training__max_steps=4, **extra))
    # plant: a checkpoint folder without trainer state (killed mid-save, old layout) and a staging leftover
    broken = out / "checkpoint-6"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"\0" * 10)
    (out / ".tmp-checkpoint-8" / "checkpoint-8").mkdir(parents=True)
    result = run_training(_cfg(overrides, out, synthetic_dir, tiny_base, training__max_steps=6, **extra))
    assert f"resuming from {out / 'checkpoint-4'}" in capsys.readouterr().out
    assert result.global_step == 6 and min(result.losses) == 1  # history from the checkpoint + steps 5, 6
    assert (out / ".incomplete-checkpoint-6").is_dir() and (out / ".incomplete-checkpoint-8").is_dir()
    assert (out / "checkpoint-6" / saving.COMPLETE_MARKER).is_file()  # the new, complete one


def test_run_killed_mid_save_resumes_from_previous_checkpoint(overrides, tmp_path: Path, synthetic_dir: Path,
                                                              tiny_base: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    real = saving.write_checkpoint

    def dies_at_step_4(model, folder, state):
        real(model, folder, state)
        if folder.name == "checkpoint-4":
            raise KeyboardInterrupt("killed while saving checkpoint-4")

    monkeypatch.setitem(saving.WRITERS, saving.CHECKPOINT, dies_at_step_4)
    extra = dict(training__save_steps=2, training__save_total_limit="null", training__resume_from_checkpoint="auto",
                 training__max_steps=6)
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(overrides, out, synthetic_dir, tiny_base, **extra))
    assert (out / "checkpoint-2").is_dir() and not (out / "checkpoint-4").exists()
    assert (out / ".tmp-checkpoint-4" / "checkpoint-4" / "model.safetensors").is_file()
    monkeypatch.setitem(saving.WRITERS, saving.CHECKPOINT, real)
    assert saving.latest_complete_checkpoint(out) == out / "checkpoint-2"
    assert run_training(_cfg(overrides, out, synthetic_dir, tiny_base, **extra)).global_step == 6


# ---- signals and kill -9 ---------------------------------------------------------------------------------------


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(overrides, tmp_path: Path, synthetic_dir: Path,
                                                      tiny_base: Path) -> None:
    out = tmp_path / "run"
    extra = dict(training__max_steps=400, training__save_steps=1000, training__resume_from_checkpoint="auto")
    proc = _subprocess_train(overrides, out, synthetic_dir, tiny_base, **extra)
    _wait_for(out / "run_info.json", proc)  # written after the handler is installed, before step 1
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, log
    assert "Traceback" not in log and "stopped by SIGTERM at step" in log
    (ckpt,) = [p for _, p in saving.checkpoint_folders(out)]
    step = int(ckpt.name.split("-")[1])
    assert 0 < step < 400 and (ckpt / "optimizer.pt").is_file() and (ckpt / saving.COMPLETE_MARKER).is_file()
    assert not (out / "config.json").exists(), "a pre-empted run writes no export"
    resumed = run_training(_cfg(overrides, out, synthetic_dir, tiny_base, **{**extra, "training__max_steps": step + 2}))
    assert resumed.global_step == step + 2 and resumed.stopped_by is None


def test_kill_9_then_resume_reproduces_the_loss_curve(overrides, tmp_path: Path, synthetic_dir: Path,
                                                      tiny_base: Path) -> None:
    extra = dict(training__max_steps=10, training__save_steps=3, training__resume_from_checkpoint="auto",
                 training__learning_rate=5e-3)
    full = run_training(_cfg(overrides, tmp_path / "full", synthetic_dir, tiny_base, **extra)).losses
    out = tmp_path / "killed"
    proc = _subprocess_train(overrides, out, synthetic_dir, tiny_base, **extra)
    _wait_for(out / "checkpoint-3", proc)  # appears complete (renamed into place)
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    k = int(saving.latest_complete_checkpoint(out).name.split("-")[1])
    assert k < 10
    resumed = run_training(_cfg(overrides, out, synthetic_dir, tiny_base, **extra))
    after = list(range(k + 1, 11))
    assert [resumed.losses[s] for s in after] == [full[s] for s in after], (k, full, resumed.losses)
    assert len(set(full.values())) > 1


# ---- nan_policy=skip --------------------------------------------------------------------------------------------


class PoisonProjector(TrainerCallback):
    """Projector output NaN in step `step`; records the projector weights after every step."""

    def __init__(self, step: int) -> None:
        self.step, self.weights = step, {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        model.projector.register_forward_hook(
            lambda mod, inp, out: out * float("nan") if state.global_step + 1 == self.step else out)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = model.projector.state_dict()["0.weight"].clone()


def test_nan_skip_leaves_optimizer_and_scheduler_untouched(overrides, tmp_path: Path, synthetic_dir: Path,
                                                           tiny_base: Path) -> None:
    poison = PoisonProjector(2)
    result = run_training(_cfg(overrides, tmp_path / "skip", synthetic_dir, tiny_base, training__max_steps=3,
                               training__save_strategy="no", training__nan_policy="skip",
                               training__weight_decay=0.1), callbacks=[poison])
    trainer = result.trainer
    assert [s["step"] for s in result.skipped["nonfinite_steps"]] == [2]
    assert torch.equal(poison.weights[1], poison.weights[2]), "the skipped step changed the weights"
    assert not torch.equal(poison.weights[2], poison.weights[3])
    steps = {float(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert steps == {2.0}, "AdamW stepped in the skipped step"
    assert trainer.lr_scheduler.last_epoch == 2, "the LR scheduler stepped in the skipped step"


def test_nan_report_survives_resume(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                    crash_at) -> None:
    out = tmp_path / "run"
    extra = dict(training__max_steps=4, training__save_steps=2, training__nan_policy="skip",
                 training__resume_from_checkpoint="auto")
    with pytest.raises(KeyboardInterrupt):
        run_training(_cfg(overrides, out, synthetic_dir, tiny_base, **extra), callbacks=[PoisonProjector(2), crash_at(3)])
    assert [s["step"] for s in saving.load_fault_report(out / "checkpoint-2")["nonfinite_steps"]] == [2]
    result = run_training(_cfg(overrides, out, synthetic_dir, tiny_base, **extra))
    assert result.global_step == 4 and [s["step"] for s in result.skipped["nonfinite_steps"]] == [2]
    assert json.loads((out / "skipped_samples.json").read_text())["nonfinite_steps"][0]["step"] == 2


# ---- bad config input: one line, exit 2 --------------------------------------------------------------------------


@pytest.mark.parametrize("text, over, message", [
    ("training:\n  max_steps: [1\n", [], r"bad.yaml:3:1: not valid YAML"),
    ("training:\n  learnng_rate: 1\n", [], r"unknown key\(s\) training.learnng_rate \(did you mean training.learning_rate\?\)"),
    ("training:\n  max_steps: many\n", [], r"training.max_steps='many' must be int"),
    ("include: [{pretrain}]\n", ["model.init_from=/nowhere", "data.train=[{data}]"], r"model.init_from: /nowhere does not exist"),
    ("include: [{pretrain}]\n", ["data.image_folder=/no/images", "data.train=[{data}]"], r"data.image_folder: /no/images is not a folder"),
], ids=["yaml", "unknown-key", "bad-value", "missing-init-from", "missing-image-folder"])
def test_config_errors_exit_2_with_one_line(tmp_path: Path, synthetic_dir: Path, capsys, text: str, over: list[str],
                                            message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("{pretrain}", str(TINY_PRETRAIN)))
    over = [o.replace("{data}", str(synthetic_dir / "captions.json")) for o in over]
    assert cli_main(["train", str(bad), *over]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(message, err), err


def test_launcher_entry_point_exits_2_and_traceback_on_request(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  max_steps: many\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "minigemini.train.run", str(bad)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().endswith("training.max_steps='many' must be int")
    assert "Traceback" not in run.stderr
    env["MINIGEMINI_TRACEBACK"] = "1"
    run = subprocess.run([sys.executable, "-m", "minigemini.train.run", str(bad)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" in run.stderr and "ConfigError" in run.stderr


def test_init_from_applies_attention_override(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                              stage1_dir: Path) -> None:
    result = run_training(_cfg(overrides, tmp_path / "s2", synthetic_dir, tiny_base, TINY_FINETUNE,
                               training__max_steps=1, training__save_strategy="no", training__export="false",
                               model__init_from=stage1_dir, model__pretrained_adapter="null",
                               model__attn_implementation="eager"))
    assert result.trainer.model.language_model.config._attn_implementation == "eager"


def test_slurm_script_checkpoints_and_requeues_on_usr1(overrides, tmp_path: Path, synthetic_dir: Path,
                                                       tiny_base: Path) -> None:
    """scripts/train_slurm.sbatch with stand-ins for srun / torchrun / scontrol (they pass the signal on as the real
    ones do): USR1 to the batch shell -> the rank checkpoints and stops -> `scontrol requeue`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shims = {"srun": 'while [[ "$1" == --* ]]; do shift; done\nexec "$@"',
             "torchrun": 'while [ "$1" != "-m" ]; do shift; done\nshift\nexec "$PYTHON" -m "$@"',
             "scontrol": 'if [ "$1" = show ]; then echo localhost; else echo "$@" >> "$REQUEUED"; fi'}
    for name, body in shims.items():
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "run"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable,
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "REQUEUED": str(tmp_path / "rq"),
           "SLURM_JOB_NODELIST": "localhost", "SLURM_GPUS_ON_NODE": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
           "SLURM_JOB_ID": "4242"}
    args = overrides(out, synthetic_dir / "captions.json", tiny_base, training__max_steps=400, training__save_steps=1000)
    proc = subprocess.Popen(["bash", str(REPO / "scripts" / "train_slurm.sbatch"), str(TINY_PRETRAIN), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait_for(out / "run_info.json", proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGUSR1)
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert "checkpoint written (exit 138); requeueing job 4242" in log and "stopped by SIGUSR1" in log, log
    assert (tmp_path / "rq").read_text().split() == ["requeue", "4242"]
    assert len(saving.checkpoint_folders(out)) == 1
    assert "resume_from_checkpoint: auto" in (out / "run_config.yaml").read_text()
