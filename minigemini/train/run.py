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
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import RunConfig, load_config
from ..rules import check_run_config, check_template_tokenizer, resolve_deepspeed_config
from .run_record import write_start_files

logger = logging.getLogger("minigemini.train")


@dataclass
class TrainResult:
    """What a run produced: output folder, per-step losses, skip report, final step."""

    output_dir: Path
    losses: dict[int, float] = field(default_factory=dict)
    skipped: dict[str, Any] = field(default_factory=dict)
    global_step: int = 0
    trainable: dict[str, tuple[int, int]] = field(default_factory=dict)
    trainer: Any = None  # the MiniGeminiTrainer (model: trainer.model; DeepSpeed engine: trainer.model_wrapped)
    stopped_by: str | None = None  # "SIGTERM" / "SIGUSR1" when a pre-emption signal stopped the run


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


# TrainingArguments the run always sets this way (training.extra_args may change them; the typed options'
# fields may not: minigemini.rules.TYPED_ARGUMENTS)
FIXED_ARGUMENTS: dict[str, Any] = dict(
    logging_first_step=True, disable_tqdm=False, remove_unused_columns=False,
    include_num_input_tokens_seen="non_padding", logging_nan_inf_filter=False, ddp_find_unused_parameters=True)


def build_training_arguments(cfg: RunConfig) -> Any:
    """`transformers.TrainingArguments` for the run (create it BEFORE the model: ZeRO-3 partitions at load)."""
    from transformers import TrainingArguments

    return TrainingArguments(**{**typed_arguments(cfg), **FIXED_ARGUMENTS, **cfg.training.extra_args})


def typed_arguments(cfg: RunConfig) -> dict[str, Any]:
    """The TrainingArguments that the typed options of the run config set."""
    t = cfg.training
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
        logging_steps=t.logging_steps, save_strategy=t.save_strategy,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, report_to=list(t.report_to),
        run_name=t.run_name, dataloader_num_workers=cfg.data.num_workers,
        deepspeed=resolve_deepspeed_config(cfg.deepspeed.config),
    )
    return kwargs


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
    if cfg.model.frozen_dtype == "fp32" or deepspeed_low_precision:
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.training.precision)


