"""Frozen-tower feature cache: bit-identical fp32 loss vs towers on the fly; stale caches are refused."""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from minigemini import MiniGeminiForCausalLM, MiniGeminiProcessor
from minigemini.data.collate import DataCollator
from minigemini.data.dataset import LazySupervisedDataset
from minigemini.data.feature_cache import CachedFeatureCollator, CachedFeatureDataset, FeatureCache, FeatureCacheError
from minigemini.data.feature_cache_build import add_arguments, build_feature_cache, run


def _records(n: int) -> list[dict]:
    recs = []
    for i in range(n):
        conv = [{"from": "human", "value": f"<image>\nWhat colour is square {i}?"},
                {"from": "gpt", "value": f"It is colour number {i % 3}."}]
        recs.append({"id": f"s{i}", "image": f"img{i % 5}.png", "conversations": conv})  # 5 distinct images
    text_only = [{"from": "human", "value": "Hello?"}, {"from": "gpt", "value": "Hi."}]
    recs.append({"id": "text", "conversations": text_only})
    return recs


@pytest.fixture()
def data(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "images"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(5):
        pixels = (torch.rand(40 + 7 * i, 48, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_records(7)))
    return path, folder


@pytest.fixture()
def cache(tiny_model_dir: Path, data: tuple[Path, Path], tmp_path: Path) -> Path:
    out = tmp_path / "cache"
    summary = build_feature_cache(tiny_model_dir, data[0], out, image_folder=data[1], dtype="fp32", batch_size=2,
                                  workers=0, shard_size=2, progress=False)
    assert summary["cached"] == 5 and summary["new"] == 5 and not summary["failures"]
    assert len(json.loads((out / "index.json").read_text())["shards"]) == 3  # 2 + 2 + 1 images
    return out


def _model(folder: Path) -> MiniGeminiForCausalLM:
    model = MiniGeminiForCausalLM.from_pretrained(folder).eval()
    model.vision_lr.requires_grad_(False)  # frozen towers, as in training (from_pretrained leaves them trainable)
    model.vision_hr.requires_grad_(False)
    return model


def test_cached_loss_is_bit_identical_fp32(tiny_model_dir: Path, data: tuple[Path, Path], cache: Path) -> None:
    model = _model(tiny_model_dir)
    processor = MiniGeminiProcessor.from_pretrained(tiny_model_dir)
    ds = LazySupervisedDataset(data[0], processor, image_folder=data[1], on_error="raise")
    cds = CachedFeatureDataset(ds, cache, model)
    assert "lr_features" in cds[0] and "images" not in cds[0] and len(cds) == len(ds) == 8
    assert cds.lengths == ds.lengths
    clone = pickle.loads(pickle.dumps(cds))  # DataLoader workers started with spawn (open shards are not sent)
    assert torch.equal(clone[0]["lr_features"], cds[0]["lr_features"])
    plain = DataCollator.from_processor(processor)
    cached = CachedFeatureCollator.from_processor(processor)
    for rows in ([0, 1, 7], [2, 3, 4, 5, 6]):  # with a text-only sample; images shared between samples
        a = {k: v for k, v in plain([ds[i] for i in rows]).items() if k != "skipped_samples"}
        b = {k: v for k, v in cached([cds[i] for i in rows]).items() if k != "skipped_samples"}
        assert "images" in a and "lr_features" in b and len(b["hr_features"]) == 4
        with torch.no_grad():
            loss_a, loss_b = model(**a).loss, model(**b).loss
        assert torch.equal(loss_a, loss_b), (loss_a.item(), loss_b.item())
    model.train()
    a = {k: v for k, v in plain([ds[i] for i in range(5)]).items() if k != "skipped_samples"}
    b = {k: v for k, v in cached([cds[i] for i in range(5)]).items() if k != "skipped_samples"}
    model(**a).loss.backward()
    grads_a = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    model(**b).loss.backward()
    grads_b = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads_a.keys() == grads_b.keys() and any(n.startswith("mining.") for n in grads_a)
    assert all(torch.equal(grads_a[n], grads_b[n]) for n in grads_a), "gradients differ with the cache"


def test_stale_cache_is_refused(tiny_model_dir: Path, data: tuple[Path, Path], cache: Path) -> None:
    model = _model(tiny_model_dir)
    processor = MiniGeminiProcessor.from_pretrained(tiny_model_dir)
    ds = LazySupervisedDataset(data[0], processor, image_folder=data[1])
    CachedFeatureDataset(ds, cache, model.to(torch.bfloat16).float())  # same towers in bf16: accepted
    with torch.no_grad():
        next(model.vision_hr.parameters()).add_(0.01)
    with pytest.raises(FeatureCacheError, match="towers .* differ"):
        CachedFeatureDataset(ds, cache, model)
    model = _model(tiny_model_dir)
    other = MiniGeminiProcessor.from_pretrained(tiny_model_dir)
    other.config.image_aspect_ratio = "resize"
    with pytest.raises(FeatureCacheError, match="preprocessing"):
        CachedFeatureDataset(LazySupervisedDataset(data[0], other, image_folder=data[1]), cache, model)
    # an image changed after caching: the sample raises (on_error="skip" must not hide it)
    cds = CachedFeatureDataset(ds, cache, model)
    Image.new("RGB", (40, 48), (1, 2, 3)).save(data[1] / "img1.png")
    cds[0]
    with pytest.raises(FeatureCacheError, match="changed since"):
        cds[1]
    # an image the cache never saw
    new = _records(7)
    new[0]["image"] = "img9.png"
    shutil.copy(data[1] / "img0.png", data[1] / "img9.png")
    (data[0].parent / "more.json").write_text(json.dumps(new))
    cds = CachedFeatureDataset(LazySupervisedDataset(data[0].parent / "more.json", processor, image_folder=data[1]),
                               cache, model)
    with pytest.raises(FeatureCacheError, match="not in feature cache"):
        cds[0]
    # a rebuild over a stale cache needs --overwrite; resuming a matching one only adds what is missing
    summary = build_feature_cache(tiny_model_dir, data[0].parent / "more.json", cache, image_folder=data[1],
                                  dtype="fp32", workers=0, progress=False)
    assert summary["new"] == 1 and summary["cached"] == 6
    with pytest.raises(FeatureCacheError, match="--overwrite"):
        build_feature_cache(tiny_model_dir, data[0], cache, image_folder=data[1], dtype="bf16", workers=0,
                            progress=False)
    summary = build_feature_cache(tiny_model_dir, data[0], cache, image_folder=data[1], dtype="bf16", workers=0,
                                  overwrite=True, progress=False)
    assert summary["new"] == 5 and FeatureCache(cache).index["dtype"] == "bf16"
    assert CachedFeatureDataset(ds, cache, model)[1]["lr_features"].dtype == torch.bfloat16


def test_cli_reports_missing_images(tiny_model_dir: Path, data: tuple[Path, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture) -> None:
    (data[1] / "img4.png").unlink()
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", str(tiny_model_dir), "--data", str(data[0]), "--image-folder", str(data[1]),
                              "--out", str(tmp_path / "c"), "--workers", "0", "--no-progress"])
    assert run(args) == 1
    out = capsys.readouterr().out
    assert "4 images (4 new" in out and "1 images NOT cached" in out and "img4.png" in out


