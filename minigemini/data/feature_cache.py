"""Run the frozen towers once over a data set's images and store the features (safetensors shards).

`minigemini prep cache-features --model MODEL_DIR --data DATA.json --image-folder DIR --out CACHE_DIR`.
Per image the cache holds the LR tokens `[(V,) N, C_lr]` and the HR tower's four stage maps before
MGM's upsample+concat (8x smaller than the merged map; the model merges them, bit-identically).
`index.json` records a hash of the towers (architecture + weights rounded to bf16, so a bf16 copy
of the same towers matches), a hash of the image preprocessing (config fields, transforms and
their code) and, per image, its shard row and file fingerprint (size + hash of its first 64 KiB).
Training uses the cache through `CachedFeatureDataset` (+ `CachedFeatureCollator`), which refuses a
cache made with other towers or preprocessing, an image not in it, or an image changed since.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .collate import DataCollator

HELP = "precompute frozen LR/HR tower features for a data set (faster stage-1 training)"
FORMAT = "minigemini-feature-cache/1"
INDEX = "index.json"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SPEC_KEYS_IGNORED = ("weights", "channels_last", "drop_path_rate")  # no effect on a frozen tower's output
PREPROCESS_FIELDS = ("image_size", "image_size_aux", "image_grid", "image_global", "image_aspect_ratio",
                     "lr_from_hr", "image_mean", "image_std", "use_hr")


class FeatureCacheError(RuntimeError):
    """A cache that does not match the model / data (stale or incomplete); the message says what to do."""


# ---- fingerprints ---------------------------------------------------------------------------------
def _digest(*chunks: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def tower_fingerprint(lr_tower: nn.Module, hr_tower: nn.Module | None) -> str:
    """Hash of both towers' architecture specs and weights (rounded to bf16; ZeRO-3 params are gathered)."""
    h = hashlib.blake2b(digest_size=16)
    for tower in (lr_tower, hr_tower):
        if tower is None:
            h.update(b"<none>")
            continue
        spec = {k: v for k, v in getattr(tower, "spec", {}).items() if k not in SPEC_KEYS_IGNORED}
        h.update(json.dumps(spec, sort_keys=True, default=str).encode())
        with _zero3_gather(list(tower.parameters())):
            for name, value in sorted(tower.state_dict().items()):
                if not value.is_floating_point():
                    continue
                h.update(name.encode())
                h.update(value.detach().to("cpu", torch.bfloat16).contiguous().view(torch.int16).numpy().tobytes())
    return h.hexdigest()


def _zero3_gather(params: list[nn.Parameter]) -> Any:
    from contextlib import nullcontext

    if not any(hasattr(p, "ds_id") for p in params):
        return nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def preprocess_fingerprint(processor: Any) -> str:
    """Hash of what turns a file into tower inputs: config fields, CLIP transforms and the code doing it."""
    from ..model import processing

    cfg = processor.config
    parts: dict[str, Any] = {f: getattr(cfg, f, None) for f in PREPROCESS_FIELDS}
    for name in ("hr_transform", "lr_transform"):
        transform = getattr(processor, name, None)
        parts[name] = transform.to_dict() if transform is not None else None
    parts["code"] = [inspect.getsource(fn) for fn in (type(processor).preprocess_image, processing.load_image,
                                                     processing.expand_to_square)]
    return _digest(json.dumps(parts, sort_keys=True, default=str).encode())


