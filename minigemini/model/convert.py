"""Official MGM (and LLaVA-style) checkpoints -> MiniGeminiForCausalLM.

MGM stores one flat state dict: the LLM under `model.*` / `lm_head.*`, the CLIP tower under
`model.vision_tower.vision_tower.vision_model.*`, the ConvNeXt under `model.vision_tower_aux.
vision_{stem,stages}.*`, mining under `model.vlm_uni_{query,aux,val}_projector.*` and the projector
under `model.mm_projector.*`. Its inputs carry one `-200` per image; ours carry N image-token ids (the
tests expand MGM's inputs to ours: `tests/model/mgm_inputs.py`).
Numerical equivalence is checked against tensors produced by the official code (tests).

The LLM weights are loaded through transformers' own `from_pretrained(state_dict=...)`, so the
library's checkpoint conversions apply as for any legacy checkpoint (transformers 5 fuses Mixtral's
per-expert `block_sparse_moe.experts.N.w1/w2/w3` into `mlp.experts.gate_up_proj/down_proj`).
The conversation template is chosen per family from the checkpoint (`detect_template`).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open

from .configuration import DEFAULT_HR_TOWER, DEFAULT_LR_TOWER, MiniGeminiConfig

if TYPE_CHECKING:
    from .modeling import MiniGeminiForCausalLM

MGM_IMAGE_TOKEN_INDEX = -200  # MGM's one placeholder id per image in input_ids (ours: N image-token ids)

# (MGM prefix, our prefix); the first match wins, so specific prefixes come first.
KEY_MAP: list[tuple[str, str]] = [
    ("model.vision_tower.vision_tower.vision_model.", "vision_lr.clip."),
    ("model.vision_tower_aux.vision_stem.", "vision_hr.stem."),
    ("model.vision_tower_aux.vision_stages.", "vision_hr.stages."),
    ("model.vlm_uni_query_projector.", "mining.query."),
    ("model.vlm_uni_aux_projector.", "mining.key."),
    ("model.vlm_uni_val_projector.", "mining.value."),
    ("model.mm_projector.", "projector."),
    ("lm_head.", "language_model.lm_head."),
    ("model.", "language_model.model."),
]

MGM_ARCH_TO_MODEL_TYPE = {"MGMLlamaForCausalLM": "llama", "MGMGemmaForCausalLM": "gemma",
                          "MGMMistralForCausalLM": "mistral", "MGMMixtralForCausalLM": "mixtral"}
MGM_MODEL_TYPES = {"mgm": "llama", "mgm_gemma": "gemma", "mgm_mistral": "mistral", "mgm_mixtral": "mixtral"}
# released family -> template, as the official scripts use them (MGM-2B gemma, 7B/13B vicuna_v1, 8B llama_3,
# 8x7B mistral_instruct, 34B chatml_direct)
LLAMA_TOKENIZER_TEMPLATES = [("<|eot_id|>", 128000, "llama_3", "a Llama-3 tokenizer (<|eot_id|>)"),
                             ("<|im_start|>", 64000, "chatml_direct", "a Yi / ChatML tokenizer (<|im_start|>)")]
MGM_ONLY_KEYS = {"mm_", "image_", "vision", "tune_", "freeze_", "optimize_", "use_mm_proj", "tokenizer_",
                 "fixture", "architectures", "model_type", "transformers_version", "torch_dtype"}


def convert_key(key: str) -> str:
    """Our parameter name for an MGM checkpoint key (error if the key is unknown)."""
    for src, dst in KEY_MAP:
        if key.startswith(src):
            return dst + key[len(src):]
    raise KeyError(f"unrecognised MGM checkpoint key {key!r}")


def llm_model_type(mgm: dict[str, Any]) -> str:
    """The HF model_type of the LLM inside an MGM config (from `architectures`, else MGM's `model_type`)."""
    arch = (mgm.get("architectures") or [None])[0]
    model_type = MGM_ARCH_TO_MODEL_TYPE.get(arch) if arch else MGM_MODEL_TYPES.get(mgm.get("model_type"), "llama")
    if model_type is None:
        raise ValueError(f"unsupported MGM architecture {arch!r}; known: {sorted(MGM_ARCH_TO_MODEL_TYPE)}")
    return model_type


def detect_template(mgm: dict[str, Any], tokenizer: Any = None) -> tuple[str, str]:
    """(template, why) for an MGM checkpoint: its LLM family's (`family_template`); every MGM family is known."""
    found = family_template(llm_model_type(mgm), tokenizer, int(mgm.get("vocab_size", 0)))
    assert found is not None  # llm_model_type only returns llama / gemma / mistral / mixtral
    return found


def family_template(model_type: str, tokenizer: Any = None, vocab_size: int = 0) -> tuple[str, str] | None:
    """(template, why) for an LLM family, as MGM's scripts use them: Gemma -> gemma, Mixtral/Mistral ->
    mistral_instruct; a Llama architecture by its tokenizer (`<|eot_id|>`: Llama-3 -> llama_3; `<|im_start|>`:
    Yi -> chatml_direct), or without a tokenizer by `vocab_size` (>= 128000 / 64000); any other Llama (Vicuna's
    Llama-2 tokenizer) -> vicuna_v1, MGM's own default (train.py and serve/cli.py fall back to it).
    None for a family MGM never trained (Qwen2, Phi-3, ...): the caller must be told the template."""
    if model_type == "gemma":
        return "gemma", "Gemma architecture (MGM-2B)"
    if model_type in ("mixtral", "mistral"):
        return "mistral_instruct", f"{model_type.capitalize()} architecture (MGM-8x7B)"
    if model_type != "llama":
        return None
    for marker, min_vocab, template, why in LLAMA_TOKENIZER_TEMPLATES:
        found = marker in tokenizer.get_vocab() if tokenizer is not None else vocab_size >= min_vocab
        if found and (tokenizer is not None or vocab_size < 2 * min_vocab):
            return template, f"Llama architecture with {why if tokenizer is not None else f'vocab_size {vocab_size}'}"
    return "vicuna_v1", "Llama architecture, neither a Llama-3 nor a Yi tokenizer (Vicuna; MGM's default)"


def convert_mgm_config(mgm: dict[str, Any], image_token_id: int | None = None,
                       template: str | None = None) -> MiniGeminiConfig:
    """Build our config from an MGM `config.json` dict (tower architectures from its `fixture` entry
    when present, else from the standard CLIP ViT-L/14-336 and ConvNeXt-L presets); `template`
    defaults to `detect_template(mgm)`."""
    model_type = llm_model_type(mgm)
    text = {k: v for k, v in mgm.items() if not any(k.startswith(p) for p in MGM_ONLY_KEYS)}
    text["model_type"] = model_type
    extra = mgm.get("fixture", {})
    lr = copy.deepcopy(DEFAULT_LR_TOWER)
    lr["select_layer"] = mgm.get("mm_vision_select_layer", -2)
    lr["select_feature"] = mgm.get("mm_vision_select_feature", "patch")
    if "lr_tower" in extra:
        clip_keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size",
                     "patch_size", "hidden_act", "layer_norm_eps", "projection_dim", "num_channels")
        lr["clip_config"] = {k: extra["lr_tower"]["config"][k] for k in clip_keys if k in extra["lr_tower"]["config"]}
        lr["weights"] = None
    hr = copy.deepcopy(DEFAULT_HR_TOWER)
    if "hr_tower" in extra:
        kw = extra["hr_tower"]["timm_convnext_kwargs"]
        hr.update(timm_name=None, weights=None, drop_path_rate=float(kw.get("drop_path_rate", 0.0)),
                  timm_kwargs={"depths": list(kw["depths"]), "dims": list(kw["dims"])})
    elif "xxlarge" in str(mgm.get("mm_vision_tower_aux", "")):
        hr.update(timm_name="convnext_xxlarge", weights="open_clip:convnext_xxlarge:laion2b_s34b_b82k_augreg_soup")
    vocab = int(mgm["vocab_size"])
    return MiniGeminiConfig(
        text_config=text, vision_lr=lr, vision_hr=hr,
        image_size=int(lr["clip_config"]["image_size"]), image_size_aux=int(mgm.get("image_size_aux", 768)),
        image_grid=int(mgm.get("image_grid", 1) or 1), image_global=bool(mgm.get("image_global", False)),
        image_aspect_ratio=mgm.get("image_aspect_ratio", "pad"), projector_type=mgm.get("mm_projector_type", "mlp2x_gelu"),
        image_token_id=image_token_id if image_token_id is not None else vocab,
        template=template or detect_template(mgm)[0], pad_token_id=mgm.get("pad_token_id"),
    )


