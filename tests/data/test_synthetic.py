"""Tests for the detail-dependent synthetic VQA set: determinism, schema, balance,
and that the detail answers live only in the HR image (the LR image derived as the
model does it, bilinear / align_corners=False / no antialias, cannot recover them)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from minigemini.data import synthetic as syn


def load_records(path: Path) -> list[dict]:
    """A LLaVA-format JSON list written by `generate_synthetic_dataset`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def all_texts(records: list[dict], *, keep_image_token: bool = False) -> list[str]:
    """Every conversation turn's text (`<image>` stripped unless asked)."""
    texts = [t["value"] if keep_image_token else t["value"].replace("<image>", "").strip()
             for r in records for t in r["conversations"]]
    return [t for t in texts if t]


N_TRAIN, N_TEST = 24, 120


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> syn.SyntheticPaths:
    return syn.generate_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_train=N_TRAIN,
                                          num_test=N_TEST, seed=0, progress=False)


def _to_lr(img: np.ndarray, factor: int) -> np.ndarray:
    """LR view exactly as the model derives it from the HR tensor."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].double()
    size = img.shape[0] // factor
    lr = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return lr[0].permute(1, 2, 0).numpy()


# ---------------------------------------------------------------- LR-invisibility
@pytest.mark.parametrize("factor", [3, 4, 5, 6, 8])
def test_sampled_offsets_match_torch(factor: int) -> None:
    n = 6 * factor
    read = set()
    for p in range(n):
        x = torch.zeros(1, 1, 1, n, dtype=torch.float64)
        x[..., p] = 1.0
        if F.interpolate(x, size=(1, n // factor), mode="bilinear", align_corners=False).abs().sum() > 0:
            read.add(p % factor)
    assert tuple(sorted(read)) == syn.sampled_offsets(factor)


def test_factor_without_invisible_phase_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        syn.dot_mask(2)
    with pytest.raises(ValueError):
        syn.generate_synthetic_dataset(tmp_path, num_train=1, num_test=1, image_size=250, lr_factor=4)


def test_dot_mask_shape_f4() -> None:
    mask = syn.dot_mask(4)
    assert mask.shape == (6, 6) and mask.sum() == 32  # 6x6 ring around the read 2x2 centre
    assert not mask[2:4, 2:4].any() and mask[[0, 1, 4, 5]].all()


@pytest.mark.parametrize("factor,size", [(3, 96), (4, 128), (4, 224), (8, 256)])
def test_lr_image_identical_without_dots(factor: int, size: int) -> None:
    rng = np.random.default_rng(1)
    for scene in syn.sample_scenes(rng, 12, size, factor):
        with_dots = syn.render_scene(scene, size, factor)
        without = syn.render_scene(scene, size, factor, draw_dots=False)
        assert (with_dots != without).any(axis=-1).sum() == len(scene.dot_blocks) * syn.dot_mask(factor).sum()
        assert np.array_equal(_to_lr(with_dots, factor), _to_lr(without, factor))


# --------------------------------------------------------------- trivial heuristic
_PALETTE = np.array(list(syn.COLORS.values()), dtype=np.float64)
_NAMES = list(syn.COLORS)


def _coloured(img: np.ndarray) -> np.ndarray:
    """Per-pixel nearest palette index, -1 for (grey) background."""
    out = np.full(img.shape[:2], -1, dtype=np.int64)
    sel = np.ptp(img, axis=-1) > 60
    out[sel] = ((img[sel][:, None, :] - _PALETTE) ** 2).sum(-1).argmin(-1)
    return out


def _outside_box(shape: tuple[int, int], box: tuple[int, int, int, int], scale: float, pad: int) -> np.ndarray:
    x0, y0, x1, y1 = (int(v / scale) for v in box)
    keep = np.ones(shape, dtype=bool)
    keep[max(y0 - pad, 0):y1 + pad + 1, max(x0 - pad, 0):x1 + pad + 1] = False
    return keep


def _predict(img: np.ndarray, scene: syn.Scene, scale: float, dot_px: float) -> dict[str, str]:
    """Nearest-colour heuristic; may use the big shape's box (it is LR-visible)."""
    lab = _coloured(img)
    small = lab[_outside_box(lab.shape, scene.shape_box, scale, 2)]
    small = small[small >= 0]
    dot_color = _NAMES[np.bincount(small, minlength=6).argmax()] if small.size else _NAMES[0]
    count = int(np.clip(round(small.size / dot_px), 1, 4))
    inside = ~_outside_box(lab.shape, scene.shape_box, scale, 1)
    big = lab[inside]
    big = big[big >= 0]
    ys, xs = np.nonzero((lab == np.bincount(big).argmax()) & inside)
    fill = len(ys) / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))
    shape = "square" if fill > 0.9 else "circle" if fill > 0.65 else "triangle"
    return {"detail_color": dot_color, "detail_count": syn.COUNT_WORDS[count - 1],
            "control_color": _NAMES[np.bincount(big).argmax()], "control_shape": shape}


