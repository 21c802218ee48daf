"""Training-image throughput per data-loader worker: JPEG files on disk -> the LR and HR tensors of a sample.

    .venv/bin/python benchmarks/data_pipeline.py [--images 8] [--rounds 3] [--configs normal,hd] [--stages]

Three ways, same files, interleaved round by round (the order rotates), one thread (a DataLoader worker):
  mgm        MGM's LazySupervisedDataset (mgm/train/train.py at 769820cb): PIL open + convert('RGB'),
             expand2square, CLIP image processor at the HR size, LR = bilinear interpolation of the HR
             tensor (HD: 2x2 crops + global view). The processor is transformers' PIL/numpy CLIP processor
             (`CLIPImageProcessorPil`), the implementation MGM's pinned transformers 4.x ran.
  processor  `MiniGeminiProcessor.preprocess_image` (transformers' PIL-backend CLIPImageProcessorPil too: same pixels).
  fast       `minigemini.data.image_pipeline.FastImagePipeline`: bit-identical to `processor`.
Configs: normal = LR 336 / HR 768; hd = HR 1536, LR 672 -> 2x2 crops of 336 + global. Files: smooth
random content plus noise, JPEG quality 90, COCO-like sizes for normal, larger ones for hd. `--stages`:
instead, the time of each step of mgm and fast per image, and the ceiling of any path that keeps MGM's
exact pixels (benchmarks/pipeline_stages.py). Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `minigemini` does (before torch loads OpenMP)

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import CLIPImageProcessorPil, PreTrainedTokenizerFast

from benchmarks.common import env_header, median, summary_line, timed
from benchmarks.pipeline_stages import measure, report
from minigemini import MiniGeminiConfig, MiniGeminiProcessor
from minigemini.data.image_pipeline import FastImagePipeline, split_views

SIZES = {"normal": [(640, 480), (500, 375), (640, 427), (480, 640)],
         "hd": [(1600, 1200), (1280, 960), (2048, 1536), (1200, 1600)]}
Loader = Callable[[Path], dict[str, torch.Tensor]]


def write_images(folder: Path, sizes: list[tuple[int, int]], count: int, seed: int = 0) -> list[Path]:
    """`count` JPEGs cycling through `sizes`: smooth random colours + noise (costs like a photo to decode)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        small = Image.fromarray((rng.random((h // 32, w // 32, 3)) * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
        pixels = np.clip(np.asarray(small, dtype=np.int16) + rng.integers(-12, 13, (h, w, 3)), 0, 255)
        paths.append(folder / f"img{i}_{w}x{h}.jpg")
        Image.fromarray(pixels.astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def mgm_clip(cfg: MiniGeminiConfig) -> CLIPImageProcessorPil:
    """MGM's CLIP image processor at the HR size (PIL/numpy, bicubic)."""
    side = cfg.image_size_aux
    return CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                 image_mean=cfg.image_mean, image_std=cfg.image_std, resample=3)


def mgm_loader(cfg: MiniGeminiConfig) -> Loader:
    """MGM's dataset steps with the PIL/numpy CLIP processor (see the module docstring)."""
    clip = mgm_clip(cfg)
    fill = tuple(int(x * 255) for x in cfg.image_mean)

    def load(path: Path) -> dict[str, torch.Tensor]:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        if w != h:
            canvas = Image.new(image.mode, (max(w, h),) * 2, fill)
            canvas.paste(image, ((max(w, h) - w) // 2, (max(w, h) - h) // 2))
            image = canvas
        hr = clip.preprocess(image, return_tensors="pt")["pixel_values"][0]
        lr_side = cfg.image_size * cfg.image_grid
        lr = F.interpolate(hr[None], size=(lr_side, lr_side), mode="bilinear", align_corners=False)[0]
        if cfg.image_grid > 1:
            lr = split_views(lr, cfg.image_size, cfg.image_grid, cfg.image_global)
        return {"images": lr, "images_aux": hr}

    return load


def loaders(cfg: MiniGeminiConfig, tokenizer: PreTrainedTokenizerFast) -> dict[str, Loader]:
    cfg.image_token_id = None  # taken from the tokenizer
    processor = MiniGeminiProcessor(tokenizer, cfg)
    return {"mgm": mgm_loader(cfg), "processor": processor.preprocess_image, "fast": FastImagePipeline(cfg)}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer built in memory (the processor needs one; no text is tokenized here)."""
    from tokenizers import Tokenizer, models

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "<s>": 1, "</s>": 2}, unk_token="<unk>"))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def check(ways: dict[str, Loader], paths: list[Path]) -> dict[str, float]:
    """Max |difference| of each way's tensors to the processor's (fast must be 0.0)."""
    out = {}
    for name, load in ways.items():
        diffs = [max((load(p)[k] - ref[k]).abs().max().item() for k in ref)
                 for p in paths for ref in [ways["processor"](p)]]
        out[name] = max(diffs)
    return out


def image_config(kind: str) -> MiniGeminiConfig:
    """normal: LR 336 / HR 768; hd: HR 1536, LR 2x2 crops of 336 + global."""
    return (MiniGeminiConfig.tiny(image_size=336, image_size_aux=768) if kind == "normal" else
            MiniGeminiConfig.tiny(hd=True, image_size=336, image_size_aux=1536))


def run_stages(kind: str, args: argparse.Namespace, folder: Path) -> dict:
    """`--stages`: per-stage ms of mgm and fast on this config's files, and the exact-path ceiling."""
    cfg = image_config(kind)
    paths = write_images(folder, SIZES[kind], args.images)
    ways = {"mgm": mgm_loader(cfg), "fast": FastImagePipeline(cfg)}
    return report(kind, measure(cfg, mgm_clip(cfg), ways, paths, args.rounds))


def run_config(kind: str, args: argparse.Namespace, folder: Path) -> dict:
    """Images/s of the three ways on this config's files, interleaved; their max diff to the processor."""
    cfg = image_config(kind)
    paths = write_images(folder, SIZES[kind], args.images)
    ways = loaders(cfg, tiny_tokenizer())
    diffs = check(ways, paths[:2])
    times: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, _ = timed(lambda load=ways[name]: [load(p) for p in paths])
            times[name].append(seconds)
    rate = {name: len(paths) / min(t) for name, t in times.items()}
    print(f"\n{kind}: LR {cfg.image_size} x grid {cfg.image_grid}{' + global' if cfg.image_global else ''}, "
          f"HR {cfg.image_size_aux}; {len(paths)} JPEGs {sorted(set(SIZES[kind]))}; best of {args.rounds} rounds")
    print("| way | images/s per worker (best) | ms per image (median) | vs mgm | max abs diff to processor |")
    print("|---|---|---|---|---|")
    for name in ways:
        ms = 1e3 * median(times[name]) / len(paths)
        print(f"| {name} | {rate[name]:.1f} | {ms:.1f} | {rate[name] / rate['mgm']:.2f}x | {diffs[name]:.2e} |")
    return {"images_per_s": {k: round(v, 2) for k, v in rate.items()},
            "fast_vs_mgm": round(rate["fast"] / rate["mgm"], 2),
            "fast_vs_processor": round(rate["fast"] / rate["processor"], 2),
            "max_abs_diff_to_processor": diffs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="JPEG files per config")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--configs", default="normal,hd", help="comma-separated: normal, hd")
    parser.add_argument("--stages", action="store_true", help="only: ms per stage of mgm and fast, and the ceiling "
                        "of a path with MGM's exact pixels (decode + PIL resize)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker
    print(env_header(1))
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.configs.split(","):
            (Path(tmp) / kind).mkdir()
            figures[kind] = (run_stages if args.stages else run_config)(kind, args, Path(tmp) / kind)
    print(summary_line("data_pipeline_stages" if args.stages else "data_pipeline", figures))


if __name__ == "__main__":
    main()