def run_training(cfg: RunConfig, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Run one training stage as configured (extra `TrainerCallback`s optional); returns losses, skip report,
    output folder and the trainer. SIGTERM/SIGUSR1 save a checkpoint and stop (`TrainResult.stopped_by`)."""
    from .preemption import PreemptionCallback

    check_run_config(cfg)  # 1. every option rule, before anything is loaded
    preemption = PreemptionCallback().install()  # SIGTERM/SIGUSR1 from now on: checkpoint + stop
    try:
        pack_length = resolve_pack_length(cfg)
        args = prepare_arguments(cfg)  # 2. TrainingArguments + process group (before the model: ZeRO-3)
        spec, template = resolve_model_spec(cfg, args)  # 3. tiny base / init_from; template x tokenizer
        model, processor, report = build_model(cfg, spec, args, pack_length, template)  # 4. model + stage table
        dataset, collator = build_data(cfg, processor, model, pack_length)  # 5. data
        trainer = build_trainer(cfg, args, model, processor, dataset, collator, [preemption, *callbacks])
        if args.should_save:  # 6. what the run is, before it starts
            write_start_files(cfg, args, trainer, dataset, spec, report)
        trainer.train(resume_from_checkpoint=find_resume_checkpoint(cfg, args))  # 7. train
        return finish_run(cfg, args, trainer, report, preemption.received)  # 8. export + reports
    finally:
        preemption.restore()


def prepare_arguments(cfg: RunConfig) -> Any:
    """`TrainingArguments`, the process group (ZeRO-3 partitions the LLM while it loads) and the seed."""
    from transformers import set_seed

    args = build_training_arguments(cfg)
    _ = args.device  # initialises the process group now
    if args.deepspeed and args.world_size > 1:
        import deepspeed

        deepspeed.init_distributed()  # deepspeed.comm on the existing process group (zero.Init needs it)
    set_seed(cfg.training.seed)
    return args


def training_dtypes(cfg: RunConfig) -> tuple[torch.dtype, torch.dtype | None]:
    """(dtype to load the model in, dtype for the frozen weights or None)."""
    t = cfg.training
    use_ds_low = cfg.deepspeed.config is not None and t.precision in ("bf16", "fp16")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision, torch.float32) if use_ds_low \
        else torch.float32  # without DeepSpeed: fp32 master weights + autocast
    return dtype, resolve_frozen_dtype(cfg, use_ds_low)


def resolve_model_spec(cfg: RunConfig, args: Any) -> tuple[Any, str | None]:
    """The model spec to build (the tiny base's folders written once, or a saved model: `init_from`) and the
    template for the model's config (`template_choice`); the data's template is checked against the tokenizer
    (loaded alone, before the model)."""
    from transformers import AutoTokenizer

    from .template_choice import config_template, data_template
    from .tiny_base import resolve_tiny

    spec = copy.copy(cfg.model)
    if spec.init_from:
        spec.tiny = None  # the saved model is the base; the tiny base's folders are not needed
    elif spec.tiny is not None:
        with args.main_process_first(desc="tiny base model"):
            spec = resolve_tiny(spec, cfg.data.train)
    if spec.init_from and not cfg.data.template:
        return spec, None  # the saved model's own template, checked when it was trained
    tokenizer = AutoTokenizer.from_pretrained(spec.init_from or spec.tokenizer or spec.llm, trust_remote_code=False)
    template = data_template(cfg, spec, tokenizer)
    key = "data.template" if cfg.data.template else f"data.template (null: the LLM family's, {template})"
    check_template_tokenizer(template, tokenizer, key)
    return spec, config_template(cfg, spec, tokenizer)


def build_model(cfg: RunConfig, spec: Any, args: Any, pack_length: int | None,
                template: str | None = None) -> tuple[Any, Any, dict]:
    """Model + processor, LoRA, the stage table (printed), frozen weights cast; `template` (the stage-2 one, see
    `template_choice`) into the model's config, so the export answers in the template it was trained with."""
    from ..data.model_chat_template import set_chat_template
    from ..logs import verbose
    from ..model.builder import build_model_and_processor
    from .lora import apply_lora, lora_base_path, qlora_load_kwargs
    from .stages import PARTS, apply_stage, cast_frozen, format_report

    t, lora = cfg.training, cfg.lora
    dtype, frozen_dtype = training_dtypes(cfg)
    spec.llm_load_kwargs = qlora_load_kwargs(lora, dtype)
    model, processor = build_model_and_processor(spec, dtype=dtype, template=template)
    if pack_length is not None:
        check_packing_support(model, spec.attn_implementation)
    set_chat_template(processor)  # saved with every export, from the template the model answers in
    if lora.enabled:
        apply_lora(model, lora, gradient_checkpointing=t.gradient_checkpointing, base=lora_base_path(spec))
    report = apply_stage(model, t.stage, t.unfreeze, lora=lora.enabled)
    if frozen_dtype is not None:  # QLoRA: the LLM stays as peft prepared it (quantized, norms in fp32)
        quantized = lora.enabled and lora.bits in (4, 8)
        cast_frozen(model, frozen_dtype, parts=("vision_lr", "vision_hr") if quantized else PARTS)
    if args.should_save and verbose():  # quiet: the caller prints one summary line
        print(format_report(report, t.stage + (" + LoRA" if lora.enabled else "")), flush=True)
    return model, processor, report


def build_data(cfg: RunConfig, processor: Any, model: Any, pack_length: int | None) -> tuple[Any, Any]:
    """The lazy dataset (or the feature cache over it) and its collator (padding or packing)."""
    from ..data.collate import DataCollator
    from ..data.dataset import LazySupervisedDataset
    from ..data.records import default_image_folder

    dataset: Any = LazySupervisedDataset(
        cfg.data.train, processor, template=cfg.data.template or None,
        image_folder=cfg.data.image_folder or default_image_folder(cfg.data.train[0]),
        max_length=cfg.model.model_max_length, on_error="skip")  # fail-fast is decided by the trainer on all ranks
    collator: Any = DataCollator.from_processor(processor, return_sample_ids=True)
    if cfg.data.feature_cache:  # frozen-tower features from `minigemini prep cache-features` (checked: not stale)
        from ..data.feature_cache import CachedFeatureCollator, CachedFeatureDataset

        dataset = CachedFeatureDataset(dataset, cfg.data.feature_cache, model)
        collator = CachedFeatureCollator.from_processor(processor, return_sample_ids=True)
    if pack_length is not None:  # rows of several samples; also batches cached features (in packed order)
        from ..data.packing import PackingCollator

        collator = PackingCollator.from_processor(processor, return_sample_ids=True, pack_length=pack_length)
    return dataset, collator


def build_trainer(cfg: RunConfig, args: Any, model: Any, processor: Any, dataset: Any, collator: Any,
                  callbacks: list[Any]) -> Any:
    """The `MiniGeminiTrainer` with the run's options."""
    from .progress import use_quiet_progress
    from .trainer import MiniGeminiTrainer

    t = cfg.training
    trainer = MiniGeminiTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, processing_class=processor,
        mm_learning_rate=t.mm_learning_rate, nan_policy=t.nan_policy, on_bad_sample=cfg.data.on_bad_sample,
        group_by_modality_length=cfg.data.group_by_modality_length, callbacks=callbacks)
    use_quiet_progress(trainer, f"stage {t.stage}")
    return trainer


def find_resume_checkpoint(cfg: RunConfig, args: Any) -> str | None:
    """`resume_from_checkpoint`: a path, or `auto` = the newest COMPLETE checkpoint in output_dir (leftovers of
    an interrupted save are set aside by the main process first), or None."""
    from .saving import latest_complete_checkpoint

    resume = cfg.training.resume_from_checkpoint
    if resume != "auto":
        return resume
    with args.main_process_first(desc="find checkpoint"):
        found = latest_complete_checkpoint(cfg.training.output_dir)
    if found and args.should_save:
        print(f"resuming from {found}", flush=True)
    return str(found) if found else None


def finish_run(cfg: RunConfig, args: Any, trainer: Any, report: dict, stopped_by: str | None) -> TrainResult:
    """The export (not after a pre-emption stop: the checkpoint is the result then), trainer state, skip report."""
    from ..logs import verbose

    t = cfg.training
    if t.export and not stopped_by:
        trainer.save_model(t.output_dir)
    trainer.save_state()
    skipped = trainer.skip_report()
    if args.should_save:
        (Path(t.output_dir) / "skipped_samples.json").write_text(json.dumps(skipped, indent=2))
        if verbose() or skipped["count"]:
            print(skip_summary(skipped, Path(t.output_dir) / "skipped_samples.json"), flush=True)
        if stopped_by:
            print(f"stopped by {stopped_by} at step {trainer.state.global_step}: checkpoint written; rerun with "
                  "training.resume_from_checkpoint=auto to continue", flush=True)
    losses = {int(h["step"]): float(h["loss"]) for h in trainer.state.log_history if "loss" in h}
    return TrainResult(Path(t.output_dir), losses, skipped, trainer.state.global_step, report, trainer, stopped_by)


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
    """`python -m minigemini.train.run CONFIG [k=v ...]` (what the launchers run on every rank): bad input ends
    with one line and exit code 2 (MINIGEMINI_TRACEBACK=1 shows the traceback); a pre-emption stop with 128 + signal."""
    argv = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("--local_rank")]
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m minigemini.train.run CONFIG.yaml [section.key=value ...]")
        return 2
    from ..logs import setup, verbose
    from .progress import print_run_summary

    setup(verbose_output=verbose())  # a launched rank: quiet unless the launching shell had --verbose
    logging.basicConfig(level=logging.INFO if verbose() else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    start = time.perf_counter()
    try:
        cfg = load_config(argv[0], argv[1:])
        result = run_training(cfg)
    except (ValueError, OSError) as exc:
        if os.environ.get("MINIGEMINI_TRACEBACK"):
            raise
        print(f"minigemini train: error: {exc}", file=sys.stderr)
        return 2
    finish_distributed()
    if not result.stopped_by:
        print_run_summary(result, cfg, time.perf_counter() - start)
    return exit_code(result)


def exit_code(result: TrainResult) -> int:
    """0, or 128 + the signal number when SIGTERM/SIGUSR1 stopped the run after its checkpoint."""
    import signal

    return 128 + int(getattr(signal, result.stopped_by)) if result.stopped_by else 0


if __name__ == "__main__":
    sys.exit(main())
