"""`minigemini plan CONFIG --gpus N [--nodes M] [--gpu-mem 80GB]`: will this run fit, and with which ZeRO config?

Per GPU: the model states (16-bit weights, gradients, fp32 master weights and Adam moments) under no ZeRO,
ZeRO-2 and ZeRO-3, with and without CPU offload, from DeepSpeed's own estimators for the TRAINED
parameters (stage table + LoRA, counted on a meta-device copy of the model, no weights loaded) plus the
frozen parameters in 16 bits (replicated; partitioned under ZeRO-3); and the activations of the configured
micro-batch, measured on 1-2-layer proxies of the model itself (`minigemini.train.activations`).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

DEEPSPEED_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
GIB = 1024**3
HEADROOM = 0.9  # fraction of the GPU a plan may fill (CUDA context, allocator fragmentation, buffers)


@dataclass(frozen=True)
class ParameterCounts:
    trainable: int
    frozen: int
    largest_layer: int  # parameters of the largest single module (ZeRO-3 gathers one at a time)


@dataclass(frozen=True)
class StateRow:
    name: str
    deepspeed_config: str | None  # file under configs/deepspeed, None = no DeepSpeed
    gpu_bytes: int
    cpu_bytes: int


def parse_size(text: str) -> int:
    """'80GB', '80G', '40GiB', '24000MB' -> bytes (GB read as GiB, as GPU memory is quoted)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(i?B)?\s*", text, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"--gpu-mem {text!r} is not a size; write e.g. 80GB or 24000MB")
    return int(float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " "))


def count_parameters(model: torch.nn.Module) -> ParameterCounts:
    """Trainable / frozen parameter counts (shared tensors once) and the largest module's own parameters."""
    unique = {id(p): p for p in model.parameters()}.values()
    trainable = sum(p.numel() for p in unique if p.requires_grad)
    frozen = sum(p.numel() for p in unique if not p.requires_grad)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ParameterCounts(trainable, frozen, largest)


def model_state_rows(counts: ParameterCounts, gpus_per_node: int, nodes: int, weight_bytes: int = 2) -> list[StateRow]:
    """Per-GPU model-state memory, trained part from DeepSpeed's estimators, frozen part in 16 bits."""
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    total_gpus = gpus_per_node * nodes
    frozen = counts.frozen * weight_bytes
    t = counts.trainable
    rows = [StateRow("no ZeRO (DDP, bf16 autocast)", None, 16 * t + frozen, 0)]
    for offload, name in ((False, "zero2.json"), (True, "zero2_offload.json")):
        cpu, gpu = estimate_zero2_model_states_mem_needs(t, gpus_per_node, nodes, cpu_offload=offload)
        rows.append(StateRow(f"ZeRO-2{' + offload' if offload else ''}", name, gpu + frozen, cpu))
    for offload, name in ((False, "zero3.json"), (True, "zero3_offload.json")):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            t, counts.largest_layer, gpus_per_node, nodes, cpu_offload=offload, cpu_offload_params=offload)
        if offload:  # frozen weights live on the CPU too, gathered a layer at a time
            cpu += frozen * gpus_per_node // total_gpus
        else:
            gpu += frozen // total_gpus
        rows.append(StateRow(f"ZeRO-3{' + offload' if offload else ''}", name, gpu, cpu))
    return rows


def build_planned_model(cfg: Any) -> tuple[torch.nn.Module, Callable[[torch.nn.Module], Any]]:
    """The run's model on the meta device (no weights read) and the function that sets what trains."""
    from minigemini.model import MiniGeminiForCausalLM

    from .lora import apply_lora
    from .stages import apply_stage

    config = planned_config(cfg)

    def prepare(model: torch.nn.Module) -> None:
        if cfg.lora.enabled:
            apply_lora(model, cfg.lora)
        apply_stage(model, cfg.training.stage, cfg.training.unfreeze, lora=cfg.lora.enabled)

    with torch.device("meta"):
        model = MiniGeminiForCausalLM(config)
    prepare(model)
    return model, prepare


def planned_config(cfg: Any) -> Any:
    """The MiniGeminiConfig the run would build: from init_from, or from the LLM's and towers' configs."""
    from transformers import AutoConfig

    from minigemini.model import MiniGeminiConfig
    from minigemini.model.builder import hr_tower_spec, lr_tower_spec
    from minigemini.train.tiny_base import resolve_tiny

    spec = resolve_tiny(cfg.model, cfg.data.train)
    if spec.init_from:
        return MiniGeminiConfig.from_pretrained(spec.init_from)
    text = AutoConfig.from_pretrained(spec.llm, trust_remote_code=False)
    return MiniGeminiConfig(
        text_config=text, vision_lr=lr_tower_spec(spec.vision_lr, spec.image_size, spec.select_layer),
        vision_hr=hr_tower_spec(spec.vision_hr, spec.vision_hr_arch), image_size=spec.image_size,
        image_size_aux=spec.image_size_aux, image_grid=spec.image_grid, image_global=spec.image_global,
        image_aspect_ratio=spec.image_aspect_ratio, use_hr=spec.use_hr, projector_type=spec.projector_type,
        image_token_id=text.vocab_size)  # the template does not change the memory


