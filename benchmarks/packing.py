"""Sequence packing vs padding on a LLaVA-665K-like length mix: padding fraction and training tokens/s.

    .venv/bin/python benchmarks/packing.py [--threads 2] [--samples 24] [--batch-size 4] [--max-length 2048]
                                           [--rounds 2]

Length mix (an approximation of LLaVA-v1.5-665K with a Llama tokenizer, not read from the data set):
90% image samples = 576 image tokens + text ~ lognormal(median 150, sigma 0.9) clipped to [16, 1400];
10% text-only samples ~ lognormal(median 600, sigma 0.9) clipped to [32, max_length]; half of each
sample's text is supervised. The step is the benchmark model's stage-2 step (fp32, fused AdamW) on
cached tower features (towers skipped: packing only changes the LLM side; mining still runs per image).
Compared on the same samples: padded batches of `batch_size` samples in random order and sorted by
length (the best case of any length-grouped sampler), and packed rows of <= max_length (2 rows per
batch) and <= max_length / 2 (4 rows per batch). The padding statistics use many more samples and
also LLaVA's modality-length-grouped sampler (8 ranks). On CPU, SDPA has no variable-length kernel:
a packed row pays attention over the whole row (block-diagonal mask), flash-attention 2 on GPU does
not. Timings: best of interleaved rounds. Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `minigemini` does (before torch loads OpenMP)

import torch  # noqa: E402

from benchmarks.common import (BENCH_DESCRIPTION, bench_config, build_model, env_header, set_stage,  # noqa: E402
                               summary_line, train_pass)
from minigemini import MiniGeminiConfig  # noqa: E402
from minigemini.data.feature_cache import CachedFeatureCollator, collate_features  # noqa: E402
from minigemini.data.packing import PackingCollator, plan_rows  # noqa: E402
from minigemini.data.sampler import ModalityLengthGroupedSampler  # noqa: E402

DROP = ("skipped_samples", "packed_rows", "sample_ids")


def length_mix(n: int, max_length: int, n_image_tokens: int, seed: int = 0) -> list[tuple[int, bool]]:
    """(text tokens, has image) per sample, as described in the module docstring."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.9:
            cap = min(1400, max_length - n_image_tokens - 1)
            out.append((int(min(max(rng.lognormvariate(5.01, 0.9), 16), cap)), True))
        else:
            out.append((int(min(max(rng.lognormvariate(6.40, 0.9), 32), max_length - 1)), False))
    return out


