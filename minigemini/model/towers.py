"""The two frozen vision encoders, behind one small contract.

`LowResTower` (CLIP ViT) returns patch tokens `[B, N, C_lr]` from a chosen layer (CLS dropped);
`HighResTower` (ConvNeXt) returns MGM's multi-stage map `[B, C_hr, H/4, W/4]`: all four stages,
stages 1-3 bilinearly upsampled to stage 0's size, concatenated on channels.

Both are built from an architecture dict stored in `MiniGeminiConfig` (no hub access), and can
then load pretrained weights from the dict's `weights` entry (hub id, open_clip name + tag, timm
name or local path). A frozen tower stays in eval mode and runs without autograd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class FrozenAwareTower(nn.Module):
    """Base: a tower that, while frozen, ignores `.train()` and runs under `no_grad`."""

    hidden_size: int

    @property
    def frozen(self) -> bool:
        """True when no parameter of the tower requires grad."""
        return not any(p.requires_grad for p in self.parameters())

    def train(self, mode: bool = True) -> "FrozenAwareTower":
        # Stochastic depth / dropout must not act on a frozen feature extractor.
        return super().train(mode and not self.frozen)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                return self.features(pixel_values)
        return self.features(pixel_values)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LowResTower(FrozenAwareTower):
    """CLIP ViT through `transformers.CLIPVisionModel`; only the layers up to `select_layer` run."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel

        self.spec = spec
        clip_config = CLIPVisionConfig(**spec["clip_config"])
        self.clip = CLIPVisionModel(clip_config)
        self.hidden_size = clip_config.hidden_size
        layers = clip_config.num_hidden_layers
        select = int(spec.get("select_layer", -2))
        # hidden_states[k] is the output after k encoder layers (k=0: embeddings + pre-LN).
        self.num_layers_used = layers + 1 + select if select < 0 else select
        if not 0 <= self.num_layers_used <= layers:
            raise ValueError(f"select_layer {select} is out of range for a {layers}-layer ViT")
        self.select_feature = spec.get("select_feature", "patch")
        if self.select_feature != "patch":  # CLS + patches would break mining's grid and the image-token count
            raise ValueError(f"select_feature must be 'patch', got {self.select_feature!r}")

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        vm = self.clip
        dtype = vm.embeddings.patch_embedding.weight.dtype
        hidden = vm.pre_layrnorm(vm.embeddings(pixel_values.to(dtype)))
        for layer in vm.encoder.layers[: self.num_layers_used]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]  # patch tokens (CLS dropped)

    def load_pretrained(self, weights: str) -> None:
        """Load CLIP weights from a hub id or a local folder (a `CLIPVisionModel` checkpoint)."""
        from transformers import CLIPVisionModel

        loaded = CLIPVisionModel.from_pretrained(weights)
        self.clip.load_state_dict(loaded.state_dict(), strict=True)


