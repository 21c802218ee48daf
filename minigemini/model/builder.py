"""Build a MiniGemini model + processor for training from a model spec.

A spec (`minigemini.config.ModelConfig`, or any object with the same attributes) names the LLM
(hub id or local folder, loaded with `AutoModelForCausalLM.from_pretrained(trust_remote_code=False)`),
the two towers (architecture read from their hub/local config, weights via `tower.load_pretrained`)
and the connector. A spec with `tiny` set (the run config's `model.tiny`) is first pointed at the tiny base's
folders by `minigemini.train.tiny_base.resolve_tiny`, then loads through the very same local-folder path.
The conversation template written into the config is the caller's, else the LLM family's (`llm_template`).

Stage 2 loads the stage-1 connector (mining + projector) explicitly with `load_connector`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Iterator

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .configuration import MiniGeminiConfig
from .modeling import MiniGeminiForCausalLM
from .processing import MiniGeminiProcessor

logger = logging.getLogger(__name__)

CONNECTOR_FILE = "mm_projector.safetensors"
CONNECTOR_PARTS = ("mining", "projector")
HR_CONFIG_FILE = "convnext_config.json"


# ---- towers ---------------------------------------------------------------------------------------


def lr_tower_spec(source: str, image_size: int, select_layer: int = -2) -> dict[str, Any]:
    """LR tower dict for `MiniGeminiConfig.vision_lr`, architecture read from a CLIP hub id / folder."""
    from transformers import CLIPVisionConfig

    cfg = CLIPVisionConfig.from_pretrained(source)
    if cfg.image_size != image_size:
        raise ValueError(f"model.image_size={image_size} but the CLIP tower {source!r} was trained at "
                         f"{cfg.image_size}px; set model.image_size={cfg.image_size}")
    keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
            "patch_size", "hidden_act", "layer_norm_eps", "projection_dim")
    return {"backend": "hf_clip", "weights": source, "select_layer": select_layer, "select_feature": "patch",
            "clip_config": {k: getattr(cfg, k) for k in keys}}


def hr_tower_spec(source: str, arch: str | None = None) -> dict[str, Any]:
    """HR tower dict: `open_clip:NAME:TAG`, `timm:NAME`, or a local folder/file with `convnext_config.json`."""
    spec: dict[str, Any] = {"backend": "timm_convnext", "weights": source, "timm_name": None,
                            "timm_kwargs": {}, "drop_path_rate": 0.0}
    if arch:
        spec["timm_name"] = arch
    elif source.startswith("open_clip:"):
        import open_clip

        name = source.split(":")[1]
        vision = (open_clip.get_model_config(name) or {}).get("vision_cfg", {})
        if "timm_model_name" not in vision:
            raise ValueError(f"open_clip model {name!r} is not a timm ConvNeXt; set model.vision_hr_arch")
        spec["timm_name"] = vision["timm_model_name"]
        spec["drop_path_rate"] = float(vision.get("timm_drop_path", 0.0) or 0.0)
    elif source.startswith("timm:"):
        spec["timm_name"] = source[5:]
    else:
        folder = Path(source) if Path(source).is_dir() else Path(source).parent
        cfg_file = folder / HR_CONFIG_FILE
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{cfg_file} not found: a local HR tower needs it (timm_name or timm_kwargs), "
                                    "or set model.vision_hr_arch=convnext_large")
        spec.update(json.loads(cfg_file.read_text()))
    return spec


# ---- connector (stage 1 -> stage 2) ------------------------------------------------------------------


def connector_state_dict(model: MiniGeminiForCausalLM) -> dict[str, torch.Tensor]:
    """The mining + projector weights (what stage 1 trains), keyed as in the full model."""
    state = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in state.items() if k.split(".")[0] in CONNECTOR_PARTS}


def save_connector(model: MiniGeminiForCausalLM, folder: str | Path,
                   state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write `mm_projector.safetensors` (mining + projector) into `folder`."""
    from .weights import save_weight_subset

    state = state_dict if state_dict is not None else connector_state_dict(model)
    return save_weight_subset(state, Path(folder) / CONNECTOR_FILE, lambda k: k.split(".")[0] in CONNECTOR_PARTS)


def load_connector(model: MiniGeminiForCausalLM, path: str | Path) -> Path:
    """Load stage-1 mining + projector weights; errors if the file, a key or a shape does not match."""
    path = Path(path)
    if path.is_dir():
        path = path / CONNECTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"stage-1 connector weights not found: {path} (model.pretrained_adapter must be "
                                f"a stage-1 output folder holding {CONNECTOR_FILE}, or that file)")
    from safetensors.torch import load_file

    loaded = load_file(str(path))
    expected = connector_state_dict(model)
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    bad = [f"{k}: file {tuple(loaded[k].shape)} vs model {tuple(v.shape)}"
           for k, v in expected.items() if k in loaded and loaded[k].shape != v.shape]
    if missing or unexpected or bad:
        raise ValueError(f"{path} does not fit this model's mining/projector: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}, shape mismatch {bad[:5]}; was stage 1 run with the same "
                         "model preset (LLM width, towers, projector_type, use_hr)?")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in loaded.items():
            params[k].copy_(v.to(params[k].dtype))
    logger.info("loaded stage-1 connector (%d tensors) from %s", len(loaded), path)
    return path