def test_detail_answers_only_recoverable_from_hr() -> None:
    size, f, n = 256, 4, 180
    scenes = syn.sample_scenes(np.random.default_rng(123), n, size, f)
    hits = {res: {t: 0 for t in syn.TASKS} for res in ("hr", "lr")}
    lr_off_shape = 0  # LR pixels away from the big shape that are not background grey
    for scene in scenes:
        hr = syn.render_scene(scene, size, f).astype(np.float64)
        lr = _to_lr(hr, f)
        lr_off_shape += int((_coloured(lr)[_outside_box(lr.shape[:2], scene.shape_box, f, 2)] >= 0).sum())
        for res, img, scale, px in (("hr", hr, 1.0, syn.dot_mask(f).sum()), ("lr", lr, f, 1.0)):
            pred = _predict(img, scene, scale, px)
            for t in syn.TASKS:
                hits[res][t] += pred[t] == scene.answer(t)
    acc = {res: {t: v / n for t, v in d.items()} for res, d in hits.items()}
    print("heuristic accuracy", json.dumps(acc), "LR coloured pixels off-shape:", lr_off_shape)
    assert lr_off_shape == 0
    assert acc["hr"]["detail_color"] >= 0.99 and acc["hr"]["detail_count"] >= 0.99
    assert acc["lr"]["detail_color"] <= 1 / 6 + 0.04  # chance (constant fallback: nothing to see)
    assert acc["lr"]["detail_count"] <= 1 / 4 + 0.04
    assert acc["lr"]["control_color"] >= 0.98 and acc["lr"]["control_shape"] >= 0.95
    assert acc["hr"]["control_color"] >= 0.98 and acc["hr"]["control_shape"] >= 0.95