def test_cached_loss_is_bit_identical_hd(sp_tokenizer, data: tuple[Path, Path], tmp_path: Path) -> None:
    from minigemini import MiniGeminiConfig

    config = MiniGeminiConfig.tiny(hd=True)  # 2x2 grid + global view: per-image LR features [5, N, C]
    processor = MiniGeminiProcessor(sp_tokenizer, config)
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(config).eval()
    model.save_pretrained(tmp_path / "hd")
    processor.save_pretrained(tmp_path / "hd")
    build_feature_cache(tmp_path / "hd", data[0], tmp_path / "c", image_folder=data[1], dtype="fp32", workers=0,
                        progress=False)
    ds = LazySupervisedDataset(data[0], processor, image_folder=data[1], on_error="raise")
    cds = CachedFeatureDataset(ds, tmp_path / "c", model)
    assert cds[0]["lr_features"].shape == (1, 5, 16, 48)
    rows = [0, 7, 3, 1]
    a = {k: v for k, v in DataCollator.from_processor(processor)([ds[i] for i in rows]).items()
         if k != "skipped_samples"}
    b = {k: v for k, v in CachedFeatureCollator.from_processor(processor)([cds[i] for i in rows]).items()
         if k != "skipped_samples"}
    with torch.no_grad():
        assert torch.equal(model(**a).loss, model(**b).loss)


def _edit_index(cache: Path, **changes: object) -> None:
    index = json.loads((cache / "index.json").read_text())
    index.update(changes)
    (cache / "index.json").write_text(json.dumps(index))


