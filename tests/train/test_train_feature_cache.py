"""`data.feature_cache`: training on cached frozen-tower features gives the same losses as computing them."""

from __future__ import annotations

from pathlib import Path

import pytest

from minigemini.config import load_config
from minigemini.data.feature_cache import FeatureCacheError
from minigemini.data.feature_cache_build import build_feature_cache
from minigemini.train.run import run_training

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = REPO / "configs" / "tiny" / "pretrain.yaml"


def test_stage1_losses_identical_with_and_without_cache(overrides, tmp_path: Path, synthetic_dir: Path,
                                                        tiny_base: Path, stage1_dir: Path) -> None:
    captions = synthetic_dir / "captions.json"
    summary = build_feature_cache(stage1_dir, captions, tmp_path / "cache", image_folder=synthetic_dir,
                                  dtype="fp32", workers=0, progress=False)
    assert summary  # built
    runs = {}
    for name, extra in (("plain", {}), ("cached", {"data__feature_cache": tmp_path / "cache"})):
        cfg = load_config(TINY_PRETRAIN, overrides(tmp_path / name, captions, tiny_base, training__max_steps=4,
                                                   training__save_strategy="no", data__num_workers=0, **extra))
        runs[name] = run_training(cfg).losses
    assert len(runs["plain"]) == 4
    assert runs["cached"] == runs["plain"]  # bit-identical fp32 losses, step by step


def test_stale_cache_is_refused(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                                stage1_dir: Path) -> None:
    captions = synthetic_dir / "captions.json"
    build_feature_cache(stage1_dir, captions, tmp_path / "cache", image_folder=synthetic_dir, dtype="fp32",
                        workers=0, progress=False)
    # another preprocessing (resize instead of pad-to-square) than the one the cache was built with
    cfg = load_config(TINY_PRETRAIN, overrides(tmp_path / "run", captions, tiny_base, training__max_steps=1,
                                               data__feature_cache=tmp_path / "cache", model__image_aspect_ratio="resize"))
    with pytest.raises(FeatureCacheError, match="stale"):
        run_training(cfg)
