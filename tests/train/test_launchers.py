"""The launchers in scripts/: per-rank threads (cores ÷ local ranks unless set), the command they run."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from minigemini.train.run import TrainResult, run_summary

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _dry_run(script: str, *args: str, cwd: Path = SCRIPTS.parent, **env: str) -> tuple[dict[str, str], list[str], str]:
    """(env assignments, command words, stderr) that `script` would exec, from its DRY_RUN=1 output."""
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CORES", "NUM_GPUS", "NPROC")}
    proc = subprocess.run(["bash", str(SCRIPTS / script), *args], env={**base, "DRY_RUN": "1", **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    words = shlex.split(proc.stdout)
    assignments = dict(w.split("=", 1) for w in words[:1])
    return assignments, words[1:], proc.stderr


@pytest.mark.parametrize(("cores", "ranks", "threads"), [("7", "2", "3"), ("64", "8", "8"), ("2", "4", "1")])
def test_deepspeed_threads_are_cores_over_local_ranks(cores, ranks, threads):
    env, cmd, err = _dry_run("train_deepspeed.sh", "cfg.yaml", "training.x=1", "data.train=[a b.json]",
                             CORES=cores, NUM_GPUS=ranks)
    assert env == {"OMP_NUM_THREADS": threads}
    assert cmd == ["deepspeed", "--num_gpus", ranks, "--master_port", "29500", "--module", "minigemini.train.run",
                   "cfg.yaml", "training.x=1", "data.train=[a b.json]"]
    assert f"OMP_NUM_THREADS={threads} per rank ({cores} cores / {ranks} local ranks)" in err


def test_default_cores_are_the_cpus_this_process_may_use():
    cores = len(os.sched_getaffinity(0))
    env, _, err = _dry_run("train_torchrun.sh", "cfg.yaml", NPROC="2", OMP_THREAD_LIMIT="1")  # nproc would say 1
    assert env["OMP_NUM_THREADS"] == str(max(1, cores // 2))
    assert f"({cores} cores / 2 local ranks)" in err


def test_user_setting_wins_and_torchrun_command():
    env, cmd, err = _dry_run("train_torchrun.sh", "cfg.yaml", OMP_NUM_THREADS="5", NPROC="2", CORES="64")
    assert env == {"OMP_NUM_THREADS": "5"} and "(set by you)" in err
    assert cmd[:7] == ["torchrun", "--nnodes", "1", "--node_rank", "0", "--nproc_per_node", "2"]
    assert cmd[-3:] == ["-m", "minigemini.train.run", "cfg.yaml"]


def test_slurm_uses_cpus_per_task_over_gpus_per_node(tmp_path):
    env, cmd, _ = _dry_run("train_slurm.sbatch", "cfg.yaml", "k=v", cwd=tmp_path,
                           SLURM_SUBMIT_DIR=str(SCRIPTS.parent), MASTER_ADDR="node0",
                           SLURM_GPUS_ON_NODE="4", SLURM_CPUS_PER_TASK="64")
    assert env == {"OMP_NUM_THREADS": "16"}
    assert cmd[:2] == ["srun", "--kill-on-bad-exit=1"]
    assert cmd[-4:] == ["4", "cfg.yaml", "k=v", "training.resume_from_checkpoint=auto"]  # requeued jobs resume


def test_per_rank_threads_refuses_zero_ranks():
    proc = subprocess.run(["bash", "-c", f"source {SCRIPTS / 'rank_threads.sh'}; per_rank_threads 0 8"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 2 and "must be positive integers" in proc.stderr


def test_run_summary_line(tmp_path):
    result = TrainResult(tmp_path / "out", {1: 2.5, 3: 1.23456}, global_step=3)
    line = run_summary(result, 12.34, exported=True, lora=True)
    assert line == f"training done: 3 steps, final loss 1.2346, 12.3 s wall, LoRA adapter written to {tmp_path / 'out'}"
    line = run_summary(TrainResult(tmp_path, {}, global_step=0), 1.0, exported=False, lora=False)
    assert "no loss logged" in line and "no export (training.export=false)" in line
