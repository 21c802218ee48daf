"""LoRA / QLoRA on the LLM only (through peft), a whole-model peft adapter on disk, and merging back.

Training wraps the LLM inside the MiniGemini model with `peft.get_peft_model`; mining + projector
(and any part unfrozen by the config) stay fully trainable. The export is ONE peft adapter for the
whole MiniGemini model: LoRA weights under `language_model.*` and the other trained parts as peft
`modules_to_save`, with `base_model_name_or_path` an absolute folder or hub id. So plain
`PeftModel.from_pretrained(base, run_dir)` on the base MiniGemini model gives the fine-tuned model,
and `merge_lora` is that plus `merge_and_unload`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

LLM_PREFIX = "language_model."


def qlora_load_kwargs(lora: Any, dtype: torch.dtype) -> dict[str, Any]:
    """`from_pretrained` kwargs that quantize the LLM for QLoRA (bits 4/8), or {} for plain LoRA."""
    if not lora.enabled or lora.bits >= 16:
        return {}
    if lora.bits not in (4, 8):
        raise ValueError(f"lora.bits must be 4, 8 or 16, got {lora.bits}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ImportError("QLoRA (lora.bits=4/8) needs bitsandbytes (CUDA, or its CPU backend): "
                          "pip install 'minigemini[qlora]'") from exc
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=lora.bits == 4, load_in_8bit=lora.bits == 8,
                               bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
    return {"quantization_config": quant}


def lora_base_path(spec: Any) -> str:
    """The model a LoRA run's adapter applies to, as an absolute folder or a hub id (loadable anywhere).

    `model.init_from` or the stage-1 folder (`model.pretrained_adapter`, a saved minigemini model whose
    LLM and towers are the frozen ones stage 2 starts from); without either, the LLM's folder / hub id
    (the MiniGemini base is then the one `minigemini merge-lora` rebuilds from `run_config.yaml`).
    """
    for candidate in (spec.init_from, spec.pretrained_adapter):
        if candidate and (Path(candidate) / "config.json").is_file():
            return str(Path(candidate).resolve())
    return str(Path(spec.llm).resolve()) if Path(spec.llm).exists() else spec.llm


def apply_lora(model: nn.Module, lora: Any, gradient_checkpointing: bool = False, base: str | None = None) -> nn.Module:
    """Wrap `model.language_model` with LoRA adapters (in place); `base` is recorded for the export."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    llm = model.language_model
    if lora.bits < 16:
        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    model.language_model = get_peft_model(llm, config)
    model.lora_base_model = base
    return model


def is_lora_model(model: nn.Module) -> bool:
    """True when the model's LLM is a peft-wrapped one."""
    from peft import PeftModel

    return isinstance(getattr(model, "language_model", None), PeftModel)


def _lora_targets(model: nn.Module) -> str:
    """A peft `target_modules` regex over the whole model matching exactly the LLM's LoRA-wrapped modules."""
    import re

    from peft.tuners.lora import LoraLayer

    inner = model.language_model.get_base_model()
    wrapped = {LLM_PREFIX + n for n, m in inner.named_modules() if isinstance(m, LoraLayer)}
    plain = {LLM_PREFIX + n for n, m in inner.named_modules() if n and not isinstance(m, LoraLayer)
             and ".lora_" not in n and not n.endswith(".base_layer") and ".base_layer." not in n}
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in wrapped})
    pattern = rf"{re.escape(LLM_PREFIX)}.*\.(?:{'|'.join(map(re.escape, suffixes))})"
    if any(re.fullmatch(pattern, n) for n in plain):  # a same-named module without LoRA: list them all
        pattern = "(?:" + "|".join(map(re.escape, sorted(wrapped))) + ")"
    return pattern


def _modules_to_save(model: nn.Module) -> list[str]:
    """Top-level parts outside the LLM that were trained (mining, projector, unfrozen towers)."""
    parts = sorted({n.split(".", 1)[0] for n, p in model.named_parameters()
                    if p.requires_grad and not n.startswith(LLM_PREFIX)})
    for part in parts:  # peft matches modules_to_save by name suffix: it must name one module only
        clash = [n for n, _ in model.named_modules() if n.endswith("." + part)]
        if clash:
            raise ValueError(f"cannot export {part!r} as a peft module_to_save: {clash[0]} has the same name")
    return parts


def save_lora_export(model: nn.Module, folder: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write one whole-model peft adapter: LoRA weights + the trained non-LLM parts as `modules_to_save`."""
    import copy

    from peft import get_peft_model_state_dict

    from ..model.weights import save_weight_subset

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    peft_llm = model.language_model
    llm_state = {k[len(LLM_PREFIX):]: v for k, v in state.items() if k.startswith(LLM_PREFIX)}
    lora_state = get_peft_model_state_dict(peft_llm, state_dict=llm_state)
    head = "base_model.model."
    out = {head + LLM_PREFIX + k[len(head):]: v for k, v in lora_state.items()}
    parts = _modules_to_save(model)
    out.update({head + k: v for k, v in state.items() if k.split(".", 1)[0] in parts})
    config = copy.deepcopy(peft_llm.peft_config["default"])
    config.target_modules = _lora_targets(model)
    config.modules_to_save = parts
    config.base_model_name_or_path = getattr(model, "lora_base_model", None) or lora_base_path_of(peft_llm)
    config.inference_mode = True
    config.save_pretrained(str(folder))
    save_weight_subset(out, folder / "adapter_model.safetensors")


def lora_base_path_of(peft_llm: nn.Module) -> str:
    """The wrapped LLM's own folder (absolute) or hub id, when the run recorded no base."""
    name = peft_llm.get_base_model().config.name_or_path
    return str(Path(name).resolve()) if name and Path(name).exists() else name


def merge_lora(run_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Base model (from the run's `run_config.yaml`) + the whole-model adapter, merged -> a plain model folder."""
    from peft import PeftModel

    from ..config import load_config
    from ..data.model_chat_template import set_chat_template
    from ..model.builder import build_model_and_processor
    from .template_choice import config_template
    from .tiny_base import resolve_tiny

    run_dir = Path(run_dir)
    cfg_file = run_dir / "run_config.yaml"
    if not (run_dir / "adapter_config.json").is_file() or not cfg_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a LoRA run output (needs adapter_config.json and run_config.yaml)")
    cfg = load_config(cfg_file)
    cfg.model.pretrained_adapter = None  # the trained mining/projector are in the adapter (modules_to_save)
    spec = resolve_tiny(cfg.model, cfg.data.train)
    model, processor = build_model_and_processor(spec, dtype=dtype, template=config_template(cfg))
    set_chat_template(processor)
    model = PeftModel.from_pretrained(model, str(run_dir)).merge_and_unload()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    logger.info("merged %s into %s", run_dir, out)
    return out
