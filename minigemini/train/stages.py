"""The stage table: which parts of a MiniGemini model train in which stage, and logging of the result.

    stage      trains                      frozen
    pretrain   mining, projector           llm, vision_lr, vision_hr
    finetune   mining, projector, llm      vision_lr, vision_hr

`unfreeze` adds parts (e.g. `vision_hr`); with LoRA, `llm` means "the LoRA weights of the LLM"
(the base LLM weights stay frozen; peft marks the adapters trainable). `cast_frozen` stores the
frozen weights in the compute dtype (they need no fp32 master copy).
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import nn

logger = logging.getLogger(__name__)

PARTS = ("vision_lr", "vision_hr", "mining", "projector", "llm")
STAGES: dict[str, tuple[str, ...]] = {
    "pretrain": ("mining", "projector"),
    "finetune": ("mining", "projector", "llm"),
}
CONNECTOR = ("mining", "projector")


def part_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The named parts of a MiniGemini model that exist (no HR tower / mining in the LR-only variant)."""
    mods = {"vision_lr": model.vision_lr, "vision_hr": model.vision_hr, "mining": model.mining,
            "projector": model.projector, "llm": model.language_model}
    return {k: v for k, v in mods.items() if v is not None}


def trainable_parts(stage: str, unfreeze: Sequence[str] = ()) -> tuple[str, ...]:
    """Parts trained in `stage` plus `unfreeze`; errors name the valid stages/parts."""
    if stage not in STAGES:
        raise ValueError(f"unknown training.stage {stage!r}; valid: {', '.join(STAGES)}")
    bad = [p for p in unfreeze if p not in PARTS]
    if bad:
        raise ValueError(f"training.unfreeze has unknown part(s) {bad}; valid: {', '.join(PARTS)}")
    return tuple(p for p in PARTS if p in STAGES[stage] or p in unfreeze)


def apply_stage(model: nn.Module, stage: str, unfreeze: Sequence[str] = (),
                lora: bool = False) -> dict[str, tuple[int, int]]:
    """Set `requires_grad` per the stage table; returns {part: (trainable, total)} parameter counts.

    With `lora=True` the LLM's requires_grad flags are left as peft set them (adapters only).
    """
    train = set(trainable_parts(stage, unfreeze))
    for name, module in part_modules(model).items():
        if name == "llm" and lora:
            if "llm" not in train:
                raise ValueError(f"LoRA is enabled but stage {stage!r} does not train the LLM; use "
                                 "training.stage=finetune (or add llm to training.unfreeze)")
            continue
        module.requires_grad_(name in train)
        if name.startswith("vision"):
            module.train(name in train)  # frozen towers stay in eval mode (no drop-path)
    return parameter_report(model)


def cast_frozen(model: nn.Module, dtype: torch.dtype, parts: Sequence[str] = PARTS) -> int:
    """Cast every frozen floating-point parameter of the named parts to `dtype` (after `apply_stage`);
    returns how many parameter elements were cast. Trainable weights and all buffers (e.g. RoPE's
    inverse frequencies) keep their dtype."""
    cast = 0
    for name, module in part_modules(model).items():
        if name not in parts:
            continue
        for p in module.parameters():
            if not p.requires_grad and p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)
                cast += p.numel()
    return cast


def parameter_report(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{part: (trainable, total)} parameter counts (ZeRO-3 partitioned params counted by their full size)."""
    out = {}
    for name, module in part_modules(model).items():
        trainable = total = 0
        for p in module.parameters():
            n = getattr(p, "ds_numel", None) or p.numel()
            total += n
            trainable += n if p.requires_grad else 0
        out[name] = (trainable, total)
    return out


def format_report(report: dict[str, tuple[int, int]], stage: str) -> str:
    """A small table: part, state, trainable / total parameters."""
    lines = [f"stage {stage}: trainable parts"]
    for name, (trainable, total) in report.items():
        state = "trainable" if trainable == total else ("partly trainable" if trainable else "frozen")
        lines.append(f"  {name:<10} {state:<17} {trainable:>14,} / {total:,}")
    all_train = sum(t for t, _ in report.values())
    all_total = sum(n for _, n in report.values())
    share = 100 * all_train / max(all_total, 1)
    lines.append(f"  {'total':<10} {'':<17} {all_train:>14,} / {all_total:,} ({share:.2f}%)")
    return "\n".join(lines)


def connector_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of mining + projector (for their separate learning rate)."""
    params = []
    for name in CONNECTOR:
        module = getattr(model, name, None)
        if module is not None:
            params += list(module.parameters())
    return params
