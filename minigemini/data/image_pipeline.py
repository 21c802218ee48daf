"""Fast training-image path: the tensors of `MiniGeminiProcessor.preprocess_image`, computed in fewer passes.

The processor's path decodes and pads with PIL, converts to numpy and runs transformers' PIL-backend
`CLIPImageProcessorPil` (PIL bicubic resize, numpy centre crop, rescale in float64 -> float32, normalise in
float32: MGM's transformers-4 pixels). This module keeps every step that decides a pixel in PIL, the very
functions the processor calls (`load_image`, `expand_to_square`, `Image.resize(BICUBIC)`), and replaces the
numpy rest: the resized uint8 image becomes a tensor in one copy, is cropped as a view, converted to float32
in the same pass as the layout change, then `/ 255`, `- mean`, `/ std` in place in float32 (float32
`x / 255` equals the processor's float64 `x * (1/255)` rounded to float32 for every uint8 value: checked in
the tests); LR / HD views are derived as the processor does. Result: bit-identical to `preprocess_image`
(`tests/data/test_image_pipeline.py`), so a feature cache built by the processor matches training on the
fly bit for bit. `benchmarks/data_pipeline.py --stages` shows what bounds it: PIL's bicubic resize, which
any path with MGM's pixels has to run.
"""
from __future__ import annotations

import logging
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from minigemini.model.configuration import MiniGeminiConfig
from minigemini.model.image_processing import expand_to_square, load_image
from minigemini.model.processing import MiniGeminiProcessor

logger = logging.getLogger(__name__)
ASPECT_MODES = ("pad", "resize", "crop")
UINT8_MAX = 255  # CLIPImageProcessor's rescale_factor is 1 / UINT8_MAX


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W] in HWC memory, one copy."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def clip_resize_crop(image: Image.Image, side: int) -> torch.Tensor:
    """CLIPImageProcessorPil's geometry: shortest edge -> `side` (PIL bicubic; skipped when the size is
    already right, where PIL would return a copy), then the centre crop, as a uint8 [3, side, side] view."""
    w, h = image.size
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(side * long / short)
    size = (side, new_long) if h <= w else (new_long, side)
    if (h, w) != size:
        image = image.resize((size[1], size[0]), Image.BICUBIC)
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    return pil_to_uint8(image)[:, top:top + side, left:left + side]


def split_views(lr: torch.Tensor, side: int, grid: int, use_global: bool) -> torch.Tensor:
    """[3, grid*side, grid*side] -> [grid², 3, side, side] crops row by row (+ the bilinear global view)."""
    crops = lr.reshape(3, grid, side, grid, side).permute(1, 3, 0, 2, 4).reshape(grid * grid, 3, side, side)
    if use_global:
        glob = F.interpolate(lr[None], size=(side, side), mode="bilinear", align_corners=False)
        crops = torch.cat([crops, glob], dim=0)
    return crops.contiguous()


class FastImagePipeline:
    """`pipeline(image)` == `MiniGeminiProcessor(…, config).preprocess_image(image)`: PIL decides the pixels, torch the rest."""

    def __init__(self, config: MiniGeminiConfig) -> None:
        if config.image_aspect_ratio not in ASPECT_MODES:
            raise ValueError(f"image_aspect_ratio must be pad, resize or crop, got {config.image_aspect_ratio!r}")
        self.config = config
        self.mean = torch.tensor(config.image_mean, dtype=torch.float32).view(3, 1, 1)  # as numpy's float32 cast
        self.std = torch.tensor(config.image_std, dtype=torch.float32).view(3, 1, 1)
        self.fill = tuple(int(v * 255) for v in config.image_mean)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [3, H, W] (any memory layout) -> contiguous float32 (x / 255 - mean) / std, the processor's
        float32 steps (rescale, then normalise), in place."""
        out = torch.empty(x.shape, dtype=torch.float32)
        out.copy_(x)  # layout change and conversion in one pass (2x faster than .contiguous().float())
        return out.div_(UINT8_MAX).sub_(self.mean).div_(self.std)

    def squared(self, image: str | Path | Image.Image) -> Image.Image:
        """The decoded image after the aspect-ratio step (the processor's `square`, same PIL calls)."""
        pil = load_image(image)
        mode = self.config.image_aspect_ratio
        if mode == "pad":
            return expand_to_square(pil, self.fill)
        if mode == "resize":  # the processor resizes to the full side here
            side = self.config.image_size_aux
            return pil.resize((side, side), Image.BICUBIC)
        return pil

    def __call__(self, image: str | Path | Image.Image) -> dict[str, torch.Tensor]:
        """{"images": LR [3,h,w] (HD: [V,3,h,w]), "images_aux": HR [3,H,W] when the config uses HR}."""
        cfg = self.config
        x = self.squared(image)
        hr = self.normalize(clip_resize_crop(x, cfg.image_size_aux))
        side, grid = cfg.image_size, cfg.image_grid
        if cfg.lr_from_hr:
            lr = F.interpolate(hr[None], size=(side * grid, side * grid), mode="bilinear", align_corners=False)[0]
        else:
            lr = self.normalize(clip_resize_crop(x, side * grid))
        if grid > 1:
            lr = split_views(lr, side, grid, cfg.image_global)
        return {"images": lr, "images_aux": hr} if cfg.use_hr else {"images": lr}


def _config_key(config: MiniGeminiConfig) -> tuple:
    return (config.image_size, config.image_size_aux, config.image_grid, config.image_global,
            config.image_aspect_ratio, config.lr_from_hr, tuple(config.image_mean), tuple(config.image_std),
            config.use_hr)


_PIPELINES: dict[tuple, FastImagePipeline] = {}  # one per distinct image configuration


def pipeline_for(config: MiniGeminiConfig) -> FastImagePipeline:
    """The (shared) pipeline of `config`'s image settings."""
    key = _config_key(config)
    if key not in _PIPELINES:
        _PIPELINES[key] = FastImagePipeline(config)
    return _PIPELINES[key]


# (processor id, image settings) -> (the processor, did the fast path give its tensors bit for bit)
_CHECKED: dict[tuple, tuple[weakref.ref, bool]] = {}


def preprocess_image(processor: Any, image: str | Path | Image.Image) -> dict[str, torch.Tensor]:
    """`processor.preprocess_image(image)`, by the fast path when `processor` is the stock
    `MiniGeminiProcessor` (a stand-in such as the feature cache's keeps its own method). The first image
    of each processor (per process, so per DataLoader worker) is computed both ways; if they differ
    (a processor whose image settings live outside its config), that processor keeps its own path."""
    if type(processor).preprocess_image is not MiniGeminiProcessor.preprocess_image:
        return processor.preprocess_image(image)
    key = (id(processor), _config_key(processor.config))
    seen, same = _CHECKED.get(key, (None, False))
    if seen is None or seen() is not processor:  # first image of this processor (an id can be reused)
        ours, ref = pipeline_for(processor.config)(image), processor.preprocess_image(image)
        same = ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) for k in ref)
        _CHECKED[key] = (weakref.ref(processor), same)
        if not same:
            logger.warning("the fast image path differs from processor.preprocess_image on %s: using the "
                           "processor's (slower) path for this processor", image)
        return ref
    return pipeline_for(processor.config)(image) if same else processor.preprocess_image(image)
