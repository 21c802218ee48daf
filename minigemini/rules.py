"""ONE place for the rules between options of a run, checked before any model is built.

Each rule is a function of the resolved `RunConfig` that returns None or a one-line message naming the
option to change; `check_run_config` runs them all and raises `RuleError` (a `ConfigError`: the CLI
prints it and exits 2). `check_template_tokenizer` is the one rule that needs the tokenizer (loaded
alone, before the model). `select_feature` values are checked by `MiniGeminiConfig` itself (the model
package imports nothing from here); `tests/train/test_rules.py` has one row per rule.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from .config import ConfigError, RunConfig

PRECISIONS = ("bf16", "fp16", "fp32")
PACKING_ATTENTION = ("sdpa", "eager", "flex_attention", "flash_attention_2")
# model.* fields that describe the architecture: a saved model (model.init_from) already fixes them
INIT_FROM_FIXED = ("llm", "tokenizer", "vision_lr", "vision_hr", "vision_hr_arch", "select_layer", "image_size",
                   "image_size_aux", "image_grid", "image_global", "image_aspect_ratio", "use_hr", "projector_type")
REPO_DEEPSPEED = Path(__file__).resolve().parents[1] / "configs" / "deepspeed"


class RuleError(ConfigError):
    """Options that do not work together (or a value/path that cannot work); the message says what to change."""


def resolve_deepspeed_config(value: str | None) -> str | None:
    """A DeepSpeed JSON path; `zero2` etc. and `configs/deepspeed/...` also resolve inside the repository."""
    if not value:
        return None
    for candidate in (Path(value), REPO_DEEPSPEED / value, REPO_DEEPSPEED / f"{value}.json",
                      REPO_DEEPSPEED.parent.parent / value):
        if candidate.is_file():
            return str(candidate)
    raise RuleError(f"deepspeed.config {value!r} not found; give a JSON path or one of "
                    f"{sorted(p.stem for p in REPO_DEEPSPEED.glob('*.json'))}")


def _zero(cfg: RunConfig) -> dict[str, Any]:
    path = resolve_deepspeed_config(cfg.deepspeed.config)
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text()).get("zero_optimization", {}) or {}
    except json.JSONDecodeError as exc:
        raise RuleError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}); fix deepspeed.config's file") from None


# ---- values and paths ------------------------------------------------------------------------------------


def values(cfg: RunConfig) -> str | None:
    """Options with a fixed set of values."""
    t = cfg.training
    for key, value, valid in (("training.precision", t.precision, PRECISIONS),
                              ("model.frozen_dtype", cfg.model.frozen_dtype, ("auto", "fp32")),
                              ("training.nan_policy", t.nan_policy, ("stop", "skip")),
                              ("data.on_bad_sample", cfg.data.on_bad_sample, ("skip", "fail"))):
        if value not in valid:
            return f"{key} must be one of {', '.join(str(v) for v in valid if v)}, got {value!r}"
    return None


def paths(cfg: RunConfig) -> str | None:
    """Files and folders the run reads must exist (before a model is built, and before a hub lookup)."""
    d, m = cfg.data, cfg.model
    if not d.train:
        return "data.train is empty: give the training JSON/JSONL file(s), e.g. data.train=[data/train.json]"
    for f in d.train:
        if not Path(f).is_file():
            return f"data.train: {f} does not exist; fix the path in data.train"
    folder = Path(d.image_folder) if d.image_folder else Path(d.train[0]).parent
    if not folder.is_dir():
        return f"data.image_folder: {folder} is not a folder; set data.image_folder to where the images are"
    for key, value in (("model.init_from", m.init_from), ("model.pretrained_adapter", m.pretrained_adapter),
                       ("data.feature_cache", d.feature_cache)):
        if value and not Path(value).exists():
            return f"{key}: {value} does not exist; give a local folder (saved model / stage-1 output / cache)"
    if m.init_from and not (Path(m.init_from) / "config.json").is_file():
        return f"model.init_from: {m.init_from} has no config.json; give a saved minigemini model folder"
    return None


# ---- cross-option rules ----------------------------------------------------------------------------------


def feature_cache_x_towers(cfg: RunConfig) -> str | None:
    towers = [p for p in cfg.training.unfreeze if p in ("vision_lr", "vision_hr")]
    if cfg.data.feature_cache and towers:
        return (f"data.feature_cache holds frozen-tower features, so training.unfreeze={towers} would train nothing "
                "for the towers: remove them from training.unfreeze or set data.feature_cache=null")
    return None


def packing_x_attention(cfg: RunConfig) -> str | None:
    attn = cfg.model.attn_implementation or "sdpa"
    if cfg.data.packing and attn not in PACKING_ATTENTION:
        return (f"data.packing=true cannot be used with model.attn_implementation={attn!r} (it does not restart "
                f"attention at each sample): use one that does: {', '.join(PACKING_ATTENTION)}; or data.packing=false")
    return None


def deepspeed_x_save_only_model(cfg: RunConfig) -> str | None:
    if cfg.deepspeed.config and cfg.training.extra_args.get("save_only_model"):
        return ("training.extra_args.save_only_model=true under DeepSpeed writes checkpoints without weights "
                "(DeepSpeed saves them with the optimizer state): remove save_only_model")
    return None


def zero3_x_export(cfg: RunConfig) -> str | None:
    zero = _zero(cfg)
    gather = zero.get("stage3_gather_16bit_weights_on_model_save")
    if int(zero.get("stage", 0) or 0) == 3 and (cfg.training.export or cfg.lora.enabled) and gather is not True:
        return (f"ZeRO-3 ({cfg.deepspeed.config}) keeps weights partitioned, so the export (and merge-lora) would "
                "write empty weight files: set zero_optimization.stage3_gather_16bit_weights_on_model_save=true "
                "in that JSON, or training.export=false")
    return None


def deepspeed_x_nan_skip(cfg: RunConfig) -> str | None:
    if cfg.deepspeed.config and cfg.training.nan_policy == "skip":
        return "training.nan_policy=skip is not supported under DeepSpeed (its engine owns the step): use nan_policy=stop"
    return None


def init_from_x_model(cfg: RunConfig) -> str | None:
    """Architecture fields are fixed by the saved model; a different value would be ignored, so it is refused."""
    m = cfg.model
    if not m.init_from:
        return None
    from .config import ModelConfig

    default = ModelConfig()
    changed = [k for k in INIT_FROM_FIXED if getattr(m, k) != getattr(default, k)]
    if m.tiny is not None:  # the tiny base fills these itself; they are not the user's
        changed = [k for k in changed if k not in ("llm", "tokenizer", "vision_lr", "vision_hr")]
    if changed:
        return (f"model.init_from={m.init_from} fixes the architecture, so model.{changed[0]} (and "
                f"{len(changed) - 1} more: {changed[1:]}) cannot apply: remove them (data.template, "
                "model.model_max_length and model.attn_implementation do apply)")
    return None


def quantisation_x_stage(cfg: RunConfig) -> str | None:
    lora, stage = cfg.lora, cfg.training.stage
    if lora.bits not in (4, 8, 16):
        return f"lora.bits must be 4, 8 or 16, got {lora.bits}"
    if lora.bits < 16 and not lora.enabled:
        return f"lora.bits={lora.bits} quantizes the LLM for QLoRA only: set lora.enabled=true or lora.bits=16"
    if lora.enabled and "llm" not in _trainable(cfg):
        return (f"lora.enabled=true but training.stage={stage} does not train the LLM: use training.stage=finetune "
                "(or add llm to training.unfreeze)")
    if lora.bits < 16 and cfg.deepspeed.config and int(_zero(cfg).get("stage", 0) or 0) == 3:
        return f"lora.bits={lora.bits} (QLoRA) cannot be partitioned by ZeRO-3: use zero2 or lora.bits=16"
    return None


def _trainable(cfg: RunConfig) -> tuple[str, ...]:
    from .train.stages import trainable_parts

    return trainable_parts(cfg.training.stage, cfg.training.unfreeze)


def stage_table(cfg: RunConfig) -> str | None:
    """training.stage and training.unfreeze name known stages / parts."""
    try:
        _trainable(cfg)
    except ValueError as exc:
        return str(exc)
    return None


def template_known(cfg: RunConfig) -> str | None:
    from .data.templates import get_template

    if cfg.data.template:
        try:
            get_template(cfg.data.template)
        except KeyError as exc:
            return f"data.template: {exc.args[0]}"
    return None


# TrainingArguments fields that a typed training.* (or data.*) option sets: extra_args may not set them again
TYPED_ARGUMENTS = {
    "output_dir": "output_dir", "seed": "seed", "num_train_epochs": "num_train_epochs", "max_steps": "max_steps",
    "per_device_train_batch_size": "per_device_train_batch_size",
    "gradient_accumulation_steps": "gradient_accumulation_steps (or training.global_batch_size)",
    "learning_rate": "learning_rate", "weight_decay": "weight_decay", "warmup_steps": "warmup_ratio",
    "lr_scheduler_type": "lr_scheduler_type", "max_grad_norm": "max_grad_norm", "bf16": "precision",
    "fp16": "precision", "use_cpu": "use_cpu", "activation_checkpointing": "gradient_checkpointing",
    "activation_checkpointing_kwargs": "gradient_checkpointing", "logging_steps": "logging_steps",
    "save_strategy": "save_strategy", "save_steps": "save_steps", "save_total_limit": "save_total_limit",
    "report_to": "report_to", "run_name": "run_name", "dataloader_num_workers": "data.num_workers",
    "deepspeed": "deepspeed.config", "resume_from_checkpoint": "resume_from_checkpoint",
}


def extra_args_known(cfg: RunConfig) -> str | None:
    """training.extra_args: real `transformers.TrainingArguments` fields that no typed option already sets."""
    import dataclasses
    import difflib

    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    for key in cfg.training.extra_args:
        if key in TYPED_ARGUMENTS:
            typed = TYPED_ARGUMENTS[key]
            where = typed if typed.startswith(("data.", "deepspeed.")) else f"training.{typed}"
            return f"training.extra_args.{key}: set {where} instead (a typed option of the run config sets it)"
        if key not in fields:
            close = difflib.get_close_matches(str(key), sorted(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return (f"training.extra_args.{key} is not a transformers.TrainingArguments field{hint}; "
                    "remove it or fix its name")
    return None


RULES: tuple[Callable[[RunConfig], str | None], ...] = (
    values, stage_table, template_known, extra_args_known, paths, feature_cache_x_towers, packing_x_attention, deepspeed_x_save_only_model,
    zero3_x_export, deepspeed_x_nan_skip, init_from_x_model, quantisation_x_stage)


def check_run_config(cfg: RunConfig) -> None:
    """Raise `RuleError` with the first broken rule's message (config only: nothing is loaded)."""
    for rule in RULES:
        message = rule(cfg)
        if message:
            raise RuleError(message)


def check_template_tokenizer(template: str, tokenizer: Any, key: str) -> None:
    """Template x tokenizer: the template's markers must be single tokens (else answers are cut wrongly)."""
    from .data.templates import TemplateError, check_template_tokens

    try:
        check_template_tokens(template, tokenizer)
    except TemplateError as exc:
        raise RuleError(f"{key}={template}: {exc}") from None
