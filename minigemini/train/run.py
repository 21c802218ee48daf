"""Build model + data + trainer from a `RunConfig` and run it (`minigemini train CONFIG [k=v ...]`).

Also runnable as `python -m minigemini.train.run CONFIG [k=v ...]` (what the launchers in scripts/ call).
The output folder receives `run_config.yaml` (resolved config), `run_info.json` (seed, package
version, git commit, world size, data order), `trainable_parameters.json`, the checkpoints, the
final export, and `skipped_samples.json`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import RunConfig, load_config

logger = logging.getLogger("minigemini.train")

PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass
class TrainResult:
    """What a run produced: output folder, per-step losses, skip report, final step."""

    output_dir: Path
    losses: dict[int, float] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    trainable: dict[str, tuple[int, int]] = field(default_factory=dict)
    trainer: Any = None  # the MiniGeminiTrainer (model: trainer.model; DeepSpeed engine: trainer.model_wrapped)


def world_size_from_env() -> int:
    """World size set by the launcher (deepspeed / torchrun / Slurm), 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def gradient_accumulation(cfg: RunConfig, world: int) -> int:
    """Accumulation steps from `global_batch_size` (must divide evenly), else the explicit value or 1."""
    t = cfg.training
    if t.global_batch_size is None:
        return t.gradient_accumulation_steps or 1
    per_step = t.per_device_train_batch_size * world
    if t.global_batch_size % per_step:
        raise ValueError(f"training.global_batch_size={t.global_batch_size} is not a multiple of "
                         f"per_device_train_batch_size x world size = {t.per_device_train_batch_size} x {world}; "
                         "change one of them")
    ga = t.global_batch_size // per_step
    if t.gradient_accumulation_steps not in (None, ga):
        raise ValueError(f"training.gradient_accumulation_steps={t.gradient_accumulation_steps} contradicts "
                         f"global_batch_size={t.global_batch_size} (needs {ga}); set only one of them")
    return ga


def resolve_deepspeed_config(value: str | None) -> str | None:
    """A DeepSpeed JSON path; `zero2` etc. and `configs/deepspeed/...` also resolve inside the repository."""
    if not value:
        return None
    repo_configs = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
    for candidate in (Path(value), repo_configs / value, repo_configs / f"{value}.json",
                      repo_configs.parent.parent / value):
        if candidate.is_file():
            return str(candidate)
    raise FileNotFoundError(f"deepspeed.config {value!r} not found; give a JSON path or one of "
                            f"{sorted(p.stem for p in repo_configs.glob('*.json'))}")


def build_training_arguments(cfg: RunConfig) -> Any:
    """`transformers.TrainingArguments` for the run (create it BEFORE the model: ZeRO-3 partitions at load)."""
    from transformers import TrainingArguments

    t = cfg.training
    if t.precision not in PRECISIONS:
        raise ValueError(f"training.precision must be one of {PRECISIONS}, got {t.precision!r}")
    use_cpu = (not torch.cuda.is_available()) if t.use_cpu is None else t.use_cpu
    kwargs: dict[str, Any] = dict(
        output_dir=t.output_dir, seed=t.seed, num_train_epochs=t.num_train_epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation(cfg, world_size_from_env()),
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler_type, max_grad_norm=t.max_grad_norm,
        bf16=t.precision == "bf16", fp16=t.precision == "fp16", use_cpu=use_cpu,
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        logging_steps=t.logging_steps, logging_first_step=True, save_strategy=t.save_strategy,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, report_to=list(t.report_to),
        run_name=t.run_name, disable_tqdm=False, remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding", logging_nan_inf_filter=False,
        dataloader_num_workers=cfg.data.num_workers if t.dataloader_num_workers is None else t.dataloader_num_workers,
        ddp_find_unused_parameters=True, deepspeed=resolve_deepspeed_config(cfg.deepspeed.config),
    )
    kwargs.update(t.extra_args)
    return TrainingArguments(**kwargs)


def resolve_pack_length(cfg: RunConfig) -> int | None:
    """Row length for `data.packing` (`data.pack_length`, else `model.model_max_length`); None without packing."""
    d = cfg.data
    if not d.packing:
        if d.pack_length is not None:
            logger.warning("data.pack_length=%s has no effect while data.packing=false", d.pack_length)
        return None
    length = d.pack_length if d.pack_length is not None else cfg.model.model_max_length
    if length is None:
        raise ValueError("data.packing=true needs a row length: set data.pack_length=N (tokens per packed row) "
                         "or model.model_max_length=N")
    if int(length) <= 0:
        key = "data.pack_length" if d.pack_length is not None else "model.model_max_length"
        raise ValueError(f"data.packing=true: {key}={length} is not a positive row length; set data.pack_length=N")
    return int(length)


