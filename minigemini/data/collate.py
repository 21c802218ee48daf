"""Batching: right padding, images of the batch's image samples stacked in placeholder order.

`DataCollator` returns `input_ids`, `attention_mask`, `labels` (-100 on padding), `images` /
`images_aux` (only when the batch holds image samples) and `skipped_samples`: the samples the
dataset (or the collator's own `max_length` truncation) replaced or dropped, each
`{"sample_id", "index", "reason"}`. The trainer pops `skipped_samples` before `forward`.
`fit_length` is the one length rule: only unsupervised text may be cut; a sample whose answer or image
block would be cut is an error (skipped and counted), never silently shortened.
A packing collator can subclass `DataCollator` and override `pad`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .records import SampleError
from .templates import IGNORE_INDEX


class TruncationError(ValueError):
    """A sample that cannot be cut to the length limit without corrupting it."""

    kind = "too_long"


def fit_length(input_ids: Sequence[int], labels: Sequence[int], max_length: int,
               image_token_id: int | None) -> tuple[list[int], list[int]]:
    """THE length rule, shared by training (dataset, collators) and `prep validate`: a sample longer than
    `max_length` may lose only unsupervised tokens at its end; a cut that would drop an answer token or
    touch an image block raises TruncationError (kind too_long). Validate reports it; training skips the
    sample and counts it in `skipped_samples` (never a silently shortened answer)."""
    ids, labs = list(input_ids), list(labels)
    if len(ids) <= max_length:
        return ids, labs
    answers = sum(lab != IGNORE_INDEX for lab in labs[max_length:])
    image = image_token_id is not None and image_token_id in ids[max_length:]
    if answers or image:
        lost = [f"{answers} answer token(s)"] if answers else []
        lost += ["part of an image block"] if image else []
        raise TruncationError(f"{len(ids)} tokens > max length {max_length}: cutting would drop {' and '.join(lost)}; "
                              "raise the max length (model.model_max_length / --max-length) or shorten the record")
    return ids[:max_length], labs[:max_length]


@dataclass
class DataCollator:
    """Right-padding collator for `LazySupervisedDataset` samples (see module doc for the batch keys)."""

    pad_token_id: int
    max_length: int | None = None  # optional second guard (`fit_length`); the dataset applies it already
    image_token_id: int | None = None
    on_error: str = "skip"  # "skip": drop + report a sample that cannot be truncated; "raise": SampleError
    pad_to_multiple_of: int | None = None
    return_sample_ids: bool = False  # add batch["sample_ids"] (pop it before forward too)

    @classmethod
    def from_processor(cls, processor: Any, **kwargs: Any) -> "DataCollator":
        """A collator using the processor's pad id and image token id."""
        pad = processor.tokenizer.pad_token_id
        if pad is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token before building the collator")
        return cls(pad_token_id=pad, image_token_id=processor.image_token_id, **kwargs)

    def __call__(self, features: Sequence[dict]) -> dict[str, Any]:
        kept, skipped = self.select(features)
        if not kept:
            raise ValueError(f"every sample of this batch was dropped: {skipped}; fix the data "
                             "(minigemini prep validate) or raise max_length")
        batch = self.pad(kept)
        for key in ("images", "images_aux"):
            parts = [f[key] for f in kept if key in f and f[key] is not None and len(f[key])]
            if parts:
                batch[key] = torch.cat(parts, dim=0)
        batch["skipped_samples"] = skipped
        if self.return_sample_ids:
            batch["sample_ids"] = [f.get("sample_id") for f in kept]
        return batch

    def select(self, features: Sequence[dict]) -> tuple[list[dict], list[dict]]:
        """Apply `max_length`; returns the usable features and every skip record (dataset's + ours)."""
        skipped = [s for f in features for s in f.get("skipped", [])]
        kept = []
        for f in features:
            ids, labels = f["input_ids"], f["labels"]
            if self.max_length is not None and len(ids) > self.max_length:
                try:
                    ids, labels = fit_length(ids.tolist(), labels.tolist(), self.max_length, self.image_token_id)
                except TruncationError as exc:
                    if self.on_error == "raise":
                        raise SampleError(f"sample {f.get('sample_id')!r}: {exc}", "too_long",
                                          sample_id=f.get("sample_id"), reason=str(exc)) from exc
                    skipped.append({"sample_id": f.get("sample_id"), "index": f.get("index"), "reason": str(exc)})
                    continue
                f = {**f, "input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
            kept.append(f)
        return kept, skipped

    def blank_rows(self, n_rows: int, longest: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids all pad id, labels all -100) of shape [n_rows, width]: `longest` rounded up to
        `pad_to_multiple_of`. Shared by padding and packing."""
        width = longest
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return (torch.full((n_rows, width), self.pad_token_id, dtype=torch.long),
                torch.full((n_rows, width), IGNORE_INDEX, dtype=torch.long))

    def pad(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        """Right-pad `input_ids` (pad id), `labels` (-100) and build `attention_mask`."""
        ids, labels = self.blank_rows(len(features), max(len(f["input_ids"]) for f in features))
        width = ids.shape[1]
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.as_tensor(f["labels"], dtype=torch.long)
            mask[row, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
