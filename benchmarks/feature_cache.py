"""Stage-1 epoch with the frozen-tower feature cache vs towers on the fly (ratio, same run).

    .venv/bin/python benchmarks/feature_cache.py [--threads 2] [--images 8] [--rounds 2]

A small LLaVA-pretrain-like set (one image + a short caption per sample, `plain` template) on the
issue-6 benchmark model: the cache is built once (`build_feature_cache`, timed), then whole stage-1
epochs (mining + projector train; data loading, image decoding and preprocessing included, DataLoader
without workers) run with and without it, interleaved, in fp32 (fp32 cache) and bf16 autocast (bf16
cache). Best of interleaved rounds (shared machine). Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import json
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `minigemini` does (before torch loads OpenMP)

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.common import (BENCH_DESCRIPTION, autocast_context, bench_config, build_model, train_pass,  # noqa: E402
                               env_header, set_stage, summary_line)
from minigemini import MiniGeminiProcessor  # noqa: E402
from minigemini.data.collate import DataCollator  # noqa: E402
from minigemini.data.dataset import LazySupervisedDataset  # noqa: E402
from minigemini.data.feature_cache import CachedFeatureCollator, CachedFeatureDataset  # noqa: E402
from minigemini.data.feature_cache_build import build_feature_cache  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mgm_reference" / "tiny_a" / "tokenizer.model"


def write_data(folder: Path, n: int) -> Path:
    """n JPEG photos-like images (random sizes ~640x480) and one caption record each."""
    g = torch.Generator().manual_seed(0)
    (folder / "images").mkdir(parents=True)
    records = []
    for i in range(n):
        w, h = 560 + 40 * (i % 5), 400 + 30 * (i % 4)
        pixels = (torch.rand(h // 8, w // 8, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).resize((w, h), Image.BILINEAR).save(folder / "images" / f"{i}.jpg", quality=90)
        caption = " ".join(["a photo of a small red square next to a blue circle on a gray table"] * 3)
        records.append({"id": str(i), "image": f"{i}.jpg", "conversations": [
            {"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption}]})
    (folder / "train.json").write_text(json.dumps(records))
    return folder / "train.json"


def epoch(model: torch.nn.Module, opt: torch.optim.Optimizer, loader: Iterable[dict],
          dtype: torch.dtype) -> float:
    """Seconds for one pass over `loader` (loading + forward + backward + optimizer)."""
    return train_pass(model, opt, loader, dtype)


def build_caches(tmp: Path, data: Path, batch_size: int) -> dict[str, tuple[float, int]]:
    """Build the fp32 and bf16 caches of the model saved in tmp/model: (seconds, bytes per image) each."""
    builds = {}
    for name in ("fp32", "bf16"):
        start = time.perf_counter()
        summary = build_feature_cache(tmp / "model", data, tmp / f"cache_{name}", image_folder=tmp / "data" / "images",
                                      dtype=name, batch_size=batch_size, workers=0, progress=False)
        builds[name] = (time.perf_counter() - start, summary["bytes_per_image"])
    return builds


def make_loaders(ds: LazySupervisedDataset, processor: MiniGeminiProcessor, model: torch.nn.Module, tmp: Path,
                 batch_size: int) -> dict[str, tuple[torch.dtype, DataLoader]]:
    """(autocast dtype, DataLoader) of each variant: towers on the fly / feature cache, fp32 / bf16."""
    loaders = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        plain = DataCollator.from_processor(processor)
        cached = CachedFeatureCollator.from_processor(processor)
        cds = CachedFeatureDataset(ds, tmp / f"cache_{name}", model)
        loaders[f"{name}, towers on the fly"] = (dt, DataLoader(ds, batch_size, collate_fn=plain))
        loaders[f"{name}, feature cache"] = (dt, DataLoader(cds, batch_size, collate_fn=cached))
    return loaders


def time_epochs(model: torch.nn.Module, opt: torch.optim.Optimizer,
                loaders: dict[str, tuple[torch.dtype, DataLoader]], rounds: int) -> dict[str, list[float]]:
    """One warm-up batch per variant, then `rounds` interleaved epochs: seconds of each."""
    for dt, loader in loaders.values():  # warm-up: one batch each
        batch = next(iter(loader))
        batch.pop("skipped_samples")
        with autocast_context(dt):
            model(**batch).loss.backward()
        opt.zero_grad(set_to_none=True)
    times: dict[str, list[float]] = {k: [] for k in loaders}
    for _ in range(rounds):
        for name, (dt, loader) in loaders.items():
            times[name].append(epoch(model, opt, loader, dt))
    return times


def report(args: argparse.Namespace, n_tokens: int, builds: dict[str, tuple[float, int]],
           times: dict[str, list[float]]) -> None:
    """Print the epoch table, the ratios and the SUMMARY line."""
    print(f"\nstage-1 epoch: {args.images} samples (1 image each, {n_tokens / args.images:.0f} tokens per sample), "
          f"batch {args.batch_size}, DataLoader without workers; best of {args.rounds} interleaved rounds")
    for name, (sec, size) in builds.items():
        print(f"cache build ({name}): {sec:.1f} s for {args.images} images, {size / 2**20:.2f} MiB per image "
              "(LR tokens + HR stage maps)")
    print("| epoch | seconds (best) | samples/s | every round |")
    print("|---|---|---|---|")
    best = {k: min(v) for k, v in times.items()}
    for name, sec in best.items():
        print(f"| {name} | {sec:.1f} | {args.images / sec:.2f} | {', '.join(f'{x:.1f}' for x in times[name])} |")
    for name in ("fp32", "bf16"):
        gain = best[f"{name}, towers on the fly"] / best[f"{name}, feature cache"]
        print(f"ratio ({name}): feature cache {gain:.2f}x faster per epoch")
    print(f"(the cache build costs about {builds['bf16'][0] / best['bf16, towers on the fly']:.1f} on-the-fly bf16 "
          "epochs' time here; it pays off from the second epoch / stage, or when several runs share it)")
    print(summary_line("feature_cache", {"epoch_s": {k: round(v, 2) for k, v in best.items()},
                                         "build_s": {k: round(v[0], 2) for k, v in builds.items()}}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(env_header(args.threads))
    print(f"model: {BENCH_DESCRIPTION}")
    from transformers import LlamaTokenizer

    tokenizer = LlamaTokenizer.from_pretrained(str(TOKENIZER.parent), legacy=False)
    config = bench_config(image_token_id=None, template="plain")
    processor = MiniGeminiProcessor(tokenizer, config)
    model = build_model(config)
    opt = torch.optim.AdamW(set_stage(model, 1), lr=1e-4, fused=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_data(tmp / "data", args.images)
        model.save_pretrained(tmp / "model")
        processor.save_pretrained(tmp / "model")
        builds = build_caches(tmp, data, args.batch_size)
        ds = LazySupervisedDataset(data, processor, image_folder=tmp / "data" / "images", on_error="raise")
        n_tokens = sum(len(ds[i]["input_ids"]) for i in range(len(ds)))
        times = time_epochs(model, opt, make_loaders(ds, processor, model, tmp, args.batch_size), args.rounds)
    report(args, n_tokens, builds, times)


if __name__ == "__main__":
    main()
