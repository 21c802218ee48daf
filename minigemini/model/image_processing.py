"""The HR and LR image processors of a Mini-Gemini model (transformers image processor classes).

Images are decoded once. `MiniGeminiImageProcessor` (HR) squares the image as MGM does (pad with the
mean colour, resize, or centre crop) and applies CLIP preprocessing at the HR side.
`MiniGeminiLRImageProcessor` gives the LR views: bilinear downsampling of the HR tensor (MGM,
`from_hr=True`) or the same CLIP preprocessing at the LR side, then, in the HD variant, the grid crops
followed by one global view. Both save into `processor_config.json` and load with `from_dict`.

CLIP preprocessing runs on transformers' PIL backend (`CLIPImageProcessorPil`): PIL bicubic resize of the
shortest edge, centre crop, rescale in float64 then float32, normalise in float32 -- the pixels MGM's
transformers 4.x `CLIPImageProcessor` gives. (Transformers 5's default torchvision backend resizes with
another bicubic kernel: up to ~2 uint8 levels off whenever an image is resized.)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers import AutoImageProcessor, BatchFeature, CLIPImageProcessorPil
from transformers.image_processing_utils import BaseImageProcessor

from .configuration import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, MiniGeminiConfig

ASPECT_MODES = ("pad", "resize", "crop")


def load_image(image: str | Path | Image.Image) -> Image.Image:
    """Open an image as RGB: EXIF orientation applied; RGBA/LA composited on white; L/P/CMYK converted."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            opened.load()
            image = opened.copy()
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad the short side (centred) with `fill`, as LLaVA/MGM `expand2square`."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


@functools.lru_cache(maxsize=32)
def _clip_transform(side: int, mean: tuple[float, ...], std: tuple[float, ...], resample: int) -> CLIPImageProcessorPil:
    return CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                              image_mean=list(mean), image_std=list(std), resample=resample)