def test_written_pngs_dots_outside_lr_footprint(dataset: syn.SyntheticPaths) -> None:
    """On the real PNGs: every dot pixel lies outside everything the LR image shows."""
    recs = [r for r in load_records(dataset.test) if r["task"] == "detail_count"]
    for rec in recs[:40]:
        img = np.asarray(Image.open(dataset.root / rec["image"]).convert("RGB")).astype(np.float64)
        lr = _to_lr(img, 4)
        ys, xs = np.nonzero(np.ptp(lr, axis=-1) > 0)  # LR-visible footprint (background is pure grey)
        outside = np.ones(img.shape[:2], dtype=bool)
        outside[max(4 * ys.min() - 2, 0):4 * ys.max() + 6, max(4 * xs.min() - 2, 0):4 * xs.max() + 6] = False
        hr_dots = (_coloured(img) >= 0) & outside
        n = syn.COUNT_WORDS.index(rec["conversations"][1]["value"]) + 1
        assert hr_dots.sum() == n * syn.dot_mask(4).sum()  # HR: all dot pixels, nothing else
        lr_out = np.ones(lr.shape[:2], dtype=bool)
        lr_out[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = False
        assert np.ptp(lr[lr_out]) == 0  # LR: one flat grey outside the big shape


# ------------------------------------------------------------- files and schema
def test_same_seed_byte_identical_and_different_seed_differs(dataset: syn.SyntheticPaths, tmp_path: Path) -> None:
    again = syn.generate_synthetic_dataset(tmp_path / "a", num_train=N_TRAIN, num_test=N_TEST, seed=0,
                                           progress=False)
    assert _hashes(again.root) == _hashes(dataset.root)
    other = syn.generate_synthetic_dataset(tmp_path / "b", num_train=N_TRAIN, num_test=N_TEST, seed=1,
                                           progress=False)
    h0, h1 = _hashes(dataset.root), _hashes(other.root)
    assert h0.keys() == h1.keys()
    assert sum(h0[k] != h1[k] for k in h0) >= len(h0) - 2  # everything but (maybe) nothing
    # rerun into an existing dir with fewer images: no stale files left behind
    small = syn.generate_synthetic_dataset(tmp_path / "a", num_train=3, num_test=2, seed=0, progress=False)
    assert len(list(small.images.iterdir())) == 5


def test_record_schema(dataset: syn.SyntheticPaths) -> None:
    train, test = load_records(dataset.train), load_records(dataset.test)
    assert len(train) == 4 * N_TRAIN and len(test) == 4 * N_TEST
    ids = [r["id"] for r in train + test]
    assert len(set(ids)) == len(ids)
    for r in train + test:
        assert set(r) == {"id", "image", "conversations", "question_type", "task"}
        assert (dataset.root / r["image"]).is_file() and r["image"].startswith("images/")
        human, gpt = r["conversations"]
        assert human["from"] == "human" and gpt["from"] == "gpt"
        assert human["value"].startswith("<image>\n") and human["value"].count("<image>") == 1
        assert r["question_type"] == syn.question_type(r["task"]) in ("detail", "control")
        assert gpt["value"] in syn.answer_vocabulary(r["task"])
    assert not {r["image"] for r in train} & {r["image"] for r in test}
    with Image.open(dataset.root / train[0]["image"]) as im:
        assert im.size == (256, 256) and im.mode == "RGB"


def test_captions_mention_shape_and_detail(dataset: syn.SyntheticPaths) -> None:
    caps = load_records(dataset.captions)
    assert len(caps) == N_TRAIN
    answers: dict[str, dict[str, str]] = {}
    for r in load_records(dataset.train):
        answers.setdefault(r["image"], {})[r["task"]] = r["conversations"][1]["value"]
    for c in caps:
        assert c["conversations"][0] == {"from": "human", "value": "<image>"}
        words = c["conversations"][1]["value"].lower().rstrip(".").split()
        for task in syn.TASKS:
            assert answers[c["image"]][task] in words, (task, words)


def test_counts_balance_and_meta(dataset: syn.SyntheticPaths) -> None:
    meta = json.loads(dataset.meta.read_text())
    assert meta["seed"] == 0 and meta["image_size"] == 256 and meta["lr_size"] == 64
    assert meta["lr_sampled_offsets"] == [1, 2] and meta["dot_pixels"] == 32
    for split in ("train", "test"):
        recs = load_records(getattr(dataset, split))
        qt = meta["counts"][split]["question_type"]
        assert qt["detail"] == qt["control"] == len(recs) // 2
        for task, hist in meta["counts"][split]["answers"].items():
            assert set(hist) == set(syn.answer_vocabulary(task))
            assert max(hist.values()) - min(hist.values()) <= 1, (split, task, hist)
    assert meta["answer_vocabulary"] == syn.answer_vocabulary()
    assert len(syn.answer_vocabulary()) == 6 + 4 + 3


def test_all_texts_covers_vocabulary(dataset: syn.SyntheticPaths) -> None:
    recs = load_records(dataset.train) + load_records(dataset.captions)
    texts = all_texts(recs)
    assert texts and not any("<image>" in t for t in texts)
    assert set(syn.answer_vocabulary()) <= set(texts)
    assert sum("<image>" in t for t in all_texts(recs, keep_image_token=True)) == len(recs)


def test_cli_entry_point(tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    syn.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "cli"), "--num-train", "4", "--num-test", "2",
                              "--image-size", "128", "--seed", "3", "--no-progress"])
    assert syn.run(args) == 0
    meta = json.loads((tmp_path / "cli" / "meta.json").read_text())
    assert meta["num_records"] == {"train": 16, "test": 8, "captions": 4} and meta["lr_size"] == 32
    assert "wrote" in capsys.readouterr().out