def image_key(image: Any, image_folder: str | Path | None) -> str:
    """Cache key of one image: its path relative to `image_folder` (absolute otherwise), or a pixel hash."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if image_folder is not None:
            try:
                return path.resolve().relative_to(Path(image_folder).resolve()).as_posix()
            except ValueError:
                pass
        return path.resolve().as_posix()
    image.load()
    return "pixels:" + _digest(f"{image.mode}{image.size}".encode(), image.tobytes())


def file_fingerprint(image: Any) -> str | None:
    """Size + hash of the first 64 KiB of an image file (None for in-memory images: keyed by content)."""
    if not isinstance(image, (str, Path)):
        return None
    with open(image, "rb") as f:
        head = f.read(1 << 16)
    return f"{os.path.getsize(image)}:{_digest(head)}"


# ---- reading ------------------------------------------------------------------------------------
class FeatureCache:
    """A cache folder written by `build_feature_cache`: `check(...)`, then `load(image)` per image."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index = self.folder / INDEX
        if not index.exists():
            raise FeatureCacheError(f"{index} not found: build the cache with `minigemini prep cache-features "
                                    f"--model MODEL_DIR --data DATA --image-folder DIR --out {self.folder}`")
        self.index = json.loads(index.read_text())
        if self.index.get("format") != FORMAT:
            raise FeatureCacheError(f"{index}: format {self.index.get('format')!r} is not {FORMAT!r}; rebuild it")
        self.hr_shapes: list[list[int]] = self.index["hr_shapes"]  # per stage [H, W, C] (stored channels-last)
        self._shards: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.index["images"])

    def __getstate__(self) -> dict:  # open shard handles do not cross into DataLoader workers
        return {**self.__dict__, "_shards": {}}

    def __contains__(self, key: str) -> bool:
        return key in self.index["images"]

    def check(self, lr_tower: nn.Module, hr_tower: nn.Module | None, processor: Any) -> None:
        """Raise FeatureCacheError unless the cache was made by these towers with this preprocessing."""
        problems = []
        if self.index["tower_hash"] != tower_fingerprint(lr_tower, hr_tower):
            problems.append("the vision towers (architecture or weights) differ from those that built it")
        if self.index["preprocess_hash"] != preprocess_fingerprint(processor):
            problems.append("the image preprocessing (sizes, grid, aspect mode, mean/std or its code) changed")
        if problems:
            raise FeatureCacheError(f"feature cache {self.folder} is stale: {'; and '.join(problems)}. Rebuild it "
                                    f"(`minigemini prep cache-features ... --out {self.folder} --overwrite`) or "
                                    "train without it (unset data.feature_cache)")

    def _shard(self, i: int) -> Any:
        if i not in self._shards:  # opened lazily, so each DataLoader worker has its own handles
            from safetensors import safe_open

            self._shards[i] = safe_open(str(self.folder / self.index["shards"][i]), framework="pt")
        return self._shards[i]

    def load(self, image: Any, image_folder: str | Path | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(LR features [(V,) N, C], HR stage maps flattened [sum H*W*C] or None) of one image."""
        key = image_key(image, image_folder)
        entry = self.index["images"].get(key)
        if entry is None:
            raise FeatureCacheError(f"image {key!r} is not in feature cache {self.folder} (built from "
                                    f"{self.index.get('data')}); rebuild the cache for this data set")
        if entry.get("file") is not None and file_fingerprint(image) != entry["file"]:
            raise FeatureCacheError(f"image {key!r} changed since feature cache {self.folder} was built (size or "
                                    "content differs); rebuild the cache with --overwrite")
        shard = self._shard(entry["shard"])
        row = entry["row"]
        lr = shard.get_slice("lr")[row:row + 1][0]
        hr = shard.get_slice("hr")[row:row + 1][0] if "hr" in shard.keys() else None
        return lr, hr

    def split_hr(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """[n, sum H*W*C] -> the stage maps [n, C, H, W] (channels-last memory, as the tower makes them)."""
        sizes = [h * w * c for h, w, c in self.hr_shapes]
        return [part.reshape(flat.shape[0], h, w, c).permute(0, 3, 1, 2)
                for part, (h, w, c) in zip(flat.split(sizes, dim=1), self.hr_shapes)]


class _CachedImages:
    """Stands in for the processor inside a dataset: `preprocess_image` returns cached features."""

    def __init__(self, processor: Any, cache: FeatureCache, image_folder: str | Path | None) -> None:
        self._processor, self._cache, self._folder = processor, cache, image_folder
        self.errors: list[FeatureCacheError] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._processor, name)

    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        try:
            lr, hr = self._cache.load(image, self._folder)
        except FeatureCacheError as exc:
            self.errors.append(exc)  # the dataset would turn it into a skipped sample: re-raised by the wrapper
            raise
        return {"images": lr} if hr is None else {"images": lr, "images_aux": hr}


class CachedFeatureDataset(torch.utils.data.Dataset):
    """Wraps a `LazySupervisedDataset`: items carry `lr_features` / `hr_features` (list of stage maps)
    from the cache instead of decoded `images` / `images_aux`; no image is decoded. Collate with
    `CachedFeatureCollator` (or `PackingCollator`). Raises FeatureCacheError for a stale cache."""

    def __init__(self, dataset: Any, cache: str | Path | FeatureCache, model: nn.Module) -> None:
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.cache.check(model.vision_lr, getattr(model, "vision_hr", None), dataset.processor)
        self.dataset = copy.copy(dataset)  # the caller's dataset keeps its own processor
        self._images = _CachedImages(dataset.processor, self.cache, getattr(dataset, "image_folder", None))
        self.dataset.processor = self._images

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # lengths, modality_lengths, ... of the wrapped dataset
        if name in ("dataset", "cache", "_images"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        self._images.errors.clear()
        item = dict(self.dataset[index])
        if self._images.errors:
            raise self._images.errors[0]
        if "images" in item:
            item["lr_features"] = item.pop("images")
        if "images_aux" in item:
            item["hr_features"] = self.cache.split_hr(item.pop("images_aux"))
        return item


def collate_features(features: Sequence[dict]) -> dict[str, Any]:
    """Concatenate cached `lr_features` (and each HR stage map) of a batch's samples in sample order."""
    out: dict[str, Any] = {}
    lr = [f["lr_features"] for f in features if f.get("lr_features") is not None]
    if lr:
        out["lr_features"] = torch.cat(lr, dim=0)
    hr = [f["hr_features"] for f in features if f.get("hr_features") is not None]
    if hr:
        out["hr_features"] = [torch.cat(stage, dim=0) for stage in zip(*hr)]
    return out


@dataclass
class CachedFeatureCollator(DataCollator):
    """`DataCollator` that also batches the cached features of `CachedFeatureDataset` items."""

    def pad(self, features: Sequence[dict]) -> dict[str, Any]:
        batch = super().pad(features)
        batch.update(collate_features(features))
        return batch



# ---- writing ------------------------------------------------------------------------------------
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
            return i, self.processor.preprocess_image(image), file_fingerprint(image)
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
    parser.add_argument("--no-progress", action="store_true")


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


__all__ = ["FeatureCache", "FeatureCacheError", "CachedFeatureDataset", "CachedFeatureCollator", "collate_features",
           "build_feature_cache", "load_towers", "tower_fingerprint", "preprocess_fingerprint", "image_key"]
