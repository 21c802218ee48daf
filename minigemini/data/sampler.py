"""Modality- and length-grouped sampling (LLaVA's `LengthGroupedSampler`), deterministic by seed + epoch.

Indices are cut into megabatches of `batch_size * world_size`; inside each, samples are sorted
by length and dealt into `world_size` chunks of similar total length, so rank r's batch is chunk r
(the way HF Trainer / accelerate shard a global index stream: consecutive per-device batches go
to ranks 0..W-1). With `group_by_modality`, image samples (positive modality length) and text-only
samples (negative) form separate megabatches; only the one leftover megabatch can be mixed.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def split_to_even_chunks(indices: Sequence[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal `indices` (longest first) into `num_chunks` chunks of equal size and similar total length."""
    if len(indices) % num_chunks != 0:
        return [list(indices[i::num_chunks]) for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        k = totals.index(min(totals))
        chunks[k].append(index)
        totals[k] += lengths[index]
        if len(chunks[k]) == per_chunk:
            totals[k] = float("inf")
    return chunks


def get_length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                               generator: torch.Generator | None = None) -> list[int]:
    """Random megabatches, each sorted by length (longest first) and split evenly across ranks."""
    indices = torch.randperm(len(lengths), generator=generator).tolist()
    size = world_size * batch_size
    megabatches = [sorted(indices[i:i + size], key=lambda j: lengths[j], reverse=True)
                   for i in range(0, len(indices), size)]
    return [i for mb in megabatches for chunk in split_to_even_chunks(mb, lengths, world_size) for i in chunk]


def get_modality_length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                                        generator: torch.Generator | None = None) -> list[int]:
    """As LLaVA: image (> 0) and text-only (< 0) samples in separate megabatches, order shuffled."""
    if any(n == 0 for n in lengths):
        raise ValueError("modality lengths must be non-zero (positive: image sample, negative: text-only)")
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return get_length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)
    mm = [i for i, n in enumerate(lengths) if n > 0]
    lang = [i for i, n in enumerate(lengths) if n < 0]
    mm_order = [mm[i] for i in get_length_grouped_indices([lengths[i] for i in mm], batch_size, world_size, generator)]
    lang_order = [lang[i] for i in
                  get_length_grouped_indices([-lengths[i] for i in lang], batch_size, world_size, generator)]
    size = world_size * batch_size
    mm_mb = [mm_order[i:i + size] for i in range(0, len(mm_order), size)]
    lang_mb = [lang_order[i:i + size] for i in range(0, len(lang_order), size)]
    leftover = [mb for mb in (mm_mb[-1], lang_mb[-1]) if len(mb) < size]
    full = [mb for mb in mm_mb + lang_mb if len(mb) == size]
    order = torch.randperm(len(full), generator=generator).tolist()
    megabatches = [full[i] for i in order]
    tail = sorted(i for mb in leftover for i in mb)
    return [i for mb in megabatches for i in mb] + tail


def rank_indices(indices: Sequence[int], batch_size: int, world_size: int, rank: int) -> list[int]:
    """The part of a global index stream rank `rank` trains on (per-device batch k*W + rank)."""
    return [i for b in range(rank * batch_size, len(indices), batch_size * world_size)
            for i in indices[b:b + batch_size]]


class ModalityLengthGroupedSampler(Sampler[int]):
    """Length-grouped (and optionally modality-grouped) sampler; call `set_epoch` each epoch.

    `lengths`: `dataset.modality_lengths` (or `dataset.lengths` without modality grouping).
    With `rank=None` it yields the global stream (for HF Trainer/accelerate, which shard batches);
    with a rank it yields only that rank's samples.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int = 1, seed: int = 0,
                 group_by_modality: bool = True, rank: int | None = None) -> None:
        if batch_size < 1 or world_size < 1:
            raise ValueError("batch_size and world_size must be >= 1")
        if rank is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.world_size = world_size
        self.seed = seed
        self.group_by_modality = group_by_modality
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the order for `epoch` (deterministic given the seed)."""
        self.epoch = epoch

    def indices(self) -> list[int]:
        """The global index order of the current epoch."""
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        if self.group_by_modality:
            return get_modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, g)
        return get_length_grouped_indices([abs(n) for n in self.lengths], self.batch_size, self.world_size, g)

    def __iter__(self) -> Iterator[int]:
        order = self.indices()
        if self.rank is not None:
            order = rank_indices(order, self.batch_size, self.world_size, self.rank)
        return iter(order)

    def __len__(self) -> int:
        if self.rank is None:
            return len(self.lengths)
        return len(rank_indices(range(len(self.lengths)), self.batch_size, self.world_size, self.rank))
