"""Run the frozen towers once over a data set's images and store their features (safetensors shards).

`minigemini prep cache-features --model MODEL_DIR --data DATA.json --image-folder DIR --out CACHE_DIR`,
then train with `data.feature_cache=CACHE_DIR` (faster stage 1: no image decoding, no tower forward).
Per image the cache holds the LR tokens and the HR tower's stage maps; `index.json` records the format
version, hashes of the towers and of the image preprocessing, the library versions and a fingerprint of
each image file. A matching cache is resumed (only new images are computed); one made with another format
version, other towers, preprocessing, library versions or dtype is refused unless --overwrite. (This
module is the writer and its CLI; the format, the fingerprints and the reader used by training are in
`minigemini.data.feature_cache`.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .feature_cache import (FORMAT, INDEX, FeatureCacheError, cache_identity, file_fingerprint, identity_changes,
                            image_key)
from .image_pipeline import preprocess_image

HELP = "precompute frozen LR/HR tower features for a data set (faster stage-1 training)"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def load_towers(model_dir: str | Path) -> tuple[Any, nn.Module, nn.Module | None]:
    """(config, LR tower, HR tower or None) of a saved model; only the towers' weights are read."""
    from safetensors import safe_open

    from ..model.configuration import MiniGeminiConfig
    from ..model.towers import build_tower

    model_dir = Path(model_dir)
    config = MiniGeminiConfig.from_pretrained(str(model_dir))
    towers = {"vision_lr": build_tower(config.vision_lr),
              "vision_hr": build_tower(config.vision_hr) if config.use_hr else None}
    index = model_dir / "model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists()
             else ["model.safetensors"])
    state: dict[str, torch.Tensor] = {}
    for name in files:
        with safe_open(str(model_dir / name), framework="pt") as f:
            state.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(("vision_lr.", "vision_hr."))})
    for prefix, tower in towers.items():
        if tower is None:
            continue
        own = {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
        missing = tower.load_state_dict(own, strict=False).missing_keys
        if missing:
            raise FeatureCacheError(f"{model_dir}: no weights for {prefix} ({len(missing)} keys, e.g. {missing[:2]}); "
                                    "give a model folder written by save_pretrained")
    return config, towers["vision_lr"], towers["vision_hr"]


class _ImageList(torch.utils.data.Dataset):
    def __init__(self, todo: list[tuple[str, Any]], processor: Any) -> None:
        self.todo, self.processor = todo, processor

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, i: int) -> tuple[int, Any, str | None]:
        image = self.todo[i][1]
        try:
            return i, preprocess_image(self.processor, image), file_fingerprint(image)  # bit-identical fast path
        except Exception as exc:  # noqa: BLE001 (PIL raises many types for broken files)
            return i, f"{type(exc).__name__}: {exc}", None


def _write_index(folder: Path, index: dict) -> None:
    tmp = folder / (INDEX + ".tmp")
    tmp.write_text(json.dumps(index))
    tmp.replace(folder / INDEX)  # atomic: a crash leaves the previous complete index


def _open_index(out: Path, identity: dict[str, Any], overwrite: bool, model_dir: str | Path, data: Any) -> dict:
    """The index to extend: the existing one when it matches `identity`, else (with `overwrite`) a new one."""
    index = json.loads((out / INDEX).read_text()) if (out / INDEX).exists() else None
    changes = identity_changes(index, identity) if index is not None else []
    if changes:
        if not overwrite:
            raise FeatureCacheError(f"{out} holds a stale feature cache: {'; '.join(changes)}; pass --overwrite to "
                                    "rebuild it, or choose another --out")
        for name in index.get("shards", []):
            (out / name).unlink(missing_ok=True)
        index = None
    return index or {"format": FORMAT, **identity, "model": str(model_dir), "data": str(data), "hr_shapes": None,
                     "shards": [], "images": {}}


def _images_to_cache(data: Any, index: dict, image_folder: str | Path | None,
                     image_field: str) -> tuple[list[tuple[str, Any]], list[tuple[str, str]]]:
    """([(key, image)] of the distinct images of `data` not cached yet, [(record, reason)] of unreadable records)."""
    from .records import RecordError, image_refs, open_records, resolve_image

    failures: list[tuple[str, str]] = []
    todo: dict[str, Any] = {}
    source = open_records(data)
    for i in range(len(source)):
        try:
            for ref in image_refs(source[i], image_field):
                image = resolve_image(ref, image_folder)
                key = image_key(image, image_folder)
                if key not in index["images"]:
                    todo.setdefault(key, image)
        except RecordError as exc:
            failures.append((source.location(i), str(exc)))
    return list(todo.items()), failures


class _ShardWriter:
    """Buffers per-image features and writes them as safetensors shards, updating the index after each."""

    def __init__(self, out: Path, index: dict, shard_size: int) -> None:
        self.out, self.index, self.shard_size = out, index, shard_size
        self.buffer: list[tuple[str, str | None, torch.Tensor, torch.Tensor | None]] = []

    def add(self, key: str, file_fp: str | None, lr: torch.Tensor, hr: torch.Tensor | None) -> None:
        self.buffer.append((key, file_fp, lr.clone(), None if hr is None else hr.clone()))
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def flush(self) -> None:
        if not self.buffer:
            return
        from safetensors.torch import save_file  # cached features are data, not weights: not save_weight_subset

        shards = self.index["shards"]
        name = f"shard-{len(shards):05d}.safetensors"
        tensors = {"lr": torch.stack([b[2] for b in self.buffer]).contiguous()}
        if self.buffer[0][3] is not None:
            tensors["hr"] = torch.stack([b[3] for b in self.buffer]).contiguous()
        save_file(tensors, str(self.out / name))
        for row, (key, fp, _, _) in enumerate(self.buffer):
            self.index["images"][key] = {"shard": len(shards), "row": row, "file": fp}
        shards.append(name)
        _write_index(self.out, self.index)
        self.buffer.clear()


