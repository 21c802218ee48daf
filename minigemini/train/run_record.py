"""What a run records about itself before it starts: `run_config.yaml` (the resolved config), `run_info.json`
(seed, data seed, package version, git commit, world size, where the weights came from), `data_order.json`
(epoch 0's sample order) and `trainable_parameters.json`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig


def git_commit() -> str:
    """The package's git commit (+ "-dirty"), or "unknown" outside a checkout."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        if sha.returncode:
            return "unknown"
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_run_files(cfg: RunConfig, args: Any, sampler_info: dict[str, Any], model_spec: Any = None) -> None:
    """Resolved config, seed, version, commit and data order into the output folder (main process)."""
    from .. import __version__

    out = Path(cfg.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "run_config.yaml")
    info = {"seed": cfg.training.seed, "data_seed": args.data_seed if args.data_seed is not None else cfg.training.seed,
            "minigemini_version": __version__, "git_commit": git_commit(), "world_size": args.world_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
            "global_batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
            "torch": torch.__version__, "command": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "data_order": sampler_info}
    if model_spec is not None:  # where the weights really came from (e.g. the model.tiny base's folders)
        info["model_sources"] = model_sources(model_spec)
    (out / "run_info.json").write_text(json.dumps(info, indent=2, default=str))


def model_sources(spec: Any) -> dict[str, Any]:
    """Where the weights came from: the parts' sources, or (under `init_from`) that folder and what it recorded."""
    if not spec.init_from:
        return {k: getattr(spec, k, None) for k in ("llm", "tokenizer", "vision_lr", "vision_hr", "pretrained_adapter")}
    sources: dict[str, Any] = {"init_from": str(Path(spec.init_from).resolve()),
                               "pretrained_adapter": spec.pretrained_adapter}
    earlier = Path(spec.init_from) / "run_info.json"
    if earlier.is_file():  # a training run's export: its own sources
        sources["init_from_sources"] = json.loads(earlier.read_text()).get("model_sources")
    return sources


def write_start_files(cfg: RunConfig, args: Any, trainer: Any, dataset: Any, spec: Any, report: dict) -> None:
    """run_config.yaml, run_info.json, data_order.json, trainable_parameters.json (main process)."""
    out = Path(cfg.training.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampler = trainer._get_train_sampler()
    sampler_info = {"sampler": type(sampler).__name__, "seed": args.data_seed if args.data_seed is not None
                    else cfg.training.seed, "num_samples": len(dataset), "order_file": "data_order.json"}
    if hasattr(sampler, "indices"):  # deterministic (seed + epoch): record epoch 0's global order
        (out / "data_order.json").write_text(json.dumps({"epoch": 0, "order": sampler.indices()}))
    write_run_files(cfg, args, sampler_info, spec)
    (out / "trainable_parameters.json").write_text(json.dumps(report, indent=2))