class OpenClipLowResTower(FrozenAwareTower):
    """CLIP ViT through open_clip (`forward_intermediates`); architecture from `model_cfg` or the
    open_clip registry (`model_name`, bundled with the package: no download)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        import open_clip
        from open_clip.model import _build_vision_tower

        self.spec = spec
        cfg = spec.get("model_cfg") or open_clip.get_model_config(spec["model_name"])
        if cfg is None:
            raise ValueError(f"open_clip has no config for {spec.get('model_name')!r}; give model_cfg in the tower spec")
        self.model_name = spec.get("model_name")
        self.visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=cfg.get("quick_gelu", False))
        self.hidden_size = int(self.visual.transformer.width)
        layers = int(self.visual.transformer.layers)
        select = int(spec.get("select_layer", -2))
        used = layers + 1 + select if select < 0 else select
        if not 1 <= used <= layers:
            raise ValueError(f"select_layer {select} is out of range for a {layers}-layer open_clip ViT")
        self.block_index = used - 1  # output of block i == HF hidden_states[i + 1]
        if spec.get("select_feature", "patch") != "patch":
            raise ValueError("the open_clip LR backend supports select_feature='patch' only")

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.visual.conv1.weight.dtype
        out = self.visual.forward_intermediates(pixel_values.to(dtype), indices=[self.block_index], stop_early=True,
                                                intermediates_only=True, output_fmt="NLC")
        return out["image_intermediates"][0]

    def load_pretrained(self, weights: str) -> None:
        """Weights: an open_clip pretrained tag or file for `model_name`, or `local-dir:/path`."""
        import open_clip

        if weights.startswith("local-dir:"):
            model = open_clip.create_model(weights)
        else:
            model = open_clip.create_model(self.model_name, pretrained=weights)
        self.visual.load_state_dict(model.visual.state_dict(), strict=True)


class HighResTower(FrozenAwareTower):
    """timm ConvNeXt stem + 4 stages; MGM's multi-stage feature map."""

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        import timm
        from timm.models.convnext import ConvNeXt

        self.spec = spec
        kwargs = dict(spec.get("timm_kwargs") or {})
        drop_path = float(spec.get("drop_path_rate", 0.0))
        if spec.get("timm_name"):
            net = timm.create_model(spec["timm_name"], pretrained=False, num_classes=0,
                                    drop_path_rate=drop_path, **kwargs)
        else:
            net = ConvNeXt(num_classes=0, drop_path_rate=drop_path, **kwargs)
        self.stem = net.stem
        self.stages = net.stages
        self.stage_channels = [int(info["num_chs"]) for info in net.feature_info]
        self.hidden_size = sum(self.stage_channels)
        self.channels_last = bool(spec.get("channels_last", True))

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        maps = self.stage_maps(pixel_values)
        if torch.is_autocast_enabled(pixel_values.device.type):  # merge (425 MB at 768 px) in bf16, not fp32
            maps = [m.to(torch.get_autocast_dtype(pixel_values.device.type)) for m in maps]
        return merge_stage_maps(maps)

    def stage_maps(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs [B, C_i, H/2^(i+2), W/2^(i+2)] (what a feature cache stores: 8x smaller)."""
        x = pixel_values.to(self.stem[0].weight.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def load_pretrained(self, weights: str) -> None:
        """Load ConvNeXt weights: `open_clip:NAME:TAG`, `open_clip:local-dir:/path`, `timm:NAME`,
        or a local .safetensors file/folder."""
        state = _convnext_state_dict(weights)
        own = {k: v for k, v in state.items() if k.startswith(("stem.", "stages."))}
        missing, unexpected = self.load_state_dict(own, strict=False)
        if missing:
            raise ValueError(f"ConvNeXt weights {weights!r} lack {len(missing)} keys, e.g. {missing[:3]}")


def merge_stage_maps(maps: list[torch.Tensor] | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """MGM's HR map from the stage outputs: stages 1-3 bilinearly upsampled to stage 0's size, concatenated
    on channels. The memory format is kept (channels-last in, channels-last out: mining regroups it fastest)."""
    size = maps[0].shape[-2:]
    ups = [maps[0]] + [F.interpolate(m if m.dtype in (torch.float32, torch.bfloat16) else m.float(), size=size,
                                     mode="bilinear", align_corners=False).to(m.dtype) for m in maps[1:]]
    return torch.cat(ups, dim=1)


def _convnext_state_dict(weights: str) -> dict[str, torch.Tensor]:
    if weights.startswith("open_clip:"):
        import open_clip

        source = weights[len("open_clip:"):]
        if source.startswith("local-dir:"):
            model = open_clip.create_model(source)
        else:
            name, _, tag = source.partition(":")
            model = open_clip.create_model(name, pretrained=tag or None)
        return model.visual.trunk.state_dict()
    if weights.startswith("timm:"):
        import timm

        return timm.create_model(weights[5:], pretrained=True, num_classes=0).state_dict()
    path = Path(weights)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.exists():
        raise FileNotFoundError(f"ConvNeXt weights not found: {path} (give open_clip:NAME:TAG, timm:NAME or a .safetensors path)")
    from safetensors.torch import load_file

    return load_file(str(path))


TOWER_BACKENDS = {"hf_clip": LowResTower, "open_clip_vit": OpenClipLowResTower, "timm_convnext": HighResTower}


def build_tower(spec: dict[str, Any], frozen: bool = True) -> FrozenAwareTower:
    """Build a tower from its architecture dict (random init; call `load_pretrained` for weights)."""
    backend = spec.get("backend")
    if backend not in TOWER_BACKENDS:
        raise ValueError(f"unknown tower backend {backend!r}; valid: {sorted(TOWER_BACKENDS)}")
    tower = TOWER_BACKENDS[backend](spec)
    if frozen:
        tower.requires_grad_(False)
        tower.eval()
    return tower
