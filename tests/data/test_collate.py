"""DataCollator: right padding, images of image samples only, truncation that never splits an image."""

from __future__ import annotations

import pytest
import torch

from minigemini.data.collate import DataCollator, TruncationError, fit_length
from minigemini.data.dataset import LazySupervisedDataset, SampleError

IMG = 9  # image token id in the hand-made samples


def sample(ids, labels=None, n_images=0, sid="s", skipped=None):
    item = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels if labels is not None else ids),
            "sample_id": sid}
    if n_images:
        item["images"] = torch.full((n_images, 3, 4, 4), float(len(ids)))
        item["images_aux"] = torch.full((n_images, 3, 8, 8), float(len(ids)))
    if skipped:
        item["skipped"] = skipped
    return item


def test_padding_and_mixed_images():
    c = DataCollator(pad_token_id=0, image_token_id=IMG)
    skip = [{"sample_id": "bad", "index": 3, "reason": "image file not found: x.png"}]
    batch = c([sample([5, IMG, IMG, 6], [-100, -100, -100, 6], n_images=1),
               sample([7, 8], [-100, 8], sid="t", skipped=skip),
               sample([IMG, IMG, IMG, IMG, 4], [-100] * 4 + [4], n_images=2)])
    assert batch["input_ids"].tolist() == [[5, IMG, IMG, 6, 0], [7, 8, 0, 0, 0], [IMG] * 4 + [4]]
    assert batch["labels"].tolist() == [[-100, -100, -100, 6, -100], [-100, 8, -100, -100, -100], [-100] * 4 + [4]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1] * 5]
    assert batch["images"].shape == (3, 3, 4, 4) and batch["images_aux"].shape == (3, 3, 8, 8)
    assert batch["images"][:, 0, 0, 0].tolist() == [4.0, 5.0, 5.0]  # sample order = placeholder order
    assert batch["skipped_samples"] == skip
    assert set(batch) == {"input_ids", "attention_mask", "labels", "images", "images_aux", "skipped_samples"}


def test_all_text_and_all_image_batches():
    c = DataCollator(pad_token_id=0, pad_to_multiple_of=4, return_sample_ids=True)
    text = c([sample([1, 2, 3], sid="a"), sample([4], sid="b")])
    assert "images" not in text and "images_aux" not in text and text["input_ids"].shape == (2, 4)
    assert text["sample_ids"] == ["a", "b"] and text["skipped_samples"] == []
    imgs = c([sample([IMG, 1], n_images=1), sample([IMG, 2, 3], n_images=1)])
    assert imgs["images"].shape == (2, 3, 4, 4)


def test_length_rule_cuts_only_unsupervised_tail():
    """`fit_length` (training and `prep validate`): an answer token or an image block is never cut."""
    assert fit_length([1, IMG, IMG, 2, 3, 7], [-100, -100, -100, 2, 3, -100], 5, IMG) == (
        [1, IMG, IMG, 2, 3], [-100, -100, -100, 2, 3])
    assert fit_length([1, 2], [-100, 2], 5, IMG) == ([1, 2], [-100, 2])
    with pytest.raises(TruncationError, match=r"^6 tokens > max length 4: cutting would drop 2 answer token\(s\);"):
        fit_length([1, IMG, IMG, 2, 3, 4], [-100, -100, -100, 2, 3, 4], 4, IMG)
    with pytest.raises(TruncationError, match="cutting would drop 1 answer token\\(s\\) and part of an image block"):
        fit_length([1, 2, IMG, IMG, 3], [-100, -100, -100, -100, 3], 3, IMG)


def test_collator_truncation_skips_or_raises():
    feats = [sample([1, IMG, IMG, 2, 3], [-100, -100, -100, 2, -100], n_images=1, sid="keep"),
             sample([1, 2, 3, IMG, IMG], [-100, 2, 3, -100, -100], n_images=1, sid="cut")]
    batch = DataCollator(pad_token_id=0, max_length=4, image_token_id=IMG)(feats)
    assert batch["input_ids"].tolist() == [[1, IMG, IMG, 2]] and batch["images"].shape[0] == 1
    assert batch["skipped_samples"][0]["sample_id"] == "cut"
    assert "part of an image block" in batch["skipped_samples"][0]["reason"]
    with pytest.raises(SampleError, match="sample 'cut'"):
        DataCollator(pad_token_id=0, max_length=4, image_token_id=IMG, on_error="raise")(feats)


def test_real_dataset_batch_runs_through_the_model(tmp_path, tiny_processor, tiny_model, image_file):
    image_file(tmp_path / "a.png")
    recs = [{"id": "i", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                              {"from": "gpt", "value": "Red."}]},
            {"id": "t", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
            {"id": "x", "image": "gone.png", "conversations": [{"from": "human", "value": "Q"},
                                                                {"from": "gpt", "value": "A"}]}]
    ds = LazySupervisedDataset(recs, tiny_processor, image_folder=tmp_path)
    batch = DataCollator.from_processor(tiny_processor)([ds[i] for i in range(3)])
    skipped = batch.pop("skipped_samples")
    assert [s["sample_id"] for s in skipped] == ["x"]
    assert batch["images"].shape == (2, 3, 56, 56)  # sample "x" was replaced by "i" (next index, wrapping)
    with torch.no_grad():
        out = tiny_model(**batch)
    assert torch.isfinite(out.loss)
