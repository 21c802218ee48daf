"""Where did it look: patch-info-mining attention maps, from the forward pass that answers.

Each LR token (query) attends to the M x M HR cells of its own window; `PatchInfoMining` keeps those
weights when `keep_attention` is set (no second forward). The mined tokens are computed once, at
prefill, from the image alone (the queries are LR features), and every answer token reads the same
visual tokens through the KV cache: the map "over the answer" is this one map. `AttentionMap.hr_map()`
tiles all windows into one HR-sized map (each window sums to 1); `hr_map(token=i)` keeps token i's.

In the HD variant the grid crops tile the HR map exactly, so their windows are joined into one map
over the whole image ("grid"); the global view, which sees the whole image at 1/grid, is "global".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from minigemini.model import MiniGeminiForCausalLM
from minigemini.model.processing import MiniGeminiProcessor

from .generate import GenerationOptions, Generator, ImageLike

# dark blue -> red -> yellow: a simple heat ramp (no plotting package needed)
_RAMP = np.array([[0, 0, 80], [120, 0, 160], [230, 40, 40], [255, 200, 0], [255, 255, 200]], dtype=np.float64)


@dataclass
class AttentionMap:
    """One view's mining weights [N, M*M] with the LR view its tokens come from and the HR area they cover."""

    weights: np.ndarray
    lr_image: Image.Image
    hr_image: Image.Image

    @property
    def grid(self) -> int:
        """LR tokens per side (sqrt N)."""
        return int(round(self.weights.shape[0] ** 0.5))

    @property
    def cells(self) -> int:
        """HR cells per window side (M)."""
        return int(round(self.weights.shape[1] ** 0.5))

    def hr_map(self, token: int | None = None) -> np.ndarray:
        """[grid*M, grid*M]: every window's weights in place (token i only, the rest 0, when `token` is given)."""
        g, m = self.grid, self.cells
        if token is not None and not 0 <= token < g * g:
            raise ValueError(f"LR token {token} out of range: this view has {g * g} tokens (0..{g * g - 1})")
        w = self.weights.reshape(g, g, m, m)
        if token is not None:
            keep = np.zeros((g, g, 1, 1), dtype=w.dtype)
            keep[token // g, token % g] = 1
            w = w * keep
        return w.transpose(0, 2, 1, 3).reshape(g * m, g * m)

    def overlay(self, token: int | None = None, alpha: float = 0.6, side: int | None = None) -> Image.Image:
        """The HR image with the map as a heat overlay (scaled to its maximum), the LR image beside it,
        each `side` pixels (default: the HR size); with `token`, its window and LR patch are outlined."""
        heat = self.hr_map(token)
        side = side or self.hr_image.size[0]
        heat_img = Image.fromarray(_colour(heat / max(float(heat.max()), 1e-12))).resize((side, side), Image.NEAREST)
        mask = Image.fromarray((alpha * 255 * (heat > 0) if token is not None else np.full(heat.shape, alpha * 255))
                               .astype(np.uint8)).resize((side, side), Image.NEAREST)
        hr = self.hr_image.convert("RGB").resize((side, side), Image.BICUBIC)
        hr.paste(heat_img, (0, 0), mask)
        lr = self.lr_image.convert("RGB").resize((side, side), Image.NEAREST)
        if token is not None:
            g = self.grid
            box = [(token % g) * side // g, (token // g) * side // g, (token % g + 1) * side // g - 1,
                   (token // g + 1) * side // g - 1]
            for im in (hr, lr):
                ImageDraw.Draw(im).rectangle(box, outline=(0, 255, 255), width=max(1, side // 128))
        canvas = Image.new("RGB", (2 * side + 8, side), (255, 255, 255))
        canvas.paste(hr, (0, 0))
        canvas.paste(lr, (side + 8, 0))
        return canvas


def _colour(x: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB along `_RAMP`."""
    pos = np.clip(x, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return ((1 - frac) * _RAMP[lo] + frac * _RAMP[lo + 1]).astype(np.uint8)


@dataclass
class ImageAttention:
    """The maps of one input image: "main" (the single view, or the HD grid crops joined) and HD's "global"."""

    views: dict[str, AttentionMap] = field(default_factory=dict)

    def save(self, folder: str | Path, stem: str) -> list[Path]:
        """`<stem>_<view>.png` (overlay of all tokens) and `<stem>_<view>.npy` (weights [N, M, M]) per view."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for name, view in self.views.items():
            png, npy = out / f"{stem}_{name}.png", out / f"{stem}_{name}.npy"
            view.overlay().save(png)
            np.save(npy, view.weights.reshape(-1, view.cells, view.cells))
            files += [png, npy]
        return files


class AttentionRecorder:
    """Holds the mining weights [views, N, M*M] recorded while its `record` block ran (None before)."""

    weights: torch.Tensor | None = None


@contextlib.contextmanager
def record(model: MiniGeminiForCausalLM) -> Iterator[AttentionRecorder]:
    """Within the block, the model's mining keeps its attention; afterwards `recorder.weights` holds the last pass's."""
    mining = getattr(model, "mining", None)
    if mining is None:
        raise ValueError("this model has no HR branch (use_hr=False), so there is no patch-info-mining attention")
    recorder = AttentionRecorder()
    mining.keep_attention, mining.attention = True, None
    try:
        yield recorder
    finally:
        recorder.weights = mining.attention
        mining.keep_attention, mining.attention = False, None


def split_by_image(weights: torch.Tensor, processor: MiniGeminiProcessor,
                   images: Sequence[ImageLike]) -> list[ImageAttention]:
    """Recorded weights of one prompt's images (placeholder order) -> one `ImageAttention` per image."""
    cfg = processor.config
    grid, views = cfg.image_grid, cfg.num_views
    if weights.shape[0] != len(images) * views:
        raise ValueError(f"recorded {weights.shape[0]} views but {len(images)} images x {views} views were given")
    w = weights.float().cpu().numpy()
    out = []
    for k, image in enumerate(images):
        pre = processor.preprocess_image(image)
        hr = _to_pil(pre["images_aux"], cfg)
        if grid == 1:
            out.append(ImageAttention({"main": AttentionMap(w[k], _to_pil(pre["images"], cfg), hr)}))
            continue
        crops = w[k * grid * grid:(k + 1) * grid * grid]  # [grid^2, N, M^2], crops row-major
        lr = pre["images"]
        entry = ImageAttention({"grid": AttentionMap(_join_crops(crops, grid), _to_pil(_join_lr(lr, grid), cfg), hr)})
        if cfg.image_global:
            entry.views["global"] = AttentionMap(w[len(images) * grid * grid + k], _to_pil(lr[-1], cfg), hr)
        out.append(entry)
    return out


def _join_crops(crops: np.ndarray, grid: int) -> np.ndarray:
    """[grid^2, g^2, M^2] crop-wise tokens -> [(grid*g)^2, M^2] tokens of the whole image, row-major."""
    g = int(round(crops.shape[1] ** 0.5))
    x = crops.reshape(grid, grid, g, g, -1).transpose(0, 2, 1, 3, 4)
    return x.reshape(grid * g * grid * g, -1)


def _join_lr(lr: torch.Tensor, grid: int) -> torch.Tensor:
    """[V, 3, s, s] LR crops (row-major, global last) -> [3, grid*s, grid*s]."""
    s = lr.shape[-1]
    crops = lr[: grid * grid].reshape(grid, grid, 3, s, s).permute(2, 0, 3, 1, 4)
    return crops.reshape(3, grid * s, grid * s)


def _to_pil(x: torch.Tensor, cfg: object) -> Image.Image:
    """A normalised [3, h, w] image tensor back to RGB pixels."""
    mean = torch.tensor(cfg.image_mean).view(3, 1, 1)
    std = torch.tensor(cfg.image_std).view(3, 1, 1)
    pixels = ((x.float() * std + mean).clamp(0, 1) * 255).round().byte()
    return Image.fromarray(pixels.permute(1, 2, 0).numpy())


def answer_with_attention(generator: Generator, question: str, images: Sequence[ImageLike],
                          options: GenerationOptions | None = None) -> tuple[str, list[ImageAttention]]:
    """Answer `question` about `images` (one `<image>` line per image unless placed) and return the
    answer with the mining maps of that same generation, one `ImageAttention` per image."""
    token = generator.processor.config.image_token
    if images and token not in question:
        question = f"{token}\n" * len(images) + question
    prompt = generator.question_prompt(question)
    with record(generator.model) as recorder:
        answer = generator.generate([prompt], [list(images)], options)[0]
    if recorder.weights is None:
        raise ValueError("no image was encoded, so there is no attention map; give at least one image")
    return answer, split_by_image(recorder.weights, generator.processor, images)


def save_attention(maps: Sequence[ImageAttention], folder: str | Path, stem: str) -> list[Path]:
    """Per image k: `<stem>_img<k>_<view>.png` + `.npy` (see `ImageAttention.save`); all weights also in
    `<stem>.safetensors` (tensors `img<k>_<view>`, [N, M, M] float32)."""
    from safetensors.numpy import save_file

    files: list[Path] = []
    tensors = {}
    for k, entry in enumerate(maps):
        files += entry.save(folder, f"{stem}_img{k}")
        for name, view in entry.views.items():
            tensors[f"img{k}_{name}"] = np.ascontiguousarray(
                view.weights.reshape(-1, view.cells, view.cells).astype(np.float32))
    path = Path(folder) / f"{stem}.safetensors"
    save_file(tensors, str(path))
    return [*files, path]
