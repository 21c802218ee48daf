"""The processor's pixels equal transformers 4's CLIPImageProcessor (what official MGM ran), typed here
independently with plain PIL + numpy, on images that need resizing.

The reference follows transformers 4.x `CLIPImageProcessor.preprocess` step by step:
`get_resize_output_image_size(default_to_square=False)`: short edge -> side, long edge
`int(side * long / short)` (truncated, not rounded); PIL `resize(..., BICUBIC)`; `center_crop`: offsets
`(H - side) // 2`, `(W - side) // 2`; rescale by 1/255; `(x - mean) / std` in float32 with OpenAI CLIP's
mean/std. MGM's training dataset and its eval `process_images` both run this once at the HR side (after
`expand2square` with `tuple(int(x * 255) for x in image_mean)` in pad mode) and derive LR by bilinear
interpolation of the HR tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessor

from minigemini import MiniGeminiConfig, MiniGeminiProcessor

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as in transformers' image_utils
STD = (0.26862954, 0.26130258, 0.27577711)
TOL = 1e-6


def _image(w: int, h: int, seed: int) -> Image.Image:
    """Textured RGB (smooth + noise), so different resampling kernels give different pixels."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
    noisy = np.asarray(small).astype(np.int16) + rng.integers(-25, 26, size=(h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _expand2square(img: Image.Image) -> Image.Image:
    w, h = img.size
    fill = tuple(int(x * 255) for x in MEAN)
    if w == h:
        return img
    side = max(w, h)
    out = Image.new("RGB", (side, side), fill)
    out.paste(img, ((side - w) // 2, (side - h) // 2))
    return out


def _clip_transformers4(img: Image.Image, side: int) -> torch.Tensor:
    """transformers 4.x CLIPImageProcessor(size={"shortest_edge": side}, crop_size=side) -> [3, side, side]."""
    w, h = img.size
    size = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)  # PIL (w, h)
    arr = np.asarray(img.resize(size, Image.BICUBIC))
    top, left = (arr.shape[0] - side) // 2, (arr.shape[1] - side) // 2
    arr = arr[top:top + side, left:left + side].astype(np.float32) / np.float32(255)
    arr = (arr - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def _mgm_reference(img: Image.Image, aspect: str, lr_from_hr: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(LR [3,336,336], HR [3,768,768]) as MGM computes them (LR separately when not `lr_from_hr`)."""
    squared = _expand2square(img) if aspect == "pad" else img
    hr = _clip_transformers4(squared, 768)
    if lr_from_hr:
        lr = F.interpolate(hr[None], size=(336, 336), mode="bilinear", align_corners=False)[0]
    else:
        lr = _clip_transformers4(squared, 336)
    return lr, hr


IMAGES = {"500x375": (500, 375), "201x640": (201, 640)}


@pytest.mark.parametrize("aspect", ["pad", "crop"])
@pytest.mark.parametrize("lr_from_hr", [True, False])
@pytest.mark.parametrize("name", list(IMAGES))
def test_processor_equals_transformers4_clip(sp_tokenizer, name: str, aspect: str, lr_from_hr: bool) -> None:
    cfg = MiniGeminiConfig.tiny(image_size=336, image_size_aux=768, image_aspect_ratio=aspect, lr_from_hr=lr_from_hr)
    assert tuple(cfg.image_mean) == MEAN and tuple(cfg.image_std) == STD
    img = _image(*IMAGES[name], seed=len(name) + len(aspect))
    out = MiniGeminiProcessor(sp_tokenizer, cfg).preprocess_image(img)
    lr, hr = _mgm_reference(img, aspect, lr_from_hr)
    assert out["images_aux"].shape == hr.shape and out["images"].shape == lr.shape
    assert (out["images_aux"] - hr).abs().max().item() <= TOL, "HR"
    assert (out["images"] - lr).abs().max().item() <= TOL, "LR"


def test_reference_tells_the_backends_and_the_rounding_apart() -> None:
    """The reference is sharp: transformers 5's torchvision CLIP and a rounded long edge both miss it."""
    img = _image(201, 640, seed=3)
    ref = _clip_transformers4(img, 336)
    tv = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    assert (tv(img, return_tensors="pt")["pixel_values"][0] - ref).abs().max().item() > 1e-3
    assert int(336 * 640 / 201) == 1069 and round(336 * 640 / 201) == 1070  # the crop offset shifts by one row
    rounded = np.asarray(img.resize((336, 1070), Image.BICUBIC))[367:367 + 336].astype(np.float32) / np.float32(255)
    rounded = (rounded - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    assert (torch.from_numpy(rounded.transpose(2, 0, 1).copy()) - ref).abs().max().item() > 1e-2


def test_feature_cache_built_with_the_torchvision_resize_is_stale(tmp_path) -> None:
    """Caches written before the PIL backend (`CLIPImageProcessor`, torchvision) have format version 1
    ("minigemini-feature-cache/1"); the reader refuses them and says how to rebuild, and the Pillow version
    (which decides these resized pixels) is part of what a cache must match."""
    import json

    import PIL

    from minigemini.data import feature_cache

    assert feature_cache.FORMAT_VERSION >= 2 and "Pillow" in feature_cache.LIBRARIES
    assert feature_cache.library_versions()["Pillow"] == PIL.__version__
    (tmp_path / "index.json").write_text(json.dumps({"format": "minigemini-feature-cache/1", "images": {}}))
    with pytest.raises(feature_cache.FeatureCacheError, match=r"format version 1, this minigemini reads version "
                       rf"{feature_cache.FORMAT_VERSION}; rebuild it .*--overwrite"):
        feature_cache.FeatureCache(tmp_path)
