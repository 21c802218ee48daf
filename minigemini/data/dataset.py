"""Lazy supervised dataset over LLaVA-style records (JSON, JSONL, Hugging Face `datasets`).

Records are read once (text only); each `__getitem__` tokenizes one conversation with the
template routine and decodes its images with `processor.preprocess_image`. Item:
`{"input_ids": LongTensor[L], "labels": LongTensor[L], "images": [n_img, 3, h, w] (HD: [n_img, V, 3, h, w]),
"images_aux": [n_img, 3, H, W] (when the config uses HR), "sample_id": str}` (no image keys for
text-only samples), plus `"skipped": [{"sample_id", "index", "reason"}]` when bad samples were
replaced (on_error="skip": the next index that loads, deterministically) — with on_error="raise"
a `SampleError` names the data file, record and reason instead.

`<image>` placement (as MGM/LLaVA): a record with images but no `<image>` anywhere gets
`"<image>\\n"` per image prepended to its first user turn; a single-image record's `<image>` is
moved to the front of its turn (`move_image_to_front`, MGM's behaviour); the number of `<image>`
placeholders must equal the number of images, else the sample is an error.

With `decode_images=False` an item carries `"image_refs"` (the resolved paths or PIL images, checked to
exist) instead of `images` / `images_aux`: `CachedFeatureDataset` reads their features from a cache.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from .collate import TruncationError, fit_length
from .image_pipeline import preprocess_image
from .records import (RecordError, RecordSource, SampleError, count_images, image_refs, open_records,
                      resolve_image)
from .templates import Template, TemplateError, get_template, tokenize_conversation

logger = logging.getLogger(__name__)
IMAGE = "<image>"


def place_image_tokens(conversation: Sequence[dict], n_images: int, sample_id: str = "?",
                       move_to_front: bool = True) -> list[dict]:
    """Copy of the turns with `<image>` placed as MGM does; raises RecordError if counts disagree."""
    turns = [dict(t) for t in conversation]
    key = lambda t: "value" if "value" in t else "content"  # noqa: E731
    found = sum(str(t.get(key(t), "")).count(IMAGE) for t in turns)
    if n_images and not found:
        first = next((t for t in turns if str(t.get("from", t.get("role"))).lower() in ("human", "user")), None)
        if first is None:
            raise RecordError(f"sample {sample_id!r} has {n_images} image(s) but no user turn", "image_count_mismatch")
        first[key(first)] = IMAGE + "\n" + first[key(first)] if n_images == 1 else \
            (IMAGE + "\n") * n_images + first[key(first)]
        return turns
    if found != n_images:
        raise RecordError(f"sample {sample_id!r} has {found} {IMAGE} placeholder(s) but {n_images} image(s); "
                          f"put one {IMAGE} per image in the text (or fix the 'image' field)", "image_count_mismatch")
    if n_images == 1 and move_to_front:
        for t in turns:
            text = str(t.get(key(t), ""))
            if IMAGE in text:
                t[key(t)] = IMAGE + "\n" + text.replace(IMAGE, "").strip()
    return turns


class LazySupervisedDataset(Dataset):
    """Tokenized samples from LLaVA-style data; see the module docstring for the item layout.

    `data`: a JSON/JSONL path, a `save_to_disk` folder or parquet file, a `datasets.Dataset`, a
    list of record dicts, or a list of any of these (concatenated). `template`: a name from
    `minigemini.data.templates` (default: `processor.config.template`). `max_length`: longer samples
    follow `fit_length` (only unsupervised text at the end may be cut; else the sample is a too_long
    error: skipped and reported, as `prep validate` reports it).
    """

    def __init__(self, data: Any, processor: Any, template: str | Template | None = None,
                 image_folder: str | Path | None = None, max_length: int | None = None, on_error: str = "skip",
                 system_prompt: str | None = None, image_key: str = "image", move_image_to_front: bool = True,
                 use_hr: bool | None = None, max_consecutive_failures: int = 100, decode_images: bool = True) -> None:
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
        many = isinstance(data, (list, tuple)) and data and not isinstance(data[0], dict)
        self.sources: list[RecordSource] = [open_records(d) for d in (data if many else [data])]
        self.offsets = [0]
        for s in self.sources:
            self.offsets.append(self.offsets[-1] + len(s))
        self.processor = processor
        config = getattr(processor, "config", None)
        self.template = get_template(template or getattr(config, "template", "vicuna_v1"))
        self.image_folder = image_folder
        self.max_length = max_length
        self.on_error = on_error
        self.system_prompt = system_prompt
        self.image_key = image_key
        self.move_image_to_front = move_image_to_front
        self.use_hr = bool(getattr(config, "use_hr", False)) if use_hr is None else use_hr
        self.max_consecutive_failures = max_consecutive_failures
        self.decode_images = decode_images  # False: items carry `image_refs` (see the module docstring)
        self._lengths: list[int] | None = None
        self._modality: list[int] | None = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def _locate(self, index: int) -> tuple[RecordSource, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        k = next(i for i in range(len(self.sources)) if index < self.offsets[i + 1])
        return self.sources[k], index - self.offsets[k]

    # ---- length metadata (no image decoding) -------------------------------------------------
    def _compute_lengths(self) -> None:
        n_tok = int(getattr(self.processor, "num_image_tokens", 0))
        lengths, modality = [], []
        for source in self.sources:
            for n_images, text in source.summaries(self.image_key):
                words = max(len(text.replace(IMAGE, " ").split()), 1)
                lengths.append(words + n_images * n_tok)
                modality.append(words + n_images * n_tok if n_images else -words)
        self._lengths, self._modality = lengths, modality

    @property
    def lengths(self) -> list[int]:
        """Estimated tokens per sample: words of all turns (LLaVA's estimate) + image tokens."""
        if self._lengths is None:
            self._compute_lengths()
        return self._lengths

    @property
    def modality_lengths(self) -> list[int]:
        """As `lengths`, negative for text-only samples (LLaVA's convention, for the sampler)."""
        if self._modality is None:
            self._compute_lengths()
        return self._modality

    # ---- loading -------------------------------------------------------------------------------
    def record(self, index: int) -> dict:
        """The raw record at `index` (RecordError for a malformed JSONL line)."""
        source, local = self._locate(index)
        return source[local]

    def sample_id(self, index: int) -> str:
        """The record's `id` (or its index when it has none / cannot be read)."""
        try:
            rec = self.record(index)
            return str(rec.get("id", index))
        except RecordError:
            return str(index)

    def load(self, index: int) -> dict[str, Any]:
        """Build sample `index` or raise `SampleError` (file, record, id, reason and what to do)."""
        source, local = self._locate(index)
        sample_id = str(index)
        try:
            rec = source[local]
            sample_id = str(rec.get("id", index))
            return self._build(rec, sample_id)
        except (RecordError, TemplateError, TruncationError, OSError, ValueError) as exc:
            kind = getattr(exc, "kind", "corrupt_image" if isinstance(exc, OSError) else "error")
            if isinstance(exc, FileNotFoundError):
                kind = "missing_image"
            raise SampleError(
                f"{source.location(local)} (sample {sample_id!r}): {exc}. Fix or remove this record (find all "
                f"problems with `minigemini prep validate {source.path} --image-folder DIR --write-clean OUT`), or "
                "use on_error='skip' to replace bad samples by the next good one", kind, index, sample_id, str(exc)
            ) from exc

    def _build(self, rec: dict, sample_id: str) -> dict[str, Any]:
        conv = rec.get("conversations", rec.get("messages"))
        if not isinstance(conv, list) or not conv:
            raise RecordError(f"no 'conversations' list (keys: {sorted(rec)})", "missing_keys")
        refs = image_refs(rec, self.image_key)
        conv = place_image_tokens(conv, len(refs), sample_id, self.move_image_to_front)
        images = [resolve_image(r, self.image_folder) for r in refs]
        for im in images:
            if isinstance(im, Path) and not im.is_file():
                raise FileNotFoundError(f"image file not found: {im}")
        system = rec.get("system") if isinstance(rec.get("system"), str) else self.system_prompt
        ids, labels = tokenize_conversation(conv, self.template, self.processor, sample_id=sample_id, system=system)
        if self.max_length is not None:
            ids, labels = fit_length(ids, labels, self.max_length, self.processor.image_token_id)
        if all(lab == -100 for lab in labels):
            raise RecordError("no supervised token (nothing to learn)", "empty_answer")
        item: dict[str, Any] = {"input_ids": torch.tensor(ids, dtype=torch.long),
                                "labels": torch.tensor(labels, dtype=torch.long), "sample_id": sample_id}
        if images and not self.decode_images:
            item["image_refs"] = images
        elif images:
            parts = [self._image(im) for im in images]
            item["images"] = torch.stack([p["images"] for p in parts])
            if self.use_hr:
                item["images_aux"] = torch.stack([p["images_aux"] for p in parts])
        return item

    def _image(self, image: Any) -> dict[str, torch.Tensor]:
        try:
            return preprocess_image(self.processor, image)  # the processor's tensors, by the fast path
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 (PIL raises many types for broken files)
            raise OSError(f"cannot read image {image}: {type(exc).__name__}: {exc}") from exc

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.on_error == "raise":
            return self.load(index)
        skipped: list[dict] = []
        for step in range(min(self.max_consecutive_failures, len(self))):
            j = (index + step) % len(self)
            try:
                item = self.load(j)
            except SampleError as exc:
                logger.warning("skipping sample %s (index %d): %s", exc.sample_id, j, exc.reason)
                skipped.append({"sample_id": exc.sample_id, "index": j, "reason": exc.reason})
                continue
            if skipped:
                item["skipped"] = skipped
            return item
        raise SampleError(f"{len(skipped)} consecutive samples failed from index {index} (first: "
                          f"{skipped[0]['sample_id']!r}: {skipped[0]['reason']}); the data looks broken: run "
                          "`minigemini prep validate` on it", "error", index, skipped[0]["sample_id"])


__all__ = ["LazySupervisedDataset", "SampleError", "place_image_tokens", "count_images"]
