"""Per-stage time of one training image, MGM's way vs the fast path: what bounds any path with MGM's exact pixels.

Used by `benchmarks/data_pipeline.py --stages`. Each stage is timed on its own, its input made by the stages
before it, on the same JPEG files; per image the best of the rounds, then the median over the images (ms).
mgm   decode (PIL open + convert('RGB')), pad (expand2square), the CLIP processor call at the HR size split
      into PIL's bicubic resize alone and the rest (to numpy, centre crop, rescale, normalise, to tensor:
      the same call with do_resize=False on the resized image), LR = bilinear of HR, HD views.
fast  `minigemini.data.image_pipeline`: decode and pad (the same PIL calls as MGM's), per target size PIL
      bicubic resize, PIL -> uint8 + crop, normalise; LR derivation; HD views.
The steps any path with MGM's pixels must run: decoding the JPEG (the same PIL call in both ways; the lower
of its two timings) and PIL's bicubic resize at the HR size (MGM resizes once). The ceiling of an exact path is
MGM's whole time over those two: no such path can be faster than that, whatever the rest costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessorPil

from benchmarks.common import median
from minigemini import MiniGeminiConfig
from minigemini.data.image_pipeline import FastImagePipeline, pil_to_uint8, split_views
from minigemini.model.image_processing import expand_to_square, load_image

EXACT = ("decode", "PIL bicubic resize")  # stage names every exact path runs (see the module docstring)
TOTAL = "total (the whole way, one call)"
Stages = dict[str, float]
Tensors = dict[str, torch.Tensor]


class Clock:
    """Times a chain of stages: `clock("name", fn, *args)` runs fn(*args), records its seconds, returns its result."""

    def __init__(self) -> None:
        self.seconds: Stages = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        out = fn(*args)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        return out


def resized_size(h: int, w: int, side: int) -> tuple[int, int]:
    """(height, width) after the CLIP processor's shortest-edge resize to `side`."""
    short, long = (h, w) if h <= w else (w, h)
    new_long = int(side * long / short)
    return (side, new_long) if h <= w else (new_long, side)


def expand2square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """MGM's (LLaVA's) padding of a PIL image to a square of `fill`."""
    w, h = image.size
    if w == h:
        return image
    canvas = Image.new(image.mode, (max(w, h),) * 2, fill)
    canvas.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
    return canvas


def mgm_stages(cfg: MiniGeminiConfig, clip: CLIPImageProcessorPil, path: Path) -> tuple[Stages, Tensors]:
    """MGM's dataset steps (as `data_pipeline.mgm_loader` runs them), one stage at a time: seconds, tensors."""
    clock, side = Clock(), cfg.image_size_aux
    image = clock("decode", lambda: Image.open(path).convert("RGB"))
    image = clock("pad", expand2square, image, tuple(int(x * 255) for x in cfg.image_mean))
    w, h = image.size
    size = resized_size(h, w, side)
    resized = clock("PIL bicubic resize", image.resize, (size[1], size[0]), Image.BICUBIC)
    hr = clock("processor rest (numpy crop, rescale, normalise, to tensor)",
               lambda: clip.preprocess(resized, do_resize=False, return_tensors="pt")["pixel_values"][0])
    lr_side = cfg.image_size * cfg.image_grid
    lr = clock("LR = bilinear of HR", lambda: F.interpolate(hr[None], size=(lr_side,) * 2, mode="bilinear",
                                                             align_corners=False)[0])
    if cfg.image_grid > 1:
        lr = clock("HD views", split_views, lr, cfg.image_size, cfg.image_grid, cfg.image_global)
    clock("for comparison: the whole processor call", lambda: clip.preprocess(image, return_tensors="pt"))
    return clock.seconds, {"images": lr, "images_aux": hr}


