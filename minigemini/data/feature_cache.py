"""Frozen-tower feature cache, reader side: what training imports (`data.feature_cache=CACHE`).

A cache folder (written by `minigemini prep cache-features`, see `feature_cache_build.py`) holds, per
image, the LR tokens `[(V,) N, C_lr]` and the HR tower's four stage maps before MGM's upsample+concat
(8x smaller than the merged map; the model merges them, bit-identically), in safetensors shards.
`index.json` records what decides the stored numbers: the format version (`FORMAT_VERSION`), a hash
of the towers (architecture + weights rounded to bf16, so a bf16 copy of the same towers matches), a
hash of the preprocessing config (sizes, grid, aspect mode, mean/std, CLIP transforms), the versions of
the libraries that compute pixels and features (`LIBRARIES`) and, per image, its shard row and file
fingerprint (size + hash of its first 64 KiB). This module holds those fingerprints (shared with the
writer) and the reader: `CachedFeatureDataset` (+ `CachedFeatureCollator`) refuses a cache made with
another format version, other towers, preprocessing or library versions, an image not in it, or an
image changed since.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Sequence, TypedDict

import torch
from torch import nn

from .collate import DataCollator

FORMAT = "minigemini-feature-cache"
# Bump by hand when the stored layout (index.json keys, shard tensors and their order) or the preprocessing
# code changes the features a cache would hold (model/image_processing.py, MiniGeminiProcessor.preprocess_image,
# data/image_pipeline.py, the towers' forward). Caches of another version are refused (rebuild with --overwrite).
# 1: the format string "minigemini-feature-cache/1", preprocessing hashed with the code's source text.
# 2: explicit version + library versions; the preprocessing hash covers config fields and transforms only.
FORMAT_VERSION = 2
LIBRARIES = ("Pillow", "torch")  # decide the decoded/resized pixels and the towers' arithmetic
INDEX = "index.json"
SPEC_KEYS_IGNORED = ("weights", "channels_last", "drop_path_rate")  # no effect on a frozen tower's output
PREPROCESS_FIELDS = ("image_size", "image_size_aux", "image_grid", "image_global", "image_aspect_ratio",
                     "lr_from_hr", "image_mean", "image_std", "use_hr")
REBUILD = "rebuild it with `minigemini prep cache-features ... --out {folder} --overwrite`"


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
    """Hash of the preprocessing settings: config fields and CLIP transforms (the code is `FORMAT_VERSION`'s)."""
    cfg = processor.config
    parts: dict[str, Any] = {f: getattr(cfg, f, None) for f in PREPROCESS_FIELDS}
    for name in ("hr_transform", "lr_transform"):
        transform = getattr(processor, name, None)
        parts[name] = transform.to_dict() if transform is not None else None
    return _digest(json.dumps(parts, sort_keys=True, default=str).encode())


def library_versions() -> dict[str, str]:
    """Installed versions of `LIBRARIES` (Pillow decodes and resizes, torch computes)."""
    return {name: version(name) for name in LIBRARIES}


def cache_identity(lr_tower: nn.Module, hr_tower: nn.Module | None, processor: Any) -> dict[str, Any]:
    """The index entries a cache must match to be used with these towers and this preprocessing."""
    return {"format_version": FORMAT_VERSION, "tower_hash": tower_fingerprint(lr_tower, hr_tower),
            "preprocess_hash": preprocess_fingerprint(processor), "libraries": library_versions()}


def identity_changes(index: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What differs between a cache's index and `expected` (`cache_identity` [+ dtype]), in words."""
    words = {"tower_hash": "the vision towers (architecture or weights) differ",
             "preprocess_hash": "the image preprocessing (sizes, grid, aspect mode, mean/std or transforms) differs"}
    changes = []
    for key, want in expected.items():
        have = format_version_of(index) if key == "format_version" else index.get(key)
        if have == want:
            continue
        if key == "libraries":
            have = have or {}
            changes += [f"it was built with {name} {have.get(name)} (installed: {v})"
                        for name, v in want.items() if have.get(name) != v]
        else:
            changes.append(words.get(key) or f"its {key.replace('_', ' ')} is {have} (now {want})")
    return changes


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
        check_format(self.index, index)
        self.hr_shapes: list[list[int]] = self.index["hr_shapes"]  # per stage [H, W, C] (stored channels-last)
        self._shards: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.index["images"])

    def __getstate__(self) -> dict:  # open shard handles do not cross into DataLoader workers
        return {**self.__dict__, "_shards": {}}

    def __contains__(self, key: str) -> bool:
        return key in self.index["images"]

    def check(self, lr_tower: nn.Module, hr_tower: nn.Module | None, processor: Any) -> None:
        """Raise FeatureCacheError unless the cache was made by these towers with this preprocessing and the
        installed library versions."""
        changes = identity_changes(self.index, cache_identity(lr_tower, hr_tower, processor))
        if changes:
            raise FeatureCacheError(f"feature cache {self.folder} is stale: {'; '.join(changes)}; "
                                    f"{REBUILD.format(folder=self.folder)} or train without it "
                                    "(unset data.feature_cache)")

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


def format_version_of(index: dict[str, Any]) -> Any:
    """The format version an index was written with (1 for the first format, None: not a feature cache)."""
    if index.get("format") == FORMAT + "/1":
        return 1
    return index.get("format_version") if index.get("format") == FORMAT else None


def check_format(index: dict[str, Any], where: str | Path) -> None:
    """Raise FeatureCacheError unless `index` is a feature cache of `FORMAT_VERSION` (layout and code)."""
    found = format_version_of(index)
    if found is None:
        raise FeatureCacheError(f"{where}: not a minigemini feature cache (format {index.get('format')!r}); "
                                "give a folder written by `minigemini prep cache-features`")
    if found != FORMAT_VERSION:
        raise FeatureCacheError(f"{where}: feature cache format version {found}, this minigemini reads version "
                                f"{FORMAT_VERSION}; {REBUILD.format(folder=Path(where).parent)}")


class _CachedSampleBase(TypedDict):
    input_ids: torch.Tensor  # [L]
    labels: torch.Tensor  # [L], IGNORE_INDEX on unsupervised tokens
    sample_id: str


class CachedSample(_CachedSampleBase, total=False):
    """One `CachedFeatureDataset` item: the tokens of `LazySupervisedDataset` plus, for image samples, the
    cached features in place of `images` / `images_aux` (the collators' input)."""

    lr_features: torch.Tensor  # [n_images, (V,) N, C_lr]
    hr_features: list[torch.Tensor]  # per HR stage [n_images, C, H, W]
    skipped: list[dict[str, Any]]  # samples replaced before this one (on_error="skip")


class CachedFeatureDataset(torch.utils.data.Dataset):
    """Wraps a `LazySupervisedDataset`: its items (`CachedSample`) carry `lr_features` / `hr_features` from
    the cache instead of decoded `images` / `images_aux`; no image is decoded. Collate with
    `CachedFeatureCollator` (or `PackingCollator`). Raises FeatureCacheError for a stale cache, and for an
    image missing from it or changed since (never a skipped sample: the cache must be rebuilt)."""

    def __init__(self, dataset: Any, cache: str | Path | FeatureCache, model: nn.Module) -> None:
        self.cache = cache if isinstance(cache, FeatureCache) else FeatureCache(cache)
        self.cache.check(model.vision_lr, getattr(model, "vision_hr", None), dataset.processor)
        self.dataset = copy.copy(dataset)  # the caller's dataset keeps decoding its images
        self.dataset.decode_images = False  # items carry `image_refs`: their features come from the cache

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def lengths(self) -> list[int]:
        """The wrapped dataset's length estimates (for the length-grouped sampler)."""
        return self.dataset.lengths

    @property
    def modality_lengths(self) -> list[int]:
        """The wrapped dataset's modality lengths (negative for text-only samples)."""
        return self.dataset.modality_lengths

    def __getattr__(self, name: str) -> Any:  # other attributes of the wrapped dataset (processor, ...)
        if name in ("dataset", "cache"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> CachedSample:
        item = dict(self.dataset[index])
        refs = item.pop("image_refs", [])
        sample = CachedSample(input_ids=item["input_ids"], labels=item["labels"], sample_id=item["sample_id"])
        if "skipped" in item:
            sample["skipped"] = item["skipped"]
        if refs:
            features = [self.cache.load(ref, self.dataset.image_folder) for ref in refs]
            sample["lr_features"] = torch.stack([lr for lr, _ in features])
            if self.dataset.use_hr and features[0][1] is not None:
                sample["hr_features"] = self.cache.split_hr(torch.stack([hr for _, hr in features]))
        return sample


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
        """Pad the tokens as `DataCollator` does and concatenate the cached features."""
        batch = super().pad(features)
        batch.update(collate_features(features))
        return batch


__all__ = ["FeatureCache", "FeatureCacheError", "CachedFeatureDataset", "CachedFeatureCollator", "CachedSample",
           "collate_features", "tower_fingerprint", "preprocess_fingerprint", "library_versions", "cache_identity",
           "identity_changes", "check_format", "format_version_of", "image_key", "file_fingerprint", "FORMAT",
           "FORMAT_VERSION"]