def load_mgm_state_dict(folder: str | Path) -> dict[str, torch.Tensor]:
    """Read every safetensors shard of an MGM checkpoint folder, renamed to our keys."""
    folder = Path(folder)
    shards = sorted(folder.glob("*.safetensors"))
    shards = [s for s in shards if not s.name.startswith(("inputs", "expected"))]
    if not shards:
        raise FileNotFoundError(f"no *.safetensors weights in {folder} (.bin checkpoints: convert them to safetensors first)")
    state: dict[str, torch.Tensor] = {}
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            for key in f.keys():
                state[convert_key(key)] = f.get_tensor(key)
    return state


def convert_mgm_checkpoint(folder: str | Path, image_token_id: int | None = None, dtype: torch.dtype | None = None,
                           template: str | None = None) -> "MiniGeminiForCausalLM":
    """Load an MGM checkpoint folder as a `MiniGeminiForCausalLM` (weights checked: strict load).

    The LLM goes through transformers' `from_pretrained` (its legacy-checkpoint conversions apply);
    towers, mining and projector load strictly into our modules.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    from .modeling import MiniGeminiForCausalLM

    folder = Path(folder)
    config = convert_mgm_config(json.loads((folder / "config.json").read_text()), image_token_id, template)
    state = load_mgm_state_dict(folder)
    prefix = "language_model."
    llm_state = {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
    llm_state = {k: v for k, v in llm_state.items() if not k.endswith("rotary_emb.inv_freq")}  # recomputed
    llm_class = MODEL_FOR_CAUSAL_LM_MAPPING[type(config.text_config)]
    llm, info = llm_class.from_pretrained(None, config=config.text_config, state_dict=llm_state,
                                          output_loading_info=True, dtype=dtype or torch.float32)
    bad = {k: sorted(info[k])[:5] for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info[k]}
    if bad or info["error_msgs"]:
        raise ValueError(f"the LLM weights of {folder} do not fit its config.json: {bad or info['error_msgs']}")
    model = MiniGeminiForCausalLM(config, language_model=llm)
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(prefix) and not _is_ignorable_missing(k, model)]
    if missing or result.unexpected_keys:
        raise ValueError(f"checkpoint {folder} does not fit the converted config: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    if dtype is not None:
        model.to(dtype)
    return model.eval()


def _is_ignorable_missing(key: str, model: torch.nn.Module) -> bool:
    # Tied LM heads are stored once; CLIP layers past select_layer never run but are kept if present.
    tied = key == "language_model.lm_head.weight" and model.config.text_config.tie_word_embeddings
    return tied or bool(re.search(r"position_ids$", key))
