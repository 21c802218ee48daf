"""LoRA / QLoRA on the LLM only (through peft), saving beside the adapter, and merging back.

The LLM inside the MiniGemini model is wrapped by `peft.get_peft_model`; mining + projector (and
any part unfrozen by the config) stay fully trainable and are saved beside the adapter in
`non_lora_trainables.safetensors`. `merge_lora` rebuilds the base model from the run's resolved
config, applies the adapter, folds it in (`merge_and_unload`) and writes a plain model folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)

NON_LORA_FILE = "non_lora_trainables.safetensors"
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
        raise ImportError("QLoRA (lora.bits=4/8) needs bitsandbytes and a CUDA GPU: pip install bitsandbytes") from exc
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=lora.bits == 4, load_in_8bit=lora.bits == 8,
                               bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4")
    return {"quantization_config": quant}


def apply_lora(model: nn.Module, lora: Any, gradient_checkpointing: bool = False) -> nn.Module:
    """Wrap `model.language_model` with LoRA adapters (in place); returns the model."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    llm = model.language_model
    if lora.bits < 16:
        llm = prepare_model_for_kbit_training(llm, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                        target_modules=lora.target_modules, task_type="CAUSAL_LM")
    model.language_model = get_peft_model(llm, config)
    return model


def is_lora_model(model: nn.Module) -> bool:
    """True when the model's LLM is a peft-wrapped one."""
    from peft import PeftModel

    return isinstance(getattr(model, "language_model", None), PeftModel)


def save_lora_export(model: nn.Module, folder: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """Write the adapter (adapter_config.json + adapter_model.safetensors) and the non-LoRA trainables."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = state_dict if state_dict is not None else model.state_dict()
    llm_state = {k[len(LLM_PREFIX):]: v for k, v in state.items() if k.startswith(LLM_PREFIX)}
    model.language_model.save_pretrained(str(folder), state_dict=llm_state)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad and not n.startswith(LLM_PREFIX)}
    extra = {k: state[k].detach().cpu().contiguous() for k in sorted(trainable) if k in state}
    save_file(extra, str(folder / NON_LORA_FILE), metadata={"format": "pt"})


def load_non_lora(model: nn.Module, folder: str | Path) -> list[str]:
    """Copy `non_lora_trainables.safetensors` into the model (keys must exist with the same shapes)."""
    from safetensors.torch import load_file

    path = Path(folder) / NON_LORA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} the output folder of a LoRA run?")
    loaded = load_file(str(path))
    params = dict(model.named_parameters())
    bad = [k for k, v in loaded.items() if k not in params or params[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensors do not fit the base model, e.g. {bad[:3]}")
    with torch.no_grad():
        for k, v in loaded.items():
            params[k].copy_(v.to(params[k].dtype))
    return sorted(loaded)


def merge_lora(run_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Base model (from the run's `run_config.yaml`) + adapter + non-LoRA trainables -> a plain model folder."""
    from peft import PeftModel

    from ..config import load_config
    from ..data.model_chat_template import set_chat_template
    from ..model.builder import build_model_and_processor

    run_dir = Path(run_dir)
    cfg_file = run_dir / "run_config.yaml"
    if not (run_dir / "adapter_config.json").is_file() or not cfg_file.is_file():
        raise FileNotFoundError(f"{run_dir} is not a LoRA run output (needs adapter_config.json and run_config.yaml)")
    cfg = load_config(cfg_file)
    cfg.model.pretrained_adapter = None  # the trained mining/projector come from non_lora_trainables
    model, processor = build_model_and_processor(cfg.model, dtype=dtype, corpus=cfg.data.train)
    set_chat_template(processor)
    model.language_model = PeftModel.from_pretrained(model.language_model, str(run_dir))
    load_non_lora(model, run_dir)
    model.language_model = model.language_model.merge_and_unload()
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    logger.info("merged %s into %s", run_dir, out)
    return out
