"""Run the frozen towers once over a data set's images and store their features (safetensors shards).

`minigemini prep cache-features --model MODEL_DIR --data DATA.json --image-folder DIR --out CACHE_DIR`,
then train with `data.feature_cache=CACHE_DIR` (faster stage 1: no image decoding, no tower forward).
Per image the cache holds the LR tokens and the HR tower's stage maps; `index.json` records hashes of
the towers and of the image preprocessing, and a fingerprint of each image file. A matching cache is
resumed (only new images are computed); one made with other towers, preprocessing or dtype is refused
unless --overwrite. (This module is the writer and its CLI; the format, the fingerprints and the
reader used by training are in `minigemini.data.feature_cache`.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .feature_cache import (FORMAT, INDEX, FeatureCacheError, file_fingerprint, image_key, preprocess_fingerprint,
                            tower_fingerprint)
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


def build_feature_cache(model_dir: str | Path, data: Any, out: str | Path, image_folder: str | Path | None = None,
                        dtype: str = "bf16", batch_size: int = 8, workers: int = 2, shard_size: int = 256,
                        overwrite: bool = False, device: str | None = None, image_field: str = "image",
                        progress: bool = True) -> dict[str, Any]:
    """Cache LR/HR features of every distinct image of `data`; resumes a matching cache, refuses (or with
    `overwrite` rebuilds) a stale one. Returns a summary: counts, failures (image, reason), bytes per image."""
    from safetensors.torch import save_file
    from tqdm import tqdm

    from ..model.processing import MiniGeminiProcessor
    from .records import RecordError, image_refs, open_records, resolve_image

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    _, lr_tower, hr_tower = load_towers(model_dir)
    processor = MiniGeminiProcessor.from_pretrained(str(model_dir))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "tower_hash": tower_fingerprint(lr_tower, hr_tower),
            "preprocess_hash": preprocess_fingerprint(processor), "dtype": dtype}
    index = json.loads((out / INDEX).read_text()) if (out / INDEX).exists() else None
    if index is not None and any(index.get(k) != v for k, v in meta.items()):
        if not overwrite:
            raise FeatureCacheError(f"{out} holds a cache for other towers, preprocessing or dtype; pass --overwrite "
                                    "to rebuild it, or choose another --out")
        for name in index.get("shards", []):
            (out / name).unlink(missing_ok=True)
        index = None
    index = index or {**meta, "model": str(model_dir), "data": str(data), "hr_shapes": None, "shards": [],
                      "images": {}}
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
    items = list(todo.items())
    lr_tower.to(device)
    hr_tower = hr_tower.to(device) if hr_tower is not None else None
    loader = torch.utils.data.DataLoader(_ImageList(items, processor), batch_size=batch_size, num_workers=workers,
                                         collate_fn=list)
    buffer: list[tuple[str, str | None, torch.Tensor, torch.Tensor | None]] = []
    written = 0

    def flush() -> None:
        if not buffer:
            return
        name = f"shard-{len(index['shards']):05d}.safetensors"
        tensors = {"lr": torch.stack([b[2] for b in buffer]).contiguous()}
        if buffer[0][3] is not None:
            tensors["hr"] = torch.stack([b[3] for b in buffer]).contiguous()
        save_file(tensors, str(out / name))
        for row, (key, fp, _, _) in enumerate(buffer):
            index["images"][key] = {"shard": len(index["shards"]), "row": row, "file": fp}
        index["shards"].append(name)
        _write_index(out, index)
        buffer.clear()

    with torch.inference_mode():
        for batch in tqdm(loader, desc="caching tower features", unit="batch", disable=not progress):
            good = [(i, x, fp) for i, x, fp in batch if not isinstance(x, str)]
            failures += [(str(items[i][0]), x) for i, x, _ in batch if isinstance(x, str)]
            if not good:
                continue
            images = torch.stack([x["images"] for _, x, _ in good]).to(device)
            lr = lr_tower(images.flatten(0, 1) if images.dim() == 5 else images)
            lr = lr.reshape(*images.shape[:-3], *lr.shape[1:]).to("cpu", DTYPES[dtype])
            hr = None
            if hr_tower is not None:
                maps = hr_tower.stage_maps(torch.stack([x["images_aux"] for _, x, _ in good]).to(device))
                index["hr_shapes"] = [[m.shape[2], m.shape[3], m.shape[1]] for m in maps]
                hr = torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1) for m in maps], dim=1)
                hr = hr.to("cpu", DTYPES[dtype])
            written += len(good)
            for row, (i, _, fp) in enumerate(good):
                buffer.append((items[i][0], fp, lr[row].clone(), None if hr is None else hr[row].clone()))
            if len(buffer) >= shard_size:
                flush()
    flush()
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
    parser.add_argument("--overwrite", action="store_true", help="rebuild a cache made for other towers/preprocessing")
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
