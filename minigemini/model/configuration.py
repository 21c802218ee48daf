"""MiniGeminiConfig: one config for the whole model (LLM + two towers + mining + projector).

The LLM is described by a nested `text_config` (any `AutoConfig` model type), so one wrapper
serves Llama, Gemma, Mistral/Mixtral, Qwen2, Phi... The towers are described by plain dicts
(`vision_lr`, `vision_hr`) holding the full architecture, so a saved model rebuilds without any
hub access; where the pretrained weights come from is a separate `weights` entry that only the
training builder reads.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import AutoConfig, PretrainedConfig

DEFAULT_LR_TOWER: dict[str, Any] = {
    "backend": "hf_clip",
    "weights": "openai/clip-vit-large-patch14-336",
    "select_layer": -2,
    "select_feature": "patch",
    "clip_config": {
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
        "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
        "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 768,
    },
}

DEFAULT_HR_TOWER: dict[str, Any] = {
    "backend": "timm_convnext",
    "weights": "open_clip:convnext_large_d_320:laion2b_s29b_b131k_ft_soup",
    "timm_name": "convnext_large",
    "timm_kwargs": {},
    "drop_path_rate": 0.1,
}

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MiniGeminiConfig(PretrainedConfig):
    """Configuration of a Mini-Gemini model; `text_config` is the wrapped causal LM's config."""

    model_type = "minigemini"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config: dict | PretrainedConfig | None = None,
        vision_lr: dict | None = None,
        vision_hr: dict | None = None,
        image_size: int = 336,
        image_size_aux: int = 768,
        image_grid: int = 1,
        image_global: bool = False,
        image_aspect_ratio: str = "pad",
        lr_from_hr: bool = True,
        image_mean: tuple[float, ...] | list[float] = OPENAI_CLIP_MEAN,
        image_std: tuple[float, ...] | list[float] = OPENAI_CLIP_STD,
        use_hr: bool = True,
        projector_type: str = "mlp2x_gelu",
        image_token: str = "<image>",
        image_token_id: int | None = None,
        template: str = "vicuna_v1",
        supervised_logits_only: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            text_config = AutoConfig.for_model(text_config.pop("model_type", "llama"), **text_config)
        self.text_config = text_config if text_config is not None else AutoConfig.for_model("llama")
        self.vision_lr = copy.deepcopy(vision_lr) if vision_lr is not None else copy.deepcopy(DEFAULT_LR_TOWER)
        self.vision_hr = copy.deepcopy(vision_hr) if vision_hr is not None else copy.deepcopy(DEFAULT_HR_TOWER)
        self.image_size = image_size
        self.image_size_aux = image_size_aux
        self.image_grid = image_grid
        self.image_global = image_global
        self.image_aspect_ratio = image_aspect_ratio
        self.lr_from_hr = lr_from_hr
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.use_hr = use_hr
        self.projector_type = projector_type
        self.image_token = image_token
        self.image_token_id = image_token_id
        self.template = template
        self.supervised_logits_only = supervised_logits_only
        kwargs.setdefault("tie_word_embeddings", False)
        text_attn = getattr(self.text_config, "_attn_implementation", None)
        super().__init__(**kwargs)
        if text_attn is not None and self.text_config._attn_implementation is None:
            # PretrainedConfig propagates the top-level attn_implementation (None) into sub-configs; an
            # already-built LLM sharing this text_config would lose its causal attention dispatch.
            self.text_config._attn_implementation = text_attn
        self._check()

    def _check(self) -> None:
        if self.image_global and self.image_grid < 2:
            raise ValueError("image_global=True needs image_grid >= 2 (MGM-HD: grid crops plus one global view)")
        feature = (self.vision_lr or {}).get("select_feature", "patch")
        if feature != "patch":  # CLS + patches: N+1 tokens per view, but mining and <image> expansion count N
            raise ValueError(f"vision_lr select_feature {feature!r} is not supported (patch info mining and the "
                             "image-token count need the patch grid only): use select_feature 'patch'")
        patch = self.lr_patch_size
        if self.image_size % patch:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the LR patch size {patch}")

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def lr_patch_size(self) -> int:
        """Patch size of the LR ViT."""
        spec = self.vision_lr
        if "clip_config" in spec:
            return int(spec["clip_config"].get("patch_size", 14))
        if "model_cfg" in spec:
            return int(spec["model_cfg"]["vision_cfg"].get("patch_size", 14))
        return int(spec.get("patch_size", 14))

    @property
    def tokens_per_view(self) -> int:
        """N: visual tokens one LR view gives ((side / patch)^2, CLS dropped)."""
        return (self.image_size // self.lr_patch_size) ** 2

    @property
    def num_views(self) -> int:
        """LR views per image: 1, or grid^2 (+1 global) in the HD variant."""
        return self.image_grid**2 + (1 if self.image_global else 0) if self.image_grid > 1 else 1

    @property
    def num_image_tokens(self) -> int:
        """Placeholder tokens one `<image>` expands into (N, or 5N for HD 2x2 + global)."""
        return self.tokens_per_view * self.num_views

    # ---- presets -------------------------------------------------------------------------
    @classmethod
    def tiny(cls, llm: str = "llama", hd: bool = False, vocab_size: int = 512, **overrides: Any) -> "MiniGeminiConfig":
        """A random-init model small enough for CPU tests in seconds (same shapes as the MGM fixture)."""
        text = tiny_text_config(llm, vocab_size)
        grid = 2 if hd else 1
        cfg = dict(
            text_config=text,
            vision_lr={
                "backend": "hf_clip", "weights": None, "select_layer": -2, "select_feature": "patch",
                "clip_config": {"hidden_size": 48, "intermediate_size": 192, "num_hidden_layers": 3,
                                "num_attention_heads": 4, "image_size": 56, "patch_size": 14,
                                "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 32},
            },
            vision_hr={"backend": "timm_convnext", "weights": None, "timm_name": None,
                       "timm_kwargs": {"depths": [1, 1, 2, 1], "dims": [8, 16, 32, 64]}, "drop_path_rate": 0.0},
            image_size=56, image_size_aux=128 * grid, image_grid=grid, image_global=hd,
            image_token_id=vocab_size,
        )
        cfg.update(overrides)
        return cls(**cfg)


def tiny_text_config(llm: str, vocab_size: int = 512) -> PretrainedConfig:
    """Tiny random-init LLM configs for the families the wrapper is tested on."""
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if llm == "gemma":
        common.update(head_dim=16)
    if llm == "phi3":
        common.update(num_key_value_heads=4)
    cfg = AutoConfig.for_model(llm, **common)
    if llm in ("llama", "mistral"):
        cfg.tie_word_embeddings = False
    return cfg


AutoConfig.register("minigemini", MiniGeminiConfig, exist_ok=True)