class MiniGeminiImageProcessor(BaseImageProcessor):
    """HR image processor: image(s) -> `pixel_values` [B, 3, size, size] (what the HR tower reads)."""

    model_input_names = ["images_aux"]

    def __init__(self, size: int = 768, image_aspect_ratio: str = "pad",
                 image_mean: Sequence[float] = OPENAI_CLIP_MEAN, image_std: Sequence[float] = OPENAI_CLIP_STD,
                 resample: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if image_aspect_ratio not in ASPECT_MODES:
            raise ValueError(f"image_aspect_ratio must be pad, resize or crop, got {image_aspect_ratio!r}")
        self.size = int(size)
        self.image_aspect_ratio = image_aspect_ratio
        self.image_mean = [float(x) for x in image_mean]
        self.image_std = [float(x) for x in image_std]
        self.resample = int(resample)

    def clip_transform(self, side: int) -> CLIPImageProcessorPil:
        """CLIP resize (shortest edge, PIL) + centre crop + normalise at `side` px, as LLaVA/MGM (transformers 4)."""
        return _clip_transform(side, tuple(self.image_mean), tuple(self.image_std), self.resample)

    def square(self, image: str | Path | Image.Image) -> Image.Image:
        """Decode and square one image per `image_aspect_ratio` (pad: mean colour; resize: bicubic to the
        processor's full side; crop: left to the CLIP centre crop)."""
        pil = load_image(image)
        if self.image_aspect_ratio == "pad":
            return expand_to_square(pil, tuple(int(x * 255) for x in self.image_mean))
        if self.image_aspect_ratio == "resize":
            return pil.resize((self.full_side, self.full_side), Image.BICUBIC)
        return pil

    @property
    def full_side(self) -> int:
        """Side of the square this processor's pixels cover."""
        return self.size

    def pixels(self, image: Image.Image, side: int) -> torch.Tensor:
        """One squared image -> [3, side, side]."""
        return self.clip_transform(side)(image, return_tensors="pt")["pixel_values"][0]

    def __call__(self, images: Any = None, **kwargs: Any) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(self, images: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Image(s) (paths or PIL) -> {"pixel_values": [B, 3, size, size]}."""
        _reject_kwargs(self, kwargs)
        items = images if isinstance(images, (list, tuple)) else [images]
        hr = torch.stack([self.pixels(self.square(im), self.size) for im in items])
        return BatchFeature({"pixel_values": hr}, tensor_type=return_tensors)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if not k.startswith("_")}


class MiniGeminiLRImageProcessor(MiniGeminiImageProcessor):
    """LR image processor: the LR views [B, 3, h, w] (HD: [B, V, 3, h, w], grid crops then the global view)."""

    model_input_names = ["images"]

    def __init__(self, size: int = 336, grid: int = 1, global_view: bool = False, from_hr: bool = True,
                 **kwargs: Any) -> None:
        super().__init__(size=size, **kwargs)
        self.grid = int(grid)
        self.global_view = bool(global_view)
        self.from_hr = bool(from_hr)

    @property
    def full_side(self) -> int:
        return self.size * self.grid

    def views(self, hr: torch.Tensor | None, squared: Image.Image | None) -> torch.Tensor:
        """LR views of one image, from its HR tensor (`from_hr`) or from the squared image."""
        side, grid = self.size, self.grid
        if self.from_hr:
            if hr is None:
                raise ValueError("this LR processor derives LR from HR (from_hr=True): pass hr_pixel_values")
            lr = F.interpolate(hr[None], size=(side * grid, side * grid), mode="bilinear", align_corners=False)[0]
        else:
            lr = self.pixels(squared, self.full_side)
        if grid == 1:
            return lr
        crops = lr.reshape(3, grid, side, grid, side).permute(1, 3, 0, 2, 4).reshape(grid * grid, 3, side, side)
        if self.global_view:
            glob = F.interpolate(lr[None], size=(side, side), mode="bilinear", align_corners=False)
            crops = torch.cat([crops, glob], dim=0)
        return crops.contiguous()

    def preprocess(self, images: Any = None, hr_pixel_values: torch.Tensor | None = None,
                   return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Image(s), or with `from_hr` their HR `pixel_values` [B, 3, H, W] -> {"pixel_values": LR views}."""
        _reject_kwargs(self, kwargs)
        if self.from_hr:
            if hr_pixel_values is None:
                raise ValueError("this LR processor derives LR from HR (from_hr=True): pass hr_pixel_values")
            lr = [self.views(hr, None) for hr in hr_pixel_values]
        else:
            items = images if isinstance(images, (list, tuple)) else [images]
            lr = [self.views(None, self.square(im)) for im in items]
        return BatchFeature({"pixel_values": torch.stack(lr)}, tensor_type=return_tensors)


def _reject_kwargs(processor: BaseImageProcessor, kwargs: dict[str, Any]) -> None:
    if kwargs:
        raise ValueError(f"{type(processor).__name__} got unsupported options {sorted(kwargs)}; "
                         "its settings come from the model config (processor_config.json)")


def image_processors_for(config: MiniGeminiConfig) -> tuple[MiniGeminiImageProcessor, MiniGeminiLRImageProcessor]:
    """The (HR, LR) image processors a `MiniGeminiConfig` implies."""
    common = dict(image_aspect_ratio=config.image_aspect_ratio, image_mean=config.image_mean,
                  image_std=config.image_std)
    hr = MiniGeminiImageProcessor(size=config.image_size_aux, **common)
    lr = MiniGeminiLRImageProcessor(size=config.image_size, grid=config.image_grid, global_view=config.image_global,
                                    from_hr=config.lr_from_hr, **common)
    return hr, lr


AutoImageProcessor.register(MiniGeminiConfig, image_processor_classes={"torchvision": MiniGeminiImageProcessor,
                                                                        "pil": MiniGeminiImageProcessor}, exist_ok=True)