def make_samples(mix: list[tuple[int, bool]], config: MiniGeminiConfig, features: dict,
                 seed: int = 0) -> list[dict]:
    """Token ids / labels (second half of the text supervised) and shared cached features per image sample."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i, (n_text, image) in enumerate(mix):
        text = torch.randint(3, 32000, (n_text,), generator=g)
        ids = torch.cat([torch.tensor([1]), torch.full((config.num_image_tokens,), config.image_token_id), text]) \
            if image else torch.cat([torch.tensor([1]), text])
        labels = ids.clone()
        labels[: ids.numel() - n_text // 2] = -100
        item = {"input_ids": ids, "labels": labels, "sample_id": str(i)}
        if image:
            item.update(features)
        samples.append(item)
    return samples


def _pack_rows(collator: PackingCollator, rows: list[list[dict]]) -> dict:
    """A batch holding exactly these rows (the benchmark fixes the rows; the collator lays them out)."""
    kept = [f for row in rows for f in row]
    batch = collator.pack(rows)
    batch.update(collate_features(kept))
    return batch


def run(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: list[dict]) -> float:
    """Seconds for one training step per batch."""
    return train_pass(model, opt, batches, drop=DROP)


def padded_slots(tokens: list[int], order: list[int], b: int) -> int:
    """Token slots of padded batches of `b` samples taken in `order`."""
    return sum(max(tokens[i] for i in order[k:k + b]) * len(order[k:k + b]) for k in range(0, len(order), b))


def packed_slots(tokens: list[int], length: int, rows_per_batch: int, window: int) -> tuple[int, float]:
    """Token slots of packed rows <= `length` (`rows_per_batch` per batch), and the mean row length."""
    rows = []
    for k in range(0, len(tokens), window):  # the collator packs the samples of one (large) batch
        chunk = tokens[k:k + window]
        rows += [sum(chunk[j] for j in row) for row in plan_rows(chunk, length)]
    slots = sum(max(rows[k:k + rows_per_batch]) * len(rows[k:k + rows_per_batch])
                for k in range(0, len(rows), rows_per_batch))
    return slots, sum(rows) / len(rows)


def padding_report(args: argparse.Namespace, config: MiniGeminiConfig) -> None:
    """Padding fraction of each layout over many samples (lengths only, no model)."""
    b = args.batch_size
    mix = length_mix(args.mix_samples, args.max_length, config.num_image_tokens, seed=1)
    tokens = [t + 1 + (config.num_image_tokens if img else 0) for t, img in mix]
    modality = [n if img else -n for n, (_, img) in zip(tokens, mix)]
    llava = list(ModalityLengthGroupedSampler(modality, batch_size=b, world_size=8, seed=0))  # 8 ranks' stream
    print(f"\npadding fraction over {len(tokens)} samples (mean length {sum(tokens) / len(tokens):.0f} tokens, "
          f"{sum(not i for _, i in mix) / len(mix):.0%} text-only), batches of {b} samples:")
    print(f"  padded, random order: {1 - sum(tokens) / padded_slots(tokens, list(range(len(tokens))), b):.1%}")
    print(f"  padded, LLaVA modality-length-grouped sampler (8 ranks x {b}): "
          f"{1 - sum(tokens) / padded_slots(tokens, llava, b):.1%}")
    print(f"  padded, globally sorted by length (best case of any sampler): "
          f"{1 - sum(tokens) / padded_slots(tokens, sorted(range(len(tokens)), key=tokens.__getitem__), b):.1%}")
    for length, per in ((args.max_length, 2), (args.max_length // 2, 4)):
        slots, mean_row = packed_slots(tokens, length, per, window=64 * b)
        print(f"  packed, rows <= {length} (mean row {mean_row:.0f}), {per} rows per batch: "
              f"{1 - sum(tokens) / slots:.1%}")


def layouts(args: argparse.Namespace, config: MiniGeminiConfig, samples: list[dict]) -> dict[str, list[dict]]:
    """The batches of each layout (padded random / length-sorted, packed at two row lengths), same samples."""
    b = args.batch_size
    pad = CachedFeatureCollator(pad_token_id=0, image_token_id=config.image_token_id)
    pack = PackingCollator(pad_token_id=0, image_token_id=config.image_token_id, max_length=args.max_length)
    order = list(range(len(samples)))
    random.Random(0).shuffle(order)
    by_len = sorted(order, key=lambda i: len(samples[i]["input_ids"]))
    setups = {
        f"padded, random batches of {b}": [pad([samples[i] for i in order[k:k + b]]) for k in range(0, len(order), b)],
        f"padded, length-sorted batches of {b}": [pad([samples[i] for i in by_len[k:k + b]])
                                                  for k in range(0, len(by_len), b)],
    }
    lengths = [len(samples[i]["input_ids"]) for i in order]
    for length, per in ((args.max_length, 2), (args.max_length // 2, 4)):
        rows = plan_rows(lengths, length)
        setups[f"packed, rows <= {length}, {per} rows per batch"] = [
            _pack_rows(pack, [[samples[order[i]] for i in row] for row in rows[k:k + per]])
            for k in range(0, len(rows), per)]
    return setups


def throughput_report(model: torch.nn.Module, opt: torch.optim.Optimizer, setups: dict[str, list[dict]],
                      real: int, rounds: int) -> dict[str, list[float]]:
    """Time every layout in interleaved rounds, print the table; the seconds of every round per layout."""
    print("| layout | steps | slots | padding | seconds | real tokens/s | vs padded random |")
    print("|---|---|---|---|---|---|---|")
    run(model, opt, [setups[next(iter(setups))][0]])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):  # interleaved rounds (shared machine)
        for name, batches in setups.items():
            times[name].append(run(model, opt, batches))
    base = None
    for name, batches in setups.items():
        sec = min(times[name])
        slots = sum(x["input_ids"].numel() for x in batches)
        base = base or real / sec
        print(f"| {name} | {len(batches)} | {slots} | {1 - real / slots:.1%} | {sec:.1f} | {real / sec:.0f} | "
              f"{real / sec / base:.2f}x |")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4, help="samples per padded batch")
    parser.add_argument("--max-length", type=int, default=2048, help="model_max_length = packed row length")
    parser.add_argument("--mix-samples", type=int, default=20000, help="samples for the padding statistics")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (best is reported)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(env_header(args.threads))
    print(f"model: {BENCH_DESCRIPTION}")
    print("length mix (LLaVA-665K-like, an approximation): 90% image samples = BOS + 576 image tokens + text "
          "~ lognormal(median 150, sigma 0.9) in [16, 1400]; 10% text-only ~ lognormal(median 600, sigma 0.9) in "
          "[32, max_length); half of each text supervised")
    config = bench_config()
    model = build_model(config)
    opt = torch.optim.AdamW(set_stage(model, 2), lr=1e-5, fused=True)
    with torch.no_grad():
        lr = model.encode_lr(torch.randn(1, 3, 336, 336))
        maps = model.vision_hr.stage_maps(torch.randn(1, 3, 768, 768))
    padding_report(args, config)
    # training throughput on the same samples
    mix = length_mix(args.samples, args.max_length, config.num_image_tokens, seed=0)
    samples = make_samples(mix, config, {"lr_features": lr, "hr_features": maps})
    real = sum(len(s["input_ids"]) for s in samples)
    setups = layouts(args, config, samples)
    print(f"\ntraining on {len(samples)} samples, {real} real tokens, stage 2 fp32:")
    times = throughput_report(model, opt, setups, real, args.rounds)
    print(summary_line("packing", {"real_tokens_per_s": {name: round(real / min(t)) for name, t in times.items()}}))


if __name__ == "__main__":
    main()