def check_packing_support(model: Any, attn_implementation: str | None) -> None:
    """Raise if the LLM would let packed samples attend to each other (see `data.packing.packing_problem`)."""
    from ..data.packing import packing_problem

    problem = packing_problem(model.language_model)
    if problem is not None:
        raise ValueError(f"data.packing=true cannot be used with this LLM (model.attn_implementation="
                         f"{attn_implementation!r}): {problem}; or train without packing (data.packing=false)")


def resolve_frozen_dtype(cfg: RunConfig, deepspeed_low_precision: bool) -> torch.dtype | None:
    """The dtype to store frozen weights in (`model.frozen_dtype`), or None to leave them as loaded
    (fp32 training, `frozen_dtype: fp32`, or DeepSpeed bf16/fp16, where every weight is already low precision)."""
    choice = cfg.model.frozen_dtype
    if choice not in ("auto", "fp32"):
        raise ValueError(f"model.frozen_dtype must be auto or fp32, got {choice!r}")
    if choice == "fp32" or deepspeed_low_precision:
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.training.precision)


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
    if model_spec is not None:  # where the weights really came from (e.g. the tiny preset's folders)
        info["model_sources"] = {k: getattr(model_spec, k, None) for k in
                                 ("llm", "tokenizer", "vision_lr", "vision_hr", "init_from", "pretrained_adapter")}
    (out / "run_info.json").write_text(json.dumps(info, indent=2, default=str))