def fast_stages(pipe: FastImagePipeline, path: Path) -> tuple[Stages, Tensors]:
    """The fast path's steps (as `FastImagePipeline.__call__` runs them for a JPEG in pad mode), one at a
    time: seconds, tensors."""
    cfg, clock = pipe.config, Clock()
    x = clock("decode", load_image, path)
    x = clock("pad", expand_to_square, x, pipe.fill)
    sides = [cfg.image_size_aux] + ([] if cfg.lr_from_hr else [cfg.image_size * cfg.image_grid])
    out = []
    for side in sides:  # HR, then LR when it is not derived from HR (its stages are named "... (LR side)")
        w, h = x.size
        size = resized_size(h, w, side)
        tag = "" if not out else f" (LR {side})"
        image = clock(f"PIL bicubic resize{tag}", x.resize, (size[1], size[0]), Image.BICUBIC)
        top, left = (size[0] - side) // 2, (size[1] - side) // 2
        y = clock(f"PIL -> uint8, crop{tag}", lambda: pil_to_uint8(image)[:, top:top + side, left:left + side])
        out.append(clock(f"normalise{tag}", pipe.normalize, y))
    side, grid = cfg.image_size, cfg.image_grid
    lr = out[-1] if not cfg.lr_from_hr else clock(
        "LR = bilinear of HR", lambda: F.interpolate(out[0][None], size=(side * grid,) * 2, mode="bilinear",
                                                     align_corners=False)[0])
    if grid > 1:
        lr = clock("HD views", split_views, lr, side, grid, cfg.image_global)
    return clock.seconds, {"images": lr, "images_aux": out[0]}


def stage_medians(per_image: list[list[Stages]]) -> Stages:
    """Per image the best of the rounds, then the median over the images, in ms; stage order kept."""
    names = list(dict.fromkeys(name for rounds in per_image for stages in rounds for name in stages))
    best = [{n: min(s[n] for s in rounds) for n in names} for rounds in per_image]
    return {n: 1e3 * median([b[n] for b in best]) for n in names}


def measure(cfg: MiniGeminiConfig, clip: CLIPImageProcessorPil, ways: dict[str, Callable], paths: list[Path],
            rounds: int) -> dict[str, Stages]:
    """Stage medians (ms) of both ways plus each way's whole call ("total"), rounds interleaved. The stages
    must give the way's own tensors bit for bit (else the breakdown would time something else)."""
    pipe = FastImagePipeline(cfg)
    chains = {"mgm": lambda p: mgm_stages(cfg, clip, p), "fast": lambda p: fast_stages(pipe, p)}
    runs: dict[str, list[list[Stages]]] = {name: [[] for _ in paths] for name in chains}
    for name, chain in chains.items():  # warm-up (allocator, PIL / torchvision first calls)
        chain(paths[0])
        ways[name](paths[0])
    for _ in range(rounds):
        for i, path in enumerate(paths):
            for name, chain in chains.items():
                seconds, tensors = chain(path)
                start = time.perf_counter()
                ref = ways[name](path)
                seconds[TOTAL] = time.perf_counter() - start
                if ref.keys() != tensors.keys() or not all(torch.equal(ref[k], tensors[k]) for k in ref):
                    raise RuntimeError(f"the {name} stages do not reproduce the {name} way's tensors on {path}")
                runs[name][i].append(seconds)
    return {name: stage_medians(per_image) for name, per_image in runs.items()}


def report(kind: str, ms: dict[str, Stages]) -> dict:
    """Print both breakdowns and the ceiling of an exact path; return the SUMMARY figures."""
    total = {name: stages[TOTAL] for name, stages in ms.items()}
    print(f"\n{kind}: ms per image (median over the images of each image's best round)")
    print("| way | stage | ms | share of the way's total |\n|---|---|---|---|")
    for name, stages in ms.items():
        parts = {k: v for k, v in stages.items() if not k.startswith(("total", "for comparison"))}
        for stage, t in parts.items():
            print(f"| {name} | {stage} | {t:.2f} | {t / total[name]:.0%} |")
        summed = sum(parts.values())
        print(f"| {name} | sum of the stages above | {summed:.2f} | {summed / total[name]:.0%} |")
        for stage in [k for k in stages if k not in parts]:
            print(f"| {name} | {stage} | {stages[stage]:.2f} | |")
    decode, resize = EXACT
    floor = min(ms["mgm"][decode], ms["fast"][decode]) + ms["mgm"][resize]
    ceiling = total["mgm"] / floor
    print(f"PIL's bicubic resize alone is {ms['mgm'][resize] / total['mgm']:.0%} of MGM's time; "
          f"decode (lower of its two timings) + that resize = {floor:.1f} ms of MGM's {total['mgm']:.1f} ms")
    print(f"ceiling for an exact path (MGM's pixels): {ceiling:.2f}x MGM's way (fast path now: "
          f"{total['mgm'] / total['fast']:.2f}x)")
    return {"ms": {name: {k: round(v, 2) for k, v in stages.items()} for name, stages in ms.items()},
            "pil_resize_share_of_mgm": round(ms["mgm"][resize] / total["mgm"], 3),
            "exact_floor_ms": round(floor, 2), "ceiling_exact_path_vs_mgm": round(ceiling, 2),
            "fast_vs_mgm_stagewise_run": round(total["mgm"] / total["fast"], 2)}
