"""Fast training-image path: the tensors of `MiniGeminiProcessor.preprocess_image`, computed in fewer passes.

The processor's path decodes with PIL, pads a PIL image, converts it to numpy and runs transformers'
PIL-backend `CLIPImageProcessorPil` (PIL bicubic resize, numpy centre crop, rescale in float64 -> float32,
normalise in float32: MGM's transformers-4 pixels). This module computes the same operations on one uint8
tensor: JPEG decoded by torchvision (libjpeg-turbo, same pixels as PIL for RGB and grayscale JPEGs;
other files and modes go through the processor's own `load_image`), padded in uint8, resized by PIL's C
bicubic on that uint8 image (skipped when the size is already right, where PIL would return a copy),
cropped as a view, converted to float32 in the same pass as the layout change, then `/ 255`, `- mean`,
`/ std` in place in float32 (float32 `x / 255` equals the processor's float64 `x * (1/255)` rounded to
float32 for every uint8 value: checked in the tests); LR / HD views are derived as the processor does.
Result: bit-identical to `preprocess_image` (`tests/data/test_image_pipeline.py`), so a feature cache
built by the processor matches training on the fly bit for bit.
"""
from __future__ import annotations

import logging
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io as tvio
from PIL import Image

from minigemini.model.configuration import MiniGeminiConfig
from minigemini.model.processing import MiniGeminiProcessor, load_image

logger = logging.getLogger(__name__)
JPEG_MODES = ("RGB", "L")  # JPEG colour modes torchvision decodes to PIL's RGB pixels (CMYK etc. go via PIL)
ASPECT_MODES = ("pad", "resize", "crop")
UINT8_MAX = 255  # CLIPImageProcessor's rescale_factor is 1 / UINT8_MAX
# torchvision >= 0.29 warns on every decode that torchcodec will take image decoding over one day; the
# decoder is the same libjpeg-turbo and the tests compare its pixels with PIL's, so one warning per run is enough.
warnings.filterwarnings("once", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W] in HWC memory (as torchvision's decoder returns it), one copy."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def decode_rgb(image: str | Path | Image.Image) -> torch.Tensor:
    """Decode to uint8 RGB [3, H, W] with the pixels of `load_image` (EXIF orientation applied)."""
    if isinstance(image, Image.Image):
        return pil_to_uint8(load_image(image))
    with Image.open(image) as probe:  # reads the header only
        fast = probe.format == "JPEG" and probe.mode in JPEG_MODES
    if not fast:
        return pil_to_uint8(load_image(image))
    try:
        data = tvio.read_file(str(image))
        return tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, apply_exif_orientation=True)
    except RuntimeError as exc:  # truncated/corrupt data: PIL raises OSError there, so do we
        raise OSError(f"cannot decode JPEG {image}: {exc}") from exc


def pad_to_square(x: torch.Tensor, fill: tuple[int, int, int]) -> torch.Tensor:
    """Centre `x` [3, H, W] on a square uint8 canvas of `fill` (LLaVA/MGM `expand2square`)."""
    _, h, w = x.shape
    if h == w:
        return x
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    canvas = torch.empty(side, side, 3, dtype=torch.uint8)  # HWC memory, as decoded
    rows = canvas.view(side, side * 3)
    pattern = torch.tensor(fill, dtype=torch.uint8).repeat(side)  # one row of fill: bands are row copies
    for band in (rows[:top], rows[top + h:], rows[top:top + h, :left * 3], rows[top:top + h, (left + w) * 3:]):
        band.copy_(pattern[:band.shape[1]].expand_as(band))
    canvas[top:top + h, left:left + w] = x.permute(1, 2, 0)
    return canvas.permute(2, 0, 1)


def clip_resize_crop(x: torch.Tensor, side: int) -> torch.Tensor:
    """CLIPImageProcessorPil's geometry on uint8: shortest edge -> `side` (PIL bicubic), centre crop."""
    h, w = x.shape[-2:]
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(side * long / short)
    size = (side, new_long) if h <= w else (new_long, side)
    if (h, w) != size:
        image = Image.fromarray(np.ascontiguousarray(x.permute(1, 2, 0).numpy()))  # no copy when HWC in memory
        x = pil_to_uint8(image.resize((size[1], size[0]), Image.BICUBIC))
    top, left = (size[0] - side) // 2, (size[1] - side) // 2
    return x[:, top:top + side, left:left + side]


def split_views(lr: torch.Tensor, side: int, grid: int, use_global: bool) -> torch.Tensor:
    """[3, grid*side, grid*side] -> [grid², 3, side, side] crops row by row (+ the bilinear global view)."""
    crops = lr.reshape(3, grid, side, grid, side).permute(1, 3, 0, 2, 4).reshape(grid * grid, 3, side, side)
    if use_global:
        glob = F.interpolate(lr[None], size=(side, side), mode="bilinear", align_corners=False)
        crops = torch.cat([crops, glob], dim=0)
    return crops.contiguous()


class FastImagePipeline:
    """`pipeline(image)` == `MiniGeminiProcessor(…, config).preprocess_image(image)`, decoded once, uint8 to the end."""

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

    def squared(self, image: str | Path | Image.Image) -> torch.Tensor:
        """The decoded image after the aspect-ratio step, uint8 [3, H, W]."""
        mode = self.config.image_aspect_ratio
        if mode == "resize":  # the processor resizes the PIL image to the full side here: do the same
            side = self.config.image_size_aux
            return pil_to_uint8(load_image(image).resize((side, side), Image.BICUBIC))
        x = decode_rgb(image)
        return pad_to_square(x, self.fill) if mode == "pad" else x

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