def _tower_features(images: list[dict[str, torch.Tensor]], lr_tower: nn.Module, hr_tower: nn.Module | None,
                    device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None, list | None]:
    """(LR features [n, (V,) N, C], HR stage maps flattened channels-last [n, sum H*W*C] or None, their
    [H, W, C] shapes or None) of a batch of preprocessed images, on the CPU in `dtype`."""
    lr_in = torch.stack([x["images"] for x in images]).to(device)
    lr = lr_tower(lr_in.flatten(0, 1) if lr_in.dim() == 5 else lr_in)
    lr = lr.reshape(*lr_in.shape[:-3], *lr.shape[1:]).to("cpu", dtype)
    if hr_tower is None:
        return lr, None, None
    maps = hr_tower.stage_maps(torch.stack([x["images_aux"] for x in images]).to(device))
    shapes = [[m.shape[2], m.shape[3], m.shape[1]] for m in maps]
    hr = torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1) for m in maps], dim=1).to("cpu", dtype)
    return lr, hr, shapes


def build_feature_cache(model_dir: str | Path, data: Any, out: str | Path, image_folder: str | Path | None = None,
                        dtype: str = "bf16", batch_size: int = 8, workers: int = 2, shard_size: int = 256,
                        overwrite: bool = False, device: str | None = None, image_field: str = "image",
                        progress: bool | str = True) -> dict[str, Any]:
    """Cache LR/HR features of every distinct image of `data`; resumes a matching cache, refuses (or with
    `overwrite` rebuilds) a stale one. `progress`: a bar (False: none; a string: the bar's label). Returns a
    summary: counts, failures (image, reason), bytes per image."""
    from tqdm import tqdm

    from ..model.processing import MiniGeminiProcessor

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _, lr_tower, hr_tower = load_towers(model_dir)
    processor = MiniGeminiProcessor.from_pretrained(str(model_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    identity = {**cache_identity(lr_tower, hr_tower, processor), "dtype": dtype}
    index = _open_index(out, identity, overwrite, model_dir, data)
    items, failures = _images_to_cache(data, index, image_folder, image_field)
    lr_tower.to(device)
    hr_tower = hr_tower.to(device) if hr_tower is not None else None
    loader = torch.utils.data.DataLoader(_ImageList(items, processor), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list)
    writer = _ShardWriter(out, index, shard_size)
    written = 0
    with torch.inference_mode():
        desc = progress if isinstance(progress, str) else "caching tower features"
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress):
            good = [(i, x, fp) for i, x, fp in batch if not isinstance(x, str)]
            failures += [(str(items[i][0]), x) for i, x, _ in batch if isinstance(x, str)]
            if not good:
                continue
            lr, hr, shapes = _tower_features([x for _, x, _ in good], lr_tower, hr_tower, device, DTYPES[dtype])
            index["hr_shapes"] = shapes or index["hr_shapes"]
            written += len(good)
            for row, (i, _, fp) in enumerate(good):
                writer.add(items[i][0], fp, lr[row], None if hr is None else hr[row])
    writer.flush()
    size = sum((out / n).stat().st_size for n in index["shards"])
    return {"cached": len(index["images"]), "new": written,
            "failures": failures, "bytes_per_image": size / max(len(index["images"]), 1), "folder": str(out)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `minigemini prep cache-features`."""
    parser.add_argument("--model", required=True, help="model folder written by save_pretrained (towers + processor)")
    parser.add_argument("--data", required=True, help="LLaVA JSON/JSONL, parquet or save_to_disk folder")
    parser.add_argument("--image-folder", default=None, help="folder the records' image paths are relative to")
    parser.add_argument("--out", required=True, help="cache folder (index.json + safetensors shards)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="stored precision (default bf16)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per tower forward")
    parser.add_argument("--workers", type=int, default=2, help="image decoding processes")
    parser.add_argument("--shard-size", type=int, default=256, help="images per safetensors shard")
    parser.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild a stale cache (other format version, towers, preprocessing, library versions "
                             "or dtype)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Build the cache; exit 1 when some images could not be cached (listed), 2 on an error, 0 otherwise."""
    try:
        summary = build_feature_cache(args.model, args.data, args.out, image_folder=args.image_folder,
                                      dtype=args.dtype, batch_size=args.batch_size, workers=args.workers,
                                      shard_size=args.shard_size, overwrite=args.overwrite, device=args.device,
                                      progress=not args.no_progress)
    except (FeatureCacheError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"feature cache {summary['folder']}: {summary['cached']} images ({summary['new']} new, "
          f"{summary['bytes_per_image'] / 2**20:.2f} "
          f"MiB each); use it with data.feature_cache={summary['folder']}")
    if summary["failures"]:
        print(f"{len(summary['failures'])} images NOT cached (their samples will fail at training time):")
        for where, why in summary["failures"][:20]:
            print(f"  {where}: {why}")
        return 1
    return 0


__all__ = ["build_feature_cache", "load_towers", "add_arguments", "run", "HELP", "DTYPES"]