# ---- the model -------------------------------------------------------------------------------------------


def build_model_and_processor(spec: Any, dtype: torch.dtype = torch.float32, template: str | None = None
                              ) -> tuple[MiniGeminiForCausalLM, MiniGeminiProcessor]:
    """Model (LLM + pretrained towers + fresh or stage-1 connector) and its processor, from a model spec.
    `template` is written into the model's config; None keeps the model's own (the init_from folder's, or for a
    model built from parts the LLM family's, `llm_template`)."""
    if getattr(spec, "tiny", None) is not None and not spec.init_from:
        raise ValueError("model.tiny is set: resolve the spec first (minigemini.train.tiny_base.resolve_tiny)")
    if spec.init_from:  # the architecture is the saved model's; template / attention / max length apply
        if getattr(spec, "llm_load_kwargs", None):  # QLoRA's quantization applies when the LLM loads from model.llm
            raise ValueError(f"model.init_from ({spec.init_from}) cannot be loaded quantized for QLoRA (lora.bits=4/8): "
                             "use lora.bits=16 (LoRA), or build from the parts (model.llm, model.vision_lr/hr, "
                             "model.pretrained_adapter) instead of model.init_from")
        model = MiniGeminiForCausalLM.from_pretrained(spec.init_from, dtype=dtype)
        if spec.attn_implementation:
            model.set_attn_implementation(spec.attn_implementation)
        processor = MiniGeminiProcessor.from_pretrained(spec.init_from)
        if template:
            model.config.template = processor.config.template = template
    else:
        model, processor = _build_from_parts(spec, dtype, template)
    if spec.pretrained_adapter:
        load_connector(model, spec.pretrained_adapter)
    processor.tokenizer.model_max_length = spec.model_max_length
    return model, processor


def llm_family_template(llm: str, tokenizer: Any) -> tuple[str, str] | None:
    """(template, why) of the LLM at `llm` as `minigemini convert` picks it (`convert.family_template`), or None
    for a family MGM never trained."""
    from transformers import AutoConfig

    from .convert import family_template

    return family_template(AutoConfig.from_pretrained(llm, trust_remote_code=False).model_type, tokenizer)


def llm_template(llm: str, tokenizer: Any) -> str:
    """The LLM family's conversation template; ValueError asking for data.template if it cannot be told."""
    found = llm_family_template(llm, tokenizer)
    if found is None:
        from transformers import AutoConfig

        kind = AutoConfig.from_pretrained(llm, trust_remote_code=False).model_type
        raise ValueError(f"data.template is null and the LLM {llm} (model_type {kind}) is not a family whose template "
                         "minigemini can tell (Llama/Vicuna, Llama-3, Yi, Gemma, Mistral, Mixtral): set data.template=NAME")
    return found[0]


def _build_from_parts(spec: Any, dtype: torch.dtype, template: str | None
                      ) -> tuple[MiniGeminiForCausalLM, MiniGeminiProcessor]:
    llm_kwargs: dict[str, Any] = {"trust_remote_code": False, "dtype": dtype}
    if spec.attn_implementation:
        llm_kwargs["attn_implementation"] = spec.attn_implementation
    llm_kwargs.update(getattr(spec, "llm_load_kwargs", None) or {})
    text_model = AutoModelForCausalLM.from_pretrained(spec.llm, **llm_kwargs)
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or spec.llm, trust_remote_code=False,
                                              model_max_length=spec.model_max_length)
    lr = lr_tower_spec(spec.vision_lr, spec.image_size, spec.select_layer)
    hr = hr_tower_spec(spec.vision_hr, spec.vision_hr_arch)
    config = MiniGeminiConfig(
        text_config=text_model.config, vision_lr=lr, vision_hr=hr, image_size=spec.image_size,
        image_size_aux=spec.image_size_aux, image_grid=spec.image_grid, image_global=spec.image_global,
        image_aspect_ratio=spec.image_aspect_ratio, use_hr=spec.use_hr, projector_type=spec.projector_type,
        template=template or llm_template(spec.llm, tokenizer), image_token_id=None)
    processor = MiniGeminiProcessor(tokenizer, config)  # adds <image>, sets config.image_token_id
    model = MiniGeminiForCausalLM(config, language_model=text_model)
    # MiniGeminiConfig(text_config=<live config>) resets its attention implementation to None, which leaves
    # the LLM without a causal mask: set it again on the whole model.
    model.set_attn_implementation(spec.attn_implementation or "sdpa")
    with _no_zero3_init():  # towers load whole on each rank; DeepSpeed partitions them at engine start
        model.vision_lr.load_pretrained(spec.vision_lr)
        if model.vision_hr is not None:
            model.vision_hr.load_pretrained(spec.vision_hr)
    for part in (model.vision_lr, model.vision_hr, model.mining, model.projector):
        if part is not None:
            part.to(dtype)
    return model, processor


@contextlib.contextmanager
def _no_zero3_init() -> Iterator[None]:
    """Inside: `from_pretrained` does not partition (ZeRO-3 zero.Init) even when a DeepSpeed ZeRO-3 run is set up."""
    from transformers.integrations import deepspeed as hf_ds

    ref = hf_ds._hf_deepspeed_config_weak_ref
    holder = ref() if ref is not None else None
    if holder is None:
        yield
        return
    hf_ds.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_ds.set_hf_deepspeed_config(holder)