def test_other_format_version_is_refused(tiny_model_dir: Path, data: tuple[Path, Path], cache: Path) -> None:
    """A cache of another FORMAT_VERSION is refused by the reader and by the writer (unless --overwrite)."""
    from minigemini.data.feature_cache import FORMAT_VERSION

    index = json.loads((cache / "index.json").read_text())
    assert index["format"] == "minigemini-feature-cache" and index["format_version"] == FORMAT_VERSION
    _edit_index(cache, format_version=FORMAT_VERSION + 1)
    with pytest.raises(FeatureCacheError) as err:
        FeatureCache(cache)
    message = str(err.value)
    assert "\n" not in message
    assert f"format version {FORMAT_VERSION + 1}, this minigemini reads version {FORMAT_VERSION}" in message
    assert f"--out {cache} --overwrite" in message
    with pytest.raises(FeatureCacheError, match=rf"format version is {FORMAT_VERSION + 1} \(now {FORMAT_VERSION}\); "
                                                "pass --overwrite"):
        build_feature_cache(tiny_model_dir, data[0], cache, image_folder=data[1], dtype="fp32", workers=0,
                            progress=False)
    summary = build_feature_cache(tiny_model_dir, data[0], cache, image_folder=data[1], dtype="fp32", workers=0,
                                  overwrite=True, progress=False)
    assert summary["new"] == 5 and FeatureCache(cache).index["format_version"] == FORMAT_VERSION


def test_other_library_versions_are_refused(tiny_model_dir: Path, data: tuple[Path, Path], cache: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow and torch decide pixels and features: a cache built under other versions is stale."""
    from importlib.metadata import version

    from minigemini.data import feature_cache

    installed = {name: version(name) for name in ("Pillow", "torch")}
    assert FeatureCache(cache).index["libraries"] == installed
    model = _model(tiny_model_dir)
    ds = LazySupervisedDataset(data[0], MiniGeminiProcessor.from_pretrained(tiny_model_dir), image_folder=data[1])
    CachedFeatureDataset(ds, cache, model)  # same versions: accepted
    _edit_index(cache, libraries={**installed, "Pillow": "9.0.0"})
    with pytest.raises(FeatureCacheError) as err:
        CachedFeatureDataset(ds, cache, model)
    message = str(err.value)
    assert "\n" not in message and "towers" not in message and "preprocessing" not in message
    assert f"is stale: it was built with Pillow 9.0.0 (installed: {installed['Pillow']}); rebuild it with " \
           f"`minigemini prep cache-features ... --out {cache} --overwrite` or train without it" in message
    _edit_index(cache, libraries=installed)
    monkeypatch.setattr(feature_cache, "library_versions", lambda: {**installed, "torch": "0.1.0"})
    with pytest.raises(FeatureCacheError, match=rf"built with torch {installed['torch']} \(installed: "
                                                r"0\.1\.0\)"):
        CachedFeatureDataset(ds, cache, model)
    with pytest.raises(FeatureCacheError, match=r"holds a stale feature cache: it was built with torch .*"
                                                "pass --overwrite"):
        build_feature_cache(tiny_model_dir, data[0], cache, image_folder=data[1], dtype="fp32", workers=0,
                            progress=False)


def test_items_are_typed_records(tiny_model_dir: Path, data: tuple[Path, Path], cache: Path) -> None:
    """`CachedFeatureDataset` items hold exactly the CachedSample keys; the caller's dataset still decodes."""
    from typing import get_type_hints

    from minigemini.data.feature_cache import CachedSample

    processor = MiniGeminiProcessor.from_pretrained(tiny_model_dir)
    ds = LazySupervisedDataset(data[0], processor, image_folder=data[1], on_error="raise")
    cds = CachedFeatureDataset(ds, cache, _model(tiny_model_dir))
    keys = set(get_type_hints(CachedSample))
    assert keys == {"input_ids", "labels", "sample_id", "lr_features", "hr_features", "skipped"}
    item, text = cds[0], cds[7]
    assert set(item) == {"input_ids", "labels", "sample_id", "lr_features", "hr_features"}
    assert set(text) == {"input_ids", "labels", "sample_id"} and text["sample_id"] == "text"
    assert torch.equal(item["input_ids"], ds[0]["input_ids"]) and "images" in ds[0]  # ds itself unchanged
    assert [m.shape[0] for m in item["hr_features"]] == [1, 1, 1, 1] and item["lr_features"].shape[0] == 1


def test_skipped_samples_are_reported(tiny_model_dir: Path, data: tuple[Path, Path], cache: Path) -> None:
    """A sample whose record fails (its image file is gone) is replaced by the next one and reported in
    `skipped`, as without the cache; the replacement's features come from the cache."""
    processor = MiniGeminiProcessor.from_pretrained(tiny_model_dir)
    ds = LazySupervisedDataset(data[0], processor, image_folder=data[1])  # on_error="skip"
    cds = CachedFeatureDataset(ds, cache, _model(tiny_model_dir))
    expected = cds[2]["lr_features"]
    (data[1] / "img1.png").unlink()
    item = cds[1]
    assert item["sample_id"] == "s2" and torch.equal(item["lr_features"], expected)
    assert [(s["sample_id"], s["index"]) for s in item["skipped"]] == [("s1", 1)]
    assert "image file not found" in item["skipped"][0]["reason"]