@dataclass(frozen=True)
class Plan:
    counts: ParameterCounts
    rows: list[StateRow]
    activations: int  # per GPU, with the run's gradient_checkpointing setting
    activations_other: int  # per GPU, with the other setting
    checkpointing: bool


def make_plan(cfg: Any, gpus_per_node: int, nodes: int = 1, supervised_fraction: float = 1.0) -> Plan:
    """Parameter counts, model states and activations per GPU for the run `cfg` describes."""
    from .activations import measure_activation_model

    if gpus_per_node < 1 or nodes < 1:
        raise ValueError("--gpus and --nodes must be at least 1")
    if not 0.0 < supervised_fraction <= 1.0:
        raise ValueError(f"--supervised-fraction {supervised_fraction} must be in (0, 1]")
    model, prepare = build_planned_model(cfg)
    counts = count_parameters(model)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.training.precision, torch.float32)
    acts = measure_activation_model(model.config, dtype, cfg.model.attn_implementation or "sdpa", prepare)
    seq = cfg.data.pack_length or cfg.model.model_max_length
    batch, supervised = cfg.training.per_device_train_batch_size, int(seq * supervised_fraction)
    ckpt = cfg.training.gradient_checkpointing
    return Plan(counts, model_state_rows(counts, gpus_per_node, nodes, torch.finfo(dtype).bits // 8),
                acts.estimate(batch, seq, supervised, ckpt), acts.estimate(batch, seq, supervised, not ckpt), ckpt)


def recommend(plan: Plan, gpu_mem: int) -> StateRow | None:
    """The fastest DeepSpeed config whose states + activations fit `HEADROOM` of the GPU, or None."""
    by_file = {r.deepspeed_config: r for r in plan.rows}
    for name in ("zero2.json", "zero3.json", "zero2_offload.json", "zero3_offload.json"):
        if by_file[name].gpu_bytes + plan.activations <= HEADROOM * gpu_mem:
            return by_file[name]
    return None


def format_plan(plan: Plan, cfg: Any, gpus_per_node: int, nodes: int, gpu_mem: int | None) -> str:
    """The table `minigemini plan` prints."""
    seq = cfg.data.pack_length or cfg.model.model_max_length
    other = "off" if plan.checkpointing else "on"
    lines = [
        f"{gpus_per_node * nodes} GPU(s) ({gpus_per_node} per node x {nodes} node(s)), precision "
        f"{cfg.training.precision}, stage {cfg.training.stage}{' + LoRA' if cfg.lora.enabled else ''}",
        f"parameters: trained {plan.counts.trainable / 1e6:,.1f} M, frozen {plan.counts.frozen / 1e6:,.1f} M, "
        f"largest layer {plan.counts.largest_layer / 1e6:,.1f} M",
        f"activations per GPU (micro-batch {cfg.training.per_device_train_batch_size} x {seq} tokens): "
        f"{human(plan.activations)} with gradient checkpointing {'on' if plan.checkpointing else 'off'} "
        f"(the config), {human(plan.activations_other)} {other}",
        "",
        f"{'model states per GPU':40s} {'GPU':>10s} {'CPU/node':>10s} {'GPU+activ.':>11s}  fits",
    ]
    for row in plan.rows:
        total = row.gpu_bytes + plan.activations
        fits = "" if gpu_mem is None else ("yes" if total <= HEADROOM * gpu_mem else "no")
        label = row.name + (f" ({row.deepspeed_config})" if row.deepspeed_config else "")
        lines.append(f"{label:40s} {human(row.gpu_bytes):>10s} {human(row.cpu_bytes):>10s} {human(total):>11s}  {fits}")
    if gpu_mem is not None:
        best = recommend(plan, gpu_mem)
        lines.append("")
        lines.append(f"recommended for {gpu_mem / GIB:.0f} GiB GPUs: deepspeed.config=configs/deepspeed/"
                     f"{best.deepspeed_config}" if best else
                     f"nothing fits {gpu_mem / GIB:.0f} GiB GPUs: lower training.per_device_train_batch_size"
                     f"{'' if plan.checkpointing else ', set training.gradient_checkpointing=true'}, or add GPUs")
    lines.append(f"(a plan may fill {HEADROOM:.0%} of a GPU; supervised tokens counted as "
                 "given by --supervised-fraction)")
    return "\n".join(lines)


def human(n: float) -> str:
    """Bytes as B / KiB / MiB / GiB with 2 decimals."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.2f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.2f} GiB"


def run_plan(args: argparse.Namespace) -> int:
    from minigemini.config import load_config

    cfg = load_config(args.config, args.overrides)
    gpu_mem = parse_size(args.gpu_mem) if args.gpu_mem else None
    plan = make_plan(cfg, args.gpus, args.nodes, args.supervised_fraction)
    print(format_plan(plan, cfg, args.gpus, args.nodes, gpu_mem))
    return 0
