"""Typed configuration of a training run: YAML files mapped onto dataclasses, plus dotted overrides.

A run config has five sections (`model`, `data`, `training`, `lora`, `deepspeed`). A YAML file may
pull in others with `include: [relative/path.yaml, ...]` (merged in order, the including file last),
so presets compose: `configs/tiny/pretrain.yaml` includes `../model/tiny.yaml` and `../stage/pretrain.yaml`.
Command-line overrides are `section.key=value` (value parsed as YAML: `1`, `true`, `null`, `[a, b]`).
Unknown keys are errors that list the valid ones; values are checked against the field types.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml


class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans (YAML 1.2), so `save_strategy: no` stays the string "no"."""


_Loader.yaml_implicit_resolvers = {k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "tTfF":
    _Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                  [_first])


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclasses (message says where and what to do)."""


# keys of earlier versions -> what to write instead (named in the error, with the file and line)
REMOVED_KEYS = {
    "model.preset": "model.tiny (a section; configs/model/tiny.yaml sets it)",
    "model.tiny_dir": "model.tiny.dir", "model.tiny_llm": "model.tiny.llm",
    "model.tiny_vocab_size": "model.tiny.vocab_size", "model.tiny_hd": "model.tiny.hd",
    "model.tiny_corpus": "model.tiny.corpus", "model.tiny_seed": "model.tiny.seed",
    "model.template": "data.template", "training.dataloader_num_workers": "data.num_workers",
}


@dataclass
class TinyBase:
    """`model.tiny`: build a random-init tiny base (LLM + tokenizer trained on the run's texts + towers) in `dir`
    on first use, then load it through the local-folder path like a real model (configs/model/tiny.yaml)."""

    dir: str = "runs/tiny_base"  # where the base is kept (llm/, vision_lr/, vision_hr/, tiny_base.json)
    llm: str = "llama"  # tiny LLM family: llama | gemma | qwen2 | mistral | phi3
    vocab_size: int = 1024
    hd: bool = False
    corpus: list[str] = field(default_factory=list)  # JSON files whose texts train the tokenizer (default: data.train)
    seed: int = 0


@dataclass
class ModelConfig:
    """Which LLM, towers and connector to build (hub ids or local folders), or a tiny random-init base."""

    tiny: TinyBase | None = None  # set: the tiny base in tiny.dir (written on first use) replaces llm + towers
    llm: str = "lmsys/vicuna-7b-v1.5"  # hub id or local folder of an AutoModelForCausalLM
    tokenizer: str | None = None  # default: the LLM's folder / id
    vision_lr: str = "openai/clip-vit-large-patch14-336"  # CLIPVisionModel hub id or local folder
    vision_hr: str = "open_clip:convnext_large_d_320:laion2b_s29b_b131k_ft_soup"  # open_clip:NAME:TAG|timm:NAME|dir
    vision_hr_arch: str | None = None  # timm ConvNeXt name if it cannot be read from vision_hr (e.g. convnext_large)
    select_layer: int = -2
    image_size: int = 336  # LR side (per view)
    image_size_aux: int = 768  # HR side
    image_grid: int = 1  # 2 for the HD variant (2x2 crops)
    image_global: bool = False  # HD: add a global view
    image_aspect_ratio: str = "pad"
    use_hr: bool = True  # False: LR-only baseline (no HR tower, no mining)
    projector_type: str = "mlp2x_gelu"
    model_max_length: int = 2048
    attn_implementation: str | None = "sdpa"
    # Weights of the frozen parts (towers; the LLM in pretrain; the base LLM under LoRA) without DeepSpeed:
    # "auto" = the training precision (bf16/fp16 halve their memory, skip autocast's per-step weight casts),
    # "fp32" = keep them in fp32. Trained weights stay fp32 (master weights) either way.
    frozen_dtype: str = "auto"
    init_from: str | None = None  # a saved minigemini model folder to start from (instead of llm + towers)
    pretrained_adapter: str | None = None  # stage-1 output folder or mm_projector.safetensors (mining + projector)


@dataclass
class DataConfig:
    """Training data: LLaVA-style JSON/JSONL files and where their images live."""

    train: list[str] = field(default_factory=list)
    image_folder: str | None = None  # image paths in the records are relative to this (default: the JSON's folder)
    # The conversation template the texts are rendered with (minigemini.data.templates); in a stage other than
    # pretrain it is also written into the model's config, so the export chats in it. null = the model's own:
    # the init_from folder's, or for a model built from llm + towers the family's (as `minigemini convert` picks it).
    template: str | None = None
    feature_cache: str | None = None  # folder from `minigemini prep cache-features` (frozen towers only)
    on_bad_sample: str = "skip"  # skip (count, report at the end) | fail (stop with the file and sample id)
    group_by_modality_length: bool = True  # batches of text-only / image samples of similar length
    num_workers: int = 2
    # Pack the samples of each per-device batch into rows of up to `pack_length` tokens (position ids restart
    # per sample, no attention across samples; same loss as padding); raise per_device_train_batch_size to fill rows.
    packing: bool = False
    pack_length: int | None = None  # row length with packing (default: model.model_max_length)


@dataclass
class TrainingConfig:
    """Optimisation, precision, checkpoints and logging; mapped onto `transformers.TrainingArguments`."""

    stage: str = "pretrain"  # pretrain (mining + projector) | finetune (+ LLM); see minigemini/train/stages.py
    unfreeze: list[str] = field(default_factory=list)  # extra parts to train: vision_lr, vision_hr, llm, ...
    output_dir: str = "runs/default"
    seed: int = 42
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 16
    gradient_accumulation_steps: int | None = None  # default: from global_batch_size, else 1
    global_batch_size: int | None = None  # per_device x accumulation x world size (recipe: 256 / 128)
    learning_rate: float = 2e-5
    mm_learning_rate: float | None = None  # separate lr for mining + projector (default: learning_rate)
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "cosine"
    max_grad_norm: float = 1.0
    precision: str = "bf16"  # bf16 (autocast, CPU and GPU) | fp16 | fp32 (exactness tests)
    gradient_checkpointing: bool = True
    logging_steps: int = 1
    save_strategy: str = "steps"
    save_steps: int = 500
    save_total_limit: int | None = 1
    resume_from_checkpoint: str | None = None  # "auto": the latest checkpoint in output_dir, if any
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])  # + "wandb"; [] for none
    run_name: str | None = None
    nan_policy: str = "stop"  # stop (error naming step and samples) | skip (zero-gradient step)
    use_cpu: bool | None = None  # default: True when no CUDA device is visible
    export: bool = True  # write the final model (save_pretrained + processor, or adapter) to output_dir
    # more TrainingArguments fields, as they are (checked: a real field that no training.* key above sets)
    extra_args: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoraSection:
    """LoRA / QLoRA on the LLM only (mining + projector stay fully trainable)."""

    enabled: bool = False
    r: int = 128
    alpha: int = 256
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"  # module names, or all-linear (every Linear of the LLM but the head)
    bias: str = "none"
    bits: int = 16  # 4 or 8: QLoRA (needs bitsandbytes and a GPU)


@dataclass
class DeepSpeedSection:
    """DeepSpeed JSON config (ZeRO-2/3, offload); "auto" values are filled by the Trainer."""

    config: str | None = None  # e.g. configs/deepspeed/zero2.json


@dataclass
class RunConfig:
    """Everything one `minigemini train` run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    lora: LoraSection = field(default_factory=LoraSection)
    deepspeed: DeepSpeedSection = field(default_factory=DeepSpeedSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


# ---- loading -------------------------------------------------------------------------------------


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Load a YAML run config (following `include:`), apply `a.b=value` overrides, check keys and types."""
    raw: dict[str, Any] = read_yaml_with_includes(Path(path)) if path is not None else {}
    source = str(path) if path is not None else "<defaults>"
    for item in overrides:
        key, value = parse_override(item)
        _set_dotted(raw, key, value)
    return from_dict(raw, source=source)


def read_yaml_with_includes(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping; `include:` files (relative to this one) are merged first, this file wins."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(str(p) for p in (*_seen, path))})")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem}); fix that line") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    _refuse_removed_keys(data, path)
    includes = data.pop("include", []) or []
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for inc in includes:
        merged = _deep_merge(merged, read_yaml_with_includes(path.parent / inc, (*_seen, path)))
    return _deep_merge(merged, data)


def _refuse_removed_keys(data: dict[str, Any], path: Path) -> None:
    """A key of an earlier version (`REMOVED_KEYS`) -> ConfigError at its file:line naming the new key."""
    for section, body in data.items():
        for key in body if isinstance(body, dict) else ():
            dotted = f"{section}.{key}"
            if dotted in REMOVED_KEYS:
                line = _key_line(path.read_text(), str(section), str(key))
                raise ConfigError(f"{path}:{line}: {dotted} was removed: use {REMOVED_KEYS[dotted]}")


def _key_line(text: str, section: str, key: str) -> int:
    """1-based line of `section: {key: ...}` in a YAML text (0 if not found)."""
    root = yaml.compose(text, Loader=_Loader)
    for sec_node, body in getattr(root, "value", ()):
        if getattr(sec_node, "value", None) == section and isinstance(body, yaml.MappingNode):
            for key_node, _ in body.value:
                if key_node.value == key:
                    return key_node.start_mark.line + 1
    return 0


def parse_override(item: str) -> tuple[str, Any]:
    """`training.learning_rate=1e-3` -> ("training.learning_rate", 0.001); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value (e.g. training.learning_rate=1e-3)")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or key.startswith(".") or key.endswith("."):
        raise ConfigError(f"override {item!r}: bad key {key!r}")
    try:
        value = _load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    return key, value


def from_dict(raw: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Build a `RunConfig` from a nested dict, rejecting unknown keys and ill-typed values."""
    return _build(RunConfig, raw, prefix="", source=source)


def valid_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """All dotted keys a config accepts (for messages and docs)."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        section = _section_type(hints[f.name])
        if section is not None:
            out += valid_keys(section, name + ".")
        else:
            out.append(name)
    return out


def _section_type(typ: Any) -> type | None:
    """The dataclass of a section field (`X` or `X | None`), else None."""
    if dataclasses.is_dataclass(typ):
        return typ
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if typing.get_origin(typ) in (typing.Union, types.UnionType) and len(args) == 1 and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    where = prefix.rstrip(".") or "top level"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        valid = ", ".join(sorted(names))
        removed = [f"{prefix}{u} was removed: use {REMOVED_KEYS[prefix + str(u)]}" for u in unknown
                   if prefix + str(u) in REMOVED_KEYS]
        if removed:
            raise ConfigError(f"{source}: {'; '.join(removed)}")
        hints = [f"{prefix}{close[0]}" for u in unknown
                 if (close := difflib.get_close_matches(str(u), names, n=1, cutoff=0.6))]
        hint = f" (did you mean {'; '.join(hints)}?)" if hints else ""
        raise ConfigError(f"{source}: unknown key(s) {', '.join(prefix + str(u) for u in unknown)}{hint}; "
                          f"valid keys of {where}: {valid}")
    kwargs = {}
    for name, value in raw.items():
        typ, section = hints[name], _section_type(hints[name])
        if section is not None and not (value is None and section is not typ):  # `X | None` section: null allowed
            kwargs[name] = _build(section, value, f"{prefix}{name}.", source)
        elif section is not None:
            kwargs[name] = None
        else:
            kwargs[name] = _coerce(value, typ, f"{prefix}{name}", source)
    return cls(**kwargs)


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    """Check `value` against the annotation `typ` (int->float, scalar->list where a list is expected)."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key, source)
            except ConfigError as exc:
                errors.append(str(exc))
        raise errors[-1] if len(errors) == 1 else ConfigError(
            f"{source}: {key}={value!r} does not fit {_type_name(typ)}")
    if typ is Any:
        return value
    if origin is list:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, args[0] if args else Any, key, source) for v in items]
    if origin is dict or typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{source}: {key}={value!r} must be {_type_name(typ)}")


def _type_name(typ: Any) -> str:
    return getattr(typ, "__name__", None) or str(typ).replace("typing.", "")


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if node.get(part) is None:  # a section that is null (e.g. model.tiny) is set up by its first key
            node[part] = {}
        child = node[part]
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
