"""MiniGeminiForCausalLM: two frozen towers + patch info mining + projector around ANY causal LM.

The wrapped LLM is whatever `AutoModelForCausalLM.from_config(config.text_config)` builds, so no
per-architecture subclass exists. Visual tokens replace the image-placeholder ids with one
`masked_scatter` (the processor already expanded each `<image>` into N ids), so masks, packing,
generation and the KV cache need no special cases.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from .configuration import MiniGeminiConfig
from .constants import IGNORE_INDEX
from .mining import PatchInfoMining
from .projector import build_projector
from .towers import build_tower, merge_stage_maps

IMAGE_INPUT_KEYS = ("images", "images_aux", "lr_features", "hr_features")


class MiniGeminiPreTrainedModel(PreTrainedModel):
    """Shared HF plumbing; only mining and projector are initialised here (towers/LLM do their own)."""

    config_class = MiniGeminiConfig
    config: MiniGeminiConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _skip_keys_device_placement = ["cache", "past_key_values"]  # the KV cache argument (new and old name)

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "mining", None) or module is getattr(self, "projector", None):
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()


class MiniGeminiForCausalLM(MiniGeminiPreTrainedModel, GenerationMixin):
    """Mini-Gemini: `model(input_ids, attention_mask, labels=None, images=LR, images_aux=HR)`."""

    accepts_loss_kwargs = True

    def __init__(self, config: MiniGeminiConfig, language_model: PreTrainedModel | None = None) -> None:
        super().__init__(config)
        self.language_model = language_model or AutoModelForCausalLM.from_config(config.text_config)
        self.vision_lr = build_tower(config.vision_lr)
        self.vision_hr = build_tower(config.vision_hr) if config.use_hr else None
        lr_dim = self.vision_lr.hidden_size
        self.mining = PatchInfoMining(lr_dim, self.vision_hr.hidden_size) if config.use_hr else None
        self.projector = build_projector(config.projector_type, lr_dim, config.text_config.hidden_size)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args: Any, allow_partial: bool = False, **kwargs: Any) -> Any:
        """`PreTrainedModel.from_pretrained`, with the towers frozen again as after `__init__` (transformers v5
        loads every floating-point weight as a new `nn.Parameter(requires_grad=True)`). A folder with missing,
        unexpected or wrongly shaped weights is an error naming them (a model with random-init parts would
        answer nonsense), unless `allow_partial=True`."""
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        model.freeze_towers()
        problems = {kind: sorted(map(str, info.get(f"{kind}_keys") or ())) for kind in ("missing", "unexpected",
                                                                                         "mismatched")}
        if not allow_partial and any(problems.values()):
            where = args[0] if args else kwargs.get("pretrained_model_name_or_path")
            text = "; ".join(f"{len(v)} {k} ({', '.join(v[:5])}{', ...' if len(v) > 5 else ''})"
                             for k, v in problems.items() if v)
            raise ValueError(f"{where}: the weights do not fit the model: {text}. Is this a complete model folder "
                             "(a training run's export, not a checkpoint-N folder)? Pass allow_partial=True to "
                             "load it anyway with those weights left as initialised")
        return (model, info) if want_info else model

    def freeze_towers(self) -> None:
        """Towers: no gradients, eval mode (they then ignore `.train()`, see towers.py)."""
        for tower in (self.vision_lr, self.vision_hr):
            if tower is not None:
                tower.requires_grad_(False)
                tower.eval()

    # ---- HF plumbing ---------------------------------------------------------------------
    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # ---- images -> visual tokens -----------------------------------------------------------
    def encode_lr(self, images: torch.Tensor) -> torch.Tensor:
        """LR tower over every view: [B, 3, h, w] or [B, V, 3, h, w] -> [B*V, N, C_lr] in MGM's view order."""
        return self.vision_lr(self.flatten_views(images, item_dims=3))

    def flatten_views(self, x: torch.Tensor, item_dims: int) -> torch.Tensor:
        """[B, V, *item] -> [B*V, *item] in MGM's view order (all grid crops first, then all global views);
        [B, *item] is returned as is. Used for LR images (item [3, h, w]) and cached LR features ([N, C])."""
        if x.dim() != item_dims + 2:
            return x
        if self.config.image_global:
            return torch.cat([x[:, :-1].flatten(0, 1), x[:, -1]], dim=0)
        return x.flatten(0, 1)

    def encode_images(
        self,
        images: torch.Tensor | None = None,
        images_aux: torch.Tensor | None = None,
        lr_features: torch.Tensor | None = None,
        hr_features: torch.Tensor | list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Visual tokens for the LLM, [num_images, T, D_llm] (T = N, or 5N for HD); features may come from a cache:
        `lr_features` [n_images, (V,) N, C_lr], `hr_features` the HR map or the HR tower's list of stage maps."""
        lr = self.flatten_views(lr_features, item_dims=2) if lr_features is not None else self.encode_lr(images)
        lr = lr.to(self.projector_dtype)
        grid, use_global = self.config.image_grid, self.config.image_global
        n_img = lr.shape[0] // self.config.num_views
        if self.mining is not None:
            hr = hr_features if hr_features is not None else self.vision_hr(images_aux)
            if isinstance(hr, (list, tuple)):  # stage maps (feature cache): upsample + concatenate here
                hr = merge_stage_maps(hr)
            lr = self.mining(lr, self.hr_windows(hr))  # one batched call over all views (casts hr itself)
        if grid > 1:
            crops = lr[: n_img * grid * grid].reshape(n_img, grid * grid * lr.shape[1], lr.shape[2])
            lr = torch.cat([lr[n_img * grid * grid:], crops], dim=1) if use_global else crops
        return self.projector(lr)

    def hr_windows(self, hr: torch.Tensor) -> torch.Tensor:
        """HR map per LR view, in `encode_lr`'s view order: HD splits the map into grid x grid crops
        and gives each global view the map downsampled by 1/grid (MGM)."""
        grid = self.config.image_grid
        if grid == 1:
            return hr
        b, c, h, w = hr.shape
        crops = hr.reshape(b, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5)
        crops = crops.reshape(b * grid * grid, c, h // grid, w // grid)
        if not self.config.image_global:
            return crops
        glob = F.interpolate(hr.float(), scale_factor=1 / grid, mode="bilinear", align_corners=False)
        return torch.cat([crops, glob.to(hr.dtype)], dim=0)

    @property
    def projector_dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    def embed_tokens(self, input_ids: torch.Tensor, visual: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with the visual tokens written where `input_ids == image_token_id`."""
        image_mask = input_ids == self.config.image_token_id
        embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
        n_slots = int(image_mask.sum())
        if visual is None:
            if n_slots:
                raise ValueError(f"input_ids hold {n_slots} image tokens but no images were given")
            return embeds
        if n_slots != visual.shape[0] * visual.shape[1]:
            raise ValueError(
                f"input_ids hold {n_slots} image tokens but {visual.shape[0]} images give "
                f"{visual.shape[0]} x {visual.shape[1]} visual tokens; each <image> must expand to "
                f"{visual.shape[1]} ids (use MiniGeminiProcessor)")
        return embeds.masked_scatter(image_mask.unsqueeze(-1), visual.to(embeds.dtype))

    # ---- forward -----------------------------------------------------------------------------
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # transformers 5.24 names the KV cache `cache`
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        images: torch.Tensor | None = None,
        images_aux: torch.Tensor | None = None,
        lr_features: torch.Tensor | None = None,
        hr_features: torch.Tensor | list[torch.Tensor] | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ModelOutput:
        """Causal-LM forward through the LLM's own `forward`, so its own logits terms (Granite's
        `logits_scaling`, Gemma-2 soft-capping, Cohere's `logit_scale`...) and MoE router outputs are kept;
        returns the LLM's output class (`CausalLMOutputWithPast`, or `MoeCausalLMOutputWithPast` with
        `aux_loss`). With labels and `config.supervised_logits_only`, logits are only computed at supervised
        positions (returned `logits` is then None) — same loss, less work. `past_key_values` (the old name of
        `cache`) is accepted through transformers' deprecation wrapper."""
        if use_cache is None and labels is not None:  # training: no KV cache (transformers ignores packed
            use_cache = False  # position_ids when a cache exists, see minigemini/data/packing.py)
        if inputs_embeds is None:
            has_images = images is not None or lr_features is not None
            visual = self.encode_images(images, images_aux, lr_features, hr_features) if has_images else None
            inputs_embeds = self.embed_tokens(input_ids, visual)
        if cache is not None:
            kwargs[self._cache_argument] = cache
        supervised_only = labels is not None and self.config.supervised_logits_only
        if supervised_only:  # a boolean [B, L] mask: the LLM returns logits [n_supervised, V]
            logits_to_keep = F.pad(labels[:, 1:] != IGNORE_INDEX, (0, 1))
        out = self.language_model(attention_mask=attention_mask, position_ids=position_ids,
                                  inputs_embeds=inputs_embeds, use_cache=use_cache, logits_to_keep=logits_to_keep,
                                  **kwargs)
        if labels is None:
            return out
        if supervised_only:
            logits, targets = out.logits, labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]
        else:
            keep = labels[:, 1:] != IGNORE_INDEX
            logits, targets = out.logits[:, :-1][keep], labels[:, 1:][keep]
        loss = _cross_entropy(logits, targets, num_items_in_batch)
        aux = self._router_aux_loss(out)
        if aux is not None:
            loss = loss + aux.to(loss.device)
        drop = {"loss", "logits"} if supervised_only else {"loss"}
        return type(out)(loss=loss, **{k: v for k, v in out.items() if k not in drop})

    @property
    def _cache_argument(self) -> str:
        """The LLM's name for the KV-cache argument (`cache` in transformers 5; `past_key_values` before)."""
        params = inspect.signature(self.language_model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _router_aux_loss(self, out: ModelOutput) -> torch.Tensor | None:
        """The MoE load-balancing term the HF model adds to its own loss (Mixtral, Qwen2-MoE...: present when
        the LLM runs with `output_router_logits`), weighted by its config's `router_aux_loss_coef`."""
        aux = out.get("aux_loss")
        if aux is None:
            return None
        return self.config.text_config.router_aux_loss_coef * aux

    def _expand_inputs_for_generation(self, expand_size: int = 1, is_encoder_decoder: bool = False,
                                      input_ids: torch.LongTensor | None = None, **model_kwargs: Any) -> tuple:
        """Beam search / several sequences per prompt repeat every ROW; image inputs are stacked per IMAGE
        (a row may hold several), so each row's own images are repeated with it (HF's repeat_interleave
        over the image stack would give row 0's beams image 0 twice)."""
        images = {k: model_kwargs.pop(k) for k in IMAGE_INPUT_KEYS if model_kwargs.get(k) is not None}
        input_ids, model_kwargs = super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids,
                                                                        **model_kwargs)
        if images and expand_size > 1 and input_ids is not None:
            index = self._image_index_per_row(input_ids[::expand_size], expand_size, images)
            for key, value in images.items():
                images[key] = [v.index_select(0, index) for v in value] if isinstance(value, (list, tuple)) \
                    else value.index_select(0, index)
        return input_ids, {**model_kwargs, **images}

    def _image_index_per_row(self, input_ids: torch.Tensor, expand_size: int, images: dict[str, Any]) -> torch.Tensor:
        """Indices into the image stack giving each row's images `expand_size` times, row after row."""
        first = next(iter(images.values()))
        n_images = (first[0] if isinstance(first, (list, tuple)) else first).shape[0]
        slots = (input_ids == self.config.image_token_id).sum(1)
        per_image, rest = divmod(int(slots.sum()), max(n_images, 1))
        if rest or not per_image or bool((slots % per_image).any()):
            raise ValueError(f"input_ids hold {int(slots.sum())} image tokens for {n_images} images; "
                             "each <image> must expand to the same number of ids (use MiniGeminiProcessor)")
        counts = (slots // per_image).tolist()
        starts = [sum(counts[:b]) for b in range(len(counts))]
        rows = [torch.arange(s, s + c).repeat(expand_size) for s, c in zip(starts, counts)]
        return torch.cat(rows).to(first[0].device if isinstance(first, (list, tuple)) else first.device)

    def prepare_inputs_for_generation(self, *args: Any, is_first_iteration: bool | None = False, **kwargs: Any) -> dict:
        """Images are consumed at prefill; later steps read them from the KV cache."""
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in IMAGE_INPUT_KEYS:
                model_inputs.pop(key, None)
        return model_inputs


def _cross_entropy(logits: torch.Tensor, targets: torch.Tensor, num_items: Any) -> torch.Tensor:
    """Mean CE over all supervised tokens of the batch (or over `num_items` under grad accumulation)."""
    total = F.cross_entropy(logits.float(), targets, reduction="sum")
    denom = num_items if num_items is not None else targets.numel()
    if isinstance(denom, torch.Tensor):
        denom = denom.to(total.device)
    return total / max(denom, 1) if not isinstance(denom, torch.Tensor) else total / denom.clamp(min=1)


for _auto in (AutoModelForCausalLM, AutoModelForImageTextToText, AutoModel):
    _auto.register(MiniGeminiConfig, MiniGeminiForCausalLM, exist_ok=True)