def run_training(cfg: RunConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Run one training stage as configured (extra `TrainerCallback`s optional); returns losses, skip report,
    output folder and the trainer."""
    from transformers import set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from ..data.collate import DataCollator
    from ..data.dataset import LazySupervisedDataset
    from ..data.model_chat_template import set_chat_template
    from ..data.records import default_image_folder
    from ..logs import verbose
    from ..model.builder import build_model_and_processor, resolve_tiny
    from .lora import apply_lora, lora_base_path, qlora_load_kwargs
    from .progress import use_quiet_progress
    from .stages import PARTS, apply_stage, cast_frozen, format_report
    from .trainer import MiniGeminiTrainer

    t, lora = cfg.training, cfg.lora
    if not cfg.data.train:
        raise ValueError("data.train is empty: give the training JSON/JSONL file(s), e.g. data.train=[data/train.json]")
    pack_length = resolve_pack_length(cfg)  # config errors before any model is loaded
    args = build_training_arguments(cfg)  # before the model: sets up distributed + ZeRO-3 partitioning
    _ = args.device  # initialises the process group now (ZeRO-3 partitions the LLM while it loads)
    if args.deepspeed and args.world_size > 1:
        import deepspeed

        deepspeed.init_distributed()  # deepspeed.comm on the existing process group (zero.Init needs it)
    set_seed(t.seed)
    use_ds_bf16 = cfg.deepspeed.config is not None and t.precision in ("bf16", "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision, torch.float32) if use_ds_bf16 \
        else torch.float32  # without DeepSpeed: fp32 master weights + autocast
    frozen_dtype = resolve_frozen_dtype(cfg, use_ds_bf16)
    spec = copy.copy(cfg.model)
    if spec.preset == "tiny":
        with args.main_process_first(desc="tiny base model"):
            spec = resolve_tiny(spec, cfg.data.train)
    spec.llm_load_kwargs = qlora_load_kwargs(lora, dtype)
    model, processor = build_model_and_processor(spec, dtype=dtype)
    set_chat_template(processor)  # saved with every export
    if pack_length is not None:
        check_packing_support(model, spec.attn_implementation)
    if lora.enabled:
        apply_lora(model, lora, gradient_checkpointing=t.gradient_checkpointing, base=lora_base_path(spec))
    report = apply_stage(model, t.stage, t.unfreeze, lora=lora.enabled)
    if frozen_dtype is not None:  # QLoRA: the LLM stays as peft prepared it (quantized, norms in fp32)
        quantized = lora.enabled and lora.bits in (4, 8)
        cast_frozen(model, frozen_dtype, parts=("vision_lr", "vision_hr") if quantized else PARTS)
    text = format_report(report, t.stage + (" + LoRA" if lora.enabled else ""))
    if args.should_save and verbose():  # quiet: the caller prints one summary line (progress.summary_line)
        print(text, flush=True)
    dataset = LazySupervisedDataset(
        cfg.data.train, processor, template=cfg.data.template or None,
        image_folder=cfg.data.image_folder or default_image_folder(cfg.data.train[0]),
        max_length=cfg.model.model_max_length, on_error="skip")  # fail-fast is decided by the trainer on all ranks
    collator = DataCollator.from_processor(processor, return_sample_ids=True)
    if cfg.data.feature_cache:  # frozen-tower features from `minigemini prep cache-features` (checked: not stale)
        from ..data.feature_cache import CachedFeatureCollator, CachedFeatureDataset

        dataset = CachedFeatureDataset(dataset, cfg.data.feature_cache, model)
        collator = CachedFeatureCollator.from_processor(processor, return_sample_ids=True)
    if pack_length is not None:  # rows of several samples; also batches cached features (in packed order)
        from ..data.packing import PackingCollator

        collator = PackingCollator.from_processor(processor, return_sample_ids=True, pack_length=pack_length)
    trainer = MiniGeminiTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=processor,
        mm_learning_rate=t.mm_learning_rate, nan_policy=t.nan_policy, on_bad_sample=cfg.data.on_bad_sample,
        group_by_modality_length=cfg.data.group_by_modality_length, callbacks=list(callbacks) or None)
    use_quiet_progress(trainer, f"stage {t.stage}")
    if args.should_save:
        sampler = trainer._get_train_sampler()
        sampler_info = {"sampler": type(sampler).__name__, "seed": args.data_seed if args.data_seed is not None
                        else t.seed, "num_samples": len(dataset), "order_file": "data_order.json"}
        if hasattr(sampler, "indices"):  # deterministic (seed + epoch): record epoch 0's global order
            (Path(t.output_dir)).mkdir(parents=True, exist_ok=True)
            (Path(t.output_dir) / "data_order.json").write_text(json.dumps({"epoch": 0, "order": sampler.indices()}))
        write_run_files(cfg, args, sampler_info, spec)
        (Path(t.output_dir) / "trainable_parameters.json").write_text(json.dumps(report, indent=2))
    resume = t.resume_from_checkpoint
    if resume == "auto":
        resume = get_last_checkpoint(t.output_dir) if Path(t.output_dir).is_dir() else None
        if resume and args.should_save:
            print(f"resuming from {resume}", flush=True)
    trainer.train(resume_from_checkpoint=resume)
    if t.export:
        trainer.save_model(t.output_dir)
    trainer.save_state()
    skipped = trainer.skip_report()
    if args.should_save:
        (Path(t.output_dir) / "skipped_samples.json").write_text(json.dumps(skipped, indent=2))
        if verbose() or skipped["count"]:
            print(skip_summary(skipped, Path(t.output_dir) / "skipped_samples.json"), flush=True)
    losses = {int(h["step"]): float(h["loss"]) for h in trainer.state.log_history if "loss" in h}
    return TrainResult(Path(t.output_dir), losses, skipped, trainer.state.global_step, report, trainer)


def run_summary(result: TrainResult, seconds: float, exported: bool, lora: bool) -> str:
    """The run's last line: steps, final loss, wall time and where the model went."""
    loss = f"final loss {result.losses[max(result.losses)]:.4f}" if result.losses else "no loss logged"
    where = (f"{'LoRA adapter' if lora else 'model'} written to {result.output_dir.resolve()}" if exported
             else f"no export (training.export=false), checkpoints in {result.output_dir.resolve()}")
    return f"training done: {result.global_step} steps, {loss}, {seconds:.1f} s wall, {where}"


def skip_summary(skipped: dict[str, Any], where: Path, show: int = 10) -> str:
    """One line for the end of a run: how many samples were skipped, the first few, and the report file."""
    if not skipped["count"]:
        return "skipped samples: 0"
    first = ", ".join(f"{s.get('sample_id')} ({s.get('reason')})" for s in skipped["samples"][:show])
    return f"skipped samples: {skipped['count']} — {first}; details in {where}"


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down (a clean exit under deepspeed / torchrun)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m minigemini.train.run CONFIG [k=v ...]`."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--local_rank")]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m minigemini.train.run CONFIG.yaml [section.key=value ...]")
        return 2
    from ..logs import setup, verbose
    from .progress import print_run_summary

    setup(verbose_output=verbose())  # a launched rank: quiet unless the launching shell had --verbose
    logging.basicConfig(level=logging.INFO if verbose() else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    cfg, start = load_config(argv[0], argv[1:]), time.perf_counter()
    result = run_training(cfg)
    finish_distributed()
    print_run_summary(result, cfg, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
