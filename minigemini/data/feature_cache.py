"""Frozen-tower feature cache, reader side: what training imports (`data.feature_cache=CACHE`).

A cache folder (written by `minigemini prep cache-features`, see `feature_cache_build.py`) holds, per
image, the LR tokens `[(V,) N, C_lr]` and the HR tower's four stage maps before MGM's upsample+concat
(8x smaller than the merged map; the model merges them, bit-identically), in safetensors shards.
`index.json` records a hash of the towers (architecture + weights rounded to bf16, so a bf16 copy
of the same towers matches), a hash of the image preprocessing (config fields, transforms and
their code) and, per image, its shard row and file fingerprint (size + hash of its first 64 KiB).
This module holds those fingerprints (shared with the writer) and the reader: `CachedFeatureDataset`
(+ `CachedFeatureCollator`) refuses a cache made with other towers or preprocessing, an image not in
it, or an image changed since.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from .collate import DataCollator

FORMAT = "minigemini-feature-cache/1"
INDEX = "index.json"
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
    from ..model import image_processing

    cfg = processor.config
    parts: dict[str, Any] = {f: getattr(cfg, f, None) for f in PREPROCESS_FIELDS}
    for name in ("hr_transform", "lr_transform"):
        transform = getattr(processor, name, None)
        parts[name] = transform.to_dict() if transform is not None else None
    parts["code"] = [inspect.getsource(type(processor).preprocess_image), inspect.getsource(image_processing)]
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


__all__ = ["FeatureCache", "FeatureCacheError", "CachedFeatureDataset", "CachedFeatureCollator", "collate_features",
           "tower_fingerprint", "preprocess_fingerprint", "image_key", "file_fingerprint"]
