"""Modality/length-grouped sampling: all-image, all-text, mixed; world size 2; deterministic."""

from __future__ import annotations

import random

import pytest

from minigemini.data.sampler import ModalityLengthGroupedSampler, rank_indices, split_to_even_chunks


def lengths(n_img: int, n_txt: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(20, 400) for _ in range(n_img)] + [-rng.randint(5, 300) for _ in range(n_txt)]


def per_rank_batches(sampler: ModalityLengthGroupedSampler, bs: int, world: int) -> list[list[list[int]]]:
    order = list(sampler)
    return [[order[b:b + bs] for b in range(0, len(order), bs)][r::world] for r in range(world)]


@pytest.mark.parametrize("n_img, n_txt", [(40, 0), (0, 40), (37, 29)])
@pytest.mark.parametrize("world", [1, 2])
def test_permutation_deterministic_and_epoch_dependent(n_img, n_txt, world):
    lens = lengths(n_img, n_txt)
    s = ModalityLengthGroupedSampler(lens, batch_size=4, world_size=world, seed=3)
    first = list(s)
    assert sorted(first) == list(range(len(lens))) and len(s) == len(lens)
    assert list(ModalityLengthGroupedSampler(lens, batch_size=4, world_size=world, seed=3)) == first
    s.set_epoch(1)
    assert list(s) != first and sorted(s) == list(range(len(lens)))


def test_mixed_world_size_2_batches_are_homogeneous():
    lens = lengths(37, 29)
    bs, world = 4, 2
    s = ModalityLengthGroupedSampler(lens, batch_size=bs, world_size=world, seed=0)
    order = list(s)
    mega = bs * world
    # 37 image -> 4 full megabatches + 5 left; 29 text -> 3 full + 5 left: 7 homogeneous megabatches, 1 mixed tail
    for m in range(7):
        signs = {lens[i] > 0 for i in order[m * mega:(m + 1) * mega]}
        assert len(signs) == 1, f"megabatch {m} mixes modalities"
    assert sorted(order[7 * mega:]) == order[7 * mega:] and len(order[7 * mega:]) == 10
    # the ranks' shares partition the stream, and rank r gets batch k*W + r
    shares = [ModalityLengthGroupedSampler(lens, bs, world, seed=0, rank=r) for r in range(world)]
    assert sorted(list(shares[0]) + list(shares[1])) == list(range(len(lens)))
    assert list(shares[1])[:bs] == order[bs:2 * bs] and len(shares[0]) == 34 and len(shares[1]) == 32
    # inside a megabatch the two ranks' batches have similar total length
    for m in range(7):
        a, b = order[m * mega:m * mega + bs], order[m * mega + bs:(m + 1) * mega]
        ta, tb = sum(abs(lens[i]) for i in a), sum(abs(lens[i]) for i in b)
        assert abs(ta - tb) <= max(abs(lens[i]) for i in a + b)


def test_length_grouping_sorts_within_batches():
    lens = list(range(1, 33))
    s = ModalityLengthGroupedSampler(lens, batch_size=8, world_size=1, seed=1, group_by_modality=False)
    order = list(s)
    for b in range(0, 32, 8):
        chunk = [lens[i] for i in order[b:b + 8]]
        assert chunk == sorted(chunk, reverse=True)


def test_helpers():
    assert split_to_even_chunks([0, 1, 2, 3], [10, 9, 2, 1], 2) == [[0, 3], [1, 2]]
    assert rank_indices(list(range(10)), 2, 2, 1) == [2, 3, 6, 7]
    with pytest.raises(ValueError, match="non-zero"):
        list(ModalityLengthGroupedSampler([3, 0, -2], 1))
