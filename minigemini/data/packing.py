"""Sequence packing: several samples share one row, with no attention across sample boundaries.

`PackingCollator` places the samples of a batch into rows of at most `max_length` tokens (first
fit, longest first), restarts `position_ids` at 0 for every sample and returns NO `attention_mask`.
That is transformers' packed format: with `attention_mask=None` and no cache, its masking utilities
(`masking_utils.find_packed_sequence_indices`, transformers >= 4.54 / 5.x) read sample boundaries from
the position resets and build a block-diagonal causal mask for sdpa / eager / flex attention, and
flash-attention 2 runs its variable-length kernel — so every token sees exactly what it would see
in its own row. The first label of each sample is set to -100 (in its own row that position is never
a target either), so the loss over a packed batch equals the padded batch's up to float rounding.
Images (and cached features) are concatenated in the packed order of their placeholders.
`packing_problem(llm)` says why an LLM cannot train this way (attention implementation, or a mask
that ignores position_ids, seen on a two-row probe); training checks it when `data.packing` is on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from .collate import DataCollator
from .feature_cache import collate_features

logger = logging.getLogger(__name__)


def plan_rows(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Indices grouped into rows of total length <= max_length (first fit, longest first; a longer sample
    gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        n = lengths[i]
        row = next((r for r, free in enumerate(room) if free >= n), None)
        if row is None:
            rows.append([i])
            room.append(max(max_length - n, 0))
        else:
            rows[row].append(i)
            room[row] -= n
    for row in rows:
        row.sort()  # keep the data order inside a row
    return rows


@dataclass
class PackingCollator(DataCollator):
    """`DataCollator` that packs samples into rows of up to `pack_length` tokens (default: `max_length`;
    `max_length` also truncates samples as in `DataCollator`; a sample longer than `pack_length` gets its own row).

    Batch: `input_ids`, `labels`, `position_ids` [R, T] (no `attention_mask`), `images` / `images_aux` or
    `lr_features` / `hr_features` in placeholder order, `skipped_samples`, and `packed_rows` (the
    sample lengths of each row; pop it with `skipped_samples` before `forward`).
    """

    pack_length: int | None = None

    def __post_init__(self) -> None:
        if (self.pack_length or self.max_length) is None:
            raise ValueError("PackingCollator needs pack_length or max_length (e.g. tokenizer.model_max_length)")

    def __call__(self, features: Sequence[dict]) -> dict[str, Any]:
        kept, skipped = self.select(features)
        if not kept:
            raise ValueError(f"every sample of this batch was dropped: {skipped}; fix the data "
                             "(minigemini prep validate) or raise max_length")
        rows = plan_rows([len(f["input_ids"]) for f in kept], int(self.pack_length or self.max_length))
        ordered = [kept[i] for row in rows for i in row]
        batch: dict[str, Any] = self.pack([[kept[i] for i in row] for row in rows])
        for key in ("images", "images_aux"):
            parts = [f[key] for f in ordered if f.get(key) is not None and len(f[key])]
            if parts:
                batch[key] = torch.cat(parts, dim=0)
        batch.update(collate_features(ordered))
        batch["packed_rows"] = [[len(kept[i]["input_ids"]) for i in row] for row in rows]
        batch["skipped_samples"] = skipped
        if self.return_sample_ids:
            batch["sample_ids"] = [f.get("sample_id") for f in ordered]
        return batch

    def pack(self, rows: Sequence[Sequence[dict]]) -> dict[str, torch.Tensor]:
        """Concatenate each row's samples; positions restart per sample; the tail is one padding segment."""
        ids, labels = self.blank_rows(len(rows), max(sum(len(f["input_ids"]) for f in row) for row in rows))
        width = ids.shape[1]
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for f in row:
                n = len(f["input_ids"])
                ids[r, start:start + n] = torch.as_tensor(f["input_ids"], dtype=torch.long)
                labels[r, start + 1:start + n] = torch.as_tensor(f["labels"], dtype=torch.long)[1:]
                positions[r, start:start + n] = torch.arange(n)
                start += n
            positions[r, start:] = torch.arange(width - start)  # padding: its own segment, never attended to
        return {"input_ids": ids, "labels": labels, "position_ids": positions}


def padding_fraction(batch: dict[str, Any]) -> float:
    """Share of pad slots in a collated batch (padded: attention_mask zeros; packed: after each row's samples)."""
    if "packed_rows" in batch:
        return 1.0 - sum(map(sum, batch["packed_rows"])) / batch["input_ids"].numel()
    mask = batch["attention_mask"]
    return 1.0 - float(mask.sum()) / mask.numel()


def packing_problem(language_model: nn.Module) -> str | None:
    """Why this causal LM cannot train on packed rows (None: it can). Checks the attention implementation, then
    probes the model on two tiny packed rows whose second samples are equal: they must give equal logits."""
    from transformers import masking_utils

    impl = getattr(language_model.config, "_attn_implementation", None)
    if impl not in masking_utils.ALL_MASK_ATTENTION_FUNCTIONS:
        return (f"its attention implementation {impl!r} builds no mask from position-id resets; use one that "
                f"does: {', '.join(sorted(masking_utils.ALL_MASK_ATTENTION_FUNCTIONS))}")
    weight = language_model.get_input_embeddings().weight
    if weight.device.type == "meta" or weight.numel() == 0 or hasattr(weight, "ds_id"):
        return None  # not materialised / ZeRO-3 partitioned: no probe, the implementation check is all we have
    vocab = weight.shape[0]
    rows = torch.tensor([[1, 2, 3, 3, 2, 1], [vocab - 1, vocab - 2, vocab - 3, 3, 2, 1]], device=weight.device)
    positions = torch.tensor([[0, 1, 2, 0, 1, 2]] * 2, device=weight.device)
    was_training = language_model.training
    language_model.eval()
    try:
        with torch.no_grad():
            logits = language_model(input_ids=rows, position_ids=positions, use_cache=False).logits.float()
    except Exception as exc:  # noqa: BLE001 - e.g. a GPU-only attention kernel while the model is on the CPU
        logger.warning("could not check that %s reads packed position ids (%s: %s); make sure its attention "
                       "mask is built from position_ids", type(language_model).__name__, type(exc).__name__, exc)
        return None
    finally:
        language_model.train(was_training)
    # Each row's second sample is [3, 2, 1] after a different first sample: it must not see that sample.
    tol = 1e-5 if weight.dtype == torch.float32 else 2e-2  # a leak moves logits by far more than rounding
    if torch.allclose(logits[0, 3:], logits[1, 3:], rtol=tol * 10, atol=tol):
        return None
    return (f"{type(language_model).__name__} does not build its attention mask from position_ids, so a packed "
            "sample would attend to the samples before it in its row; use another LLM")


__all__ = ["PackingCollator", "plan_rows", "padding_fraction", "packing_problem"]
