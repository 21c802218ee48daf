"""Detail-dependent synthetic VQA set for the no-download CPU demo.

Why: the demo must show that the high-resolution (HR) branch + patch info mining
sees what the low-resolution (LR) branch cannot.  Each image holds one big shape
(LR-visible: *control* questions) and 1-4 tiny coloured "dots" (*detail*
questions).  The LR image is derived from the HR-size image by
``F.interpolate(hr, scale 1/f, mode="bilinear", align_corners=False)`` without
antialiasing, which reads output pixel ``i`` from input coordinate
``(i + 0.5) * f - 0.5``: only offsets ``{f/2 - 1, f/2}`` (even f) or
``{(f - 1)/2}`` (odd f) of every f-pixel block are ever read.  Dots are drawn
only on pixels whose row *or* column offset is never read, so the LR image is
bit-identical with or without them, while the HR encoder sees a 6x6 ring
(f=4).  Answers are single words from a small closed set (colours, counts,
shape names) so exact-match accuracy is meaningful.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

VERSION = "synthetic-v1"
COLORS: dict[str, tuple[int, int, int]] = {  # well separated in RGB, far from the grey background
    "red": (220, 30, 30),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 205, 0),
    "purple": (150, 40, 190),
    "cyan": (0, 190, 200),
}
COUNT_WORDS = ("one", "two", "three", "four")
SHAPES = ("circle", "square", "triangle")
TASKS = ("detail_color", "detail_count", "control_color", "control_shape")
QUESTIONS: dict[str, tuple[str, ...]] = {  # number-neutral wording: no count leak via grammar
    "detail_color": ("What color are the tiny dots?", "Which color do the small dots have?"),
    "detail_count": ("How many tiny dots are there?", "Count the small dots."),
    "control_color": ("What color is the big shape?", "Which color is the large shape?"),
    "control_shape": ("What shape is the big object?", "Which shape is the large object?"),
}
COLOR_JITTER = 12  # per-channel +-jitter of palette colours (keeps nearest-colour decoding exact)
BG_RANGE = (195, 235)  # grey background level
SHAPE_FRAC = (0.30, 0.48)  # big-shape side as a fraction of the canvas
_IMAGE_RE = re.compile(r"^(train|test)_\d{6}\.png$")


@dataclass(frozen=True)
class SyntheticPaths:
    """Where :func:`generate_synthetic_dataset` wrote its outputs."""

    root: Path
    images: Path
    train: Path
    test: Path
    captions: Path
    meta: Path


@dataclass(frozen=True)
class Scene:
    """Everything needed to render one image and answer its questions."""

    background: int  # grey level
    shape: str
    shape_color: str
    shape_rgb: tuple[int, int, int]
    shape_box: tuple[int, int, int, int]  # x0, y0, x1, y1 (inclusive), HR pixels
    dot_color: str
    dot_rgb: tuple[int, int, int]
    dot_blocks: tuple[tuple[int, int], ...]  # (row, col) of the LR blocks the dots sit on

    def answer(self, task: str) -> str:
        """Return the one-word ground-truth answer for ``task``."""
        return {
            "detail_color": self.dot_color,
            "detail_count": COUNT_WORDS[len(self.dot_blocks) - 1],
            "control_color": self.shape_color,
            "control_shape": self.shape,
        }[task]


def sampled_offsets(lr_factor: int) -> tuple[int, ...]:
    """Offsets inside each ``lr_factor`` block that bilinear (align_corners=False) downsampling reads."""
    if lr_factor < 1:
        raise ValueError(f"lr_factor must be >= 1, got {lr_factor}")
    if lr_factor % 2:
        return ((lr_factor - 1) // 2,)
    return (lr_factor // 2 - 1, lr_factor // 2)


def dot_mask(lr_factor: int) -> np.ndarray:
    """Boolean (f+2, f+2) dot footprint around one LR block: pixels with an unread row or column offset."""
    read = set(sampled_offsets(lr_factor))
    if len(read) == lr_factor:
        raise ValueError(f"lr_factor={lr_factor} reads every pixel: no LR-invisible phase (use >= 3)")
    offs = [(k - 1) % lr_factor for k in range(lr_factor + 2)]  # region starts one pixel before the block
    unread = np.array([o not in read for o in offs])
    return unread[:, None] | unread[None, :]


def answer_vocabulary(task: str | None = None) -> list[str]:
    """Closed answer set (all tasks, or one task), in a fixed order for exact-match evaluation."""
    per_task = {
        "detail_color": list(COLORS),
        "detail_count": list(COUNT_WORDS),
        "control_color": list(COLORS),
        "control_shape": list(SHAPES),
    }
    if task is not None:
        return per_task[task]
    return list(dict.fromkeys(w for t in TASKS for w in per_task[t]))


def question_type(task: str) -> str:
    """Map a task name to its question type, ``"detail"`` or ``"control"``."""
    return task.split("_", 1)[0]


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    d = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.array(rgb) + d, 0, 255))


def _balanced(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels in [0, k), each used n//k or n//k + 1 times, shuffled."""
    return rng.permutation(np.resize(np.arange(k), n))


def _place_dots(rng: np.random.Generator, n: int, box: tuple[int, int, int, int],
                image_size: int, f: int) -> tuple[tuple[int, int], ...]:
    """Pick ``n`` LR blocks whose dot lies on background, >= 1 block from the shape box and each other."""
    blocks = image_size // f
    idx = np.arange(1, blocks - 1)  # the dot region spills one pixel outside its block
    x0, y0, x1, y1 = box
    lo_r, hi_r = (y0 - 2 * f) // f, (y1 + 2 * f) // f
    lo_c, hi_c = (x0 - 2 * f) // f, (x1 + 2 * f) // f
    rr, cc = np.meshgrid(idx, idx, indexing="ij")
    free = ~((rr >= lo_r) & (rr <= hi_r) & (cc >= lo_c) & (cc <= hi_c))
    cand = np.stack([rr[free], cc[free]], axis=1)
    chosen: list[tuple[int, int]] = []
    for _ in range(1000):
        r, c = (int(v) for v in cand[rng.integers(len(cand))])
        if all(max(abs(r - a), abs(c - b)) >= 3 for a, b in chosen):
            chosen.append((r, c))
            if len(chosen) == n:
                return tuple(chosen)
    raise RuntimeError("could not place dots; image_size too small for lr_factor")


def sample_scenes(rng: np.random.Generator, n: int, image_size: int, lr_factor: int) -> list[Scene]:
    """Sample ``n`` scenes with balanced, mutually independent attributes."""
    colors = list(COLORS)
    dot_c = _balanced(rng, n, len(colors))
    shape_c = _balanced(rng, n, len(colors))
    counts = _balanced(rng, n, len(COUNT_WORDS)) + 1
    kinds = _balanced(rng, n, len(SHAPES))
    scenes = []
    for i in range(n):
        side = int(rng.integers(int(SHAPE_FRAC[0] * image_size), int(SHAPE_FRAC[1] * image_size) + 1))
        margin = 2 * lr_factor
        x0 = int(rng.integers(margin, image_size - side - margin + 1))
        y0 = int(rng.integers(margin, image_size - side - margin + 1))
        box = (x0, y0, x0 + side - 1, y0 + side - 1)
        scenes.append(Scene(
            background=int(rng.integers(BG_RANGE[0], BG_RANGE[1] + 1)),
            shape=SHAPES[kinds[i]],
            shape_color=colors[shape_c[i]],
            shape_rgb=_jitter(rng, COLORS[colors[shape_c[i]]]),
            shape_box=box,
            dot_color=colors[dot_c[i]],
            dot_rgb=_jitter(rng, COLORS[colors[dot_c[i]]]),
            dot_blocks=_place_dots(rng, int(counts[i]), box, image_size, lr_factor),
        ))
    return scenes


def render_scene(scene: Scene, image_size: int, lr_factor: int, *, draw_dots: bool = True) -> np.ndarray:
    """Render ``scene`` to an (H, W, 3) uint8 array; ``draw_dots=False`` gives the dot-free twin."""
    img = Image.new("RGB", (image_size, image_size), (scene.background,) * 3)
    draw = ImageDraw.Draw(img)
    x0, y0, x1, y1 = scene.shape_box
    if scene.shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=scene.shape_rgb)
    elif scene.shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=scene.shape_rgb)
    else:
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=scene.shape_rgb)
    arr = np.asarray(img).copy()
    if draw_dots:
        mask = dot_mask(lr_factor)
        size = lr_factor + 2
        for r, c in scene.dot_blocks:
            top, left = r * lr_factor - 1, c * lr_factor - 1
            arr[top:top + size, left:left + size][mask] = scene.dot_rgb
    return arr


def caption(scene: Scene, rng: np.random.Generator) -> str:
    """Stage-1 caption naming both the big shape and the tiny dots (colour and count)."""
    n = len(scene.dot_blocks)
    word, dots = COUNT_WORDS[n - 1], "dot" if n == 1 else "dots"
    if rng.integers(2):
        return f"A big {scene.shape_color} {scene.shape} with {word} tiny {scene.dot_color} {dots}."
    return f"{word.capitalize()} tiny {scene.dot_color} {dots} next to a big {scene.shape_color} {scene.shape}."


def _record(rid: str, image: str, human: str, gpt: str, qtype: str, task: str) -> dict:
    return {
        "id": rid,
        "image": image,
        "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}],
        "question_type": qtype,
        "task": task,
    }


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=True) + "\n", encoding="utf-8")


def _make_split(out: Path, split: str, n: int, seed: int, image_size: int, lr_factor: int,
                progress: bool) -> tuple[list[dict], list[dict]]:
    """Render one split; returns (VQA records, caption records)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0 if split == "train" else 1]))
    scenes = sample_scenes(rng, n, image_size, lr_factor)
    vqa, caps = [], []
    it: Iterable = enumerate(scenes)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, total=n, desc=f"synthetic {split}", unit="img")
    for i, scene in it:
        name = f"{split}_{i:06d}"
        rel = f"images/{name}.png"
        Image.fromarray(render_scene(scene, image_size, lr_factor)).save(
            out / rel, format="PNG", optimize=False, compress_level=6)
        for task in TASKS:
            q = QUESTIONS[task][int(rng.integers(len(QUESTIONS[task])))]
            vqa.append(_record(f"{name}_{task}", rel, f"<image>\n{q}", scene.answer(task),
                               question_type(task), task))
        caps.append(_record(f"{name}_caption", rel, "<image>", caption(scene, rng), "caption", "caption"))
    return vqa, caps


def _counts(records: Sequence[dict]) -> dict:
    out: dict = {"question_type": {}, "task": {}, "answers": {}}
    for r in records:
        out["question_type"][r["question_type"]] = out["question_type"].get(r["question_type"], 0) + 1
        out["task"][r["task"]] = out["task"].get(r["task"], 0) + 1
        ans = out["answers"].setdefault(r["task"], {})
        a = r["conversations"][-1]["value"]
        ans[a] = ans.get(a, 0) + 1
    return out


def generate_synthetic_dataset(
    out_dir: str | Path,
    *,
    num_train: int = 2000,
    num_test: int = 500,
    image_size: int = 256,
    lr_factor: int = 4,
    seed: int = 0,
    progress: bool | None = None,
) -> SyntheticPaths:
    """Write images/, train.json, test.json, captions.json and meta.json under ``out_dir``.

    ``num_train``/``num_test`` count *images*; each image yields one record per task in
    :data:`TASKS` (half detail, half control) and train images also one caption record.
    ``image_size`` must equal the model's HR size and ``image_size // lr_factor`` its LR size.
    """
    if image_size % lr_factor:
        raise ValueError(f"image_size={image_size} must be divisible by lr_factor={lr_factor}")
    dot_mask(lr_factor)  # validates the factor
    if image_size // lr_factor < 16:
        raise ValueError("need at least 16 LR pixels per side")
    root = Path(out_dir)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for stale in images.iterdir():  # only files this generator names; keeps reruns byte-identical
        if _IMAGE_RE.match(stale.name):
            stale.unlink()
    paths = SyntheticPaths(root, images, root / "train.json", root / "test.json",
                           root / "captions.json", root / "meta.json")
    show = (num_train + num_test >= 500) if progress is None else progress
    train, caps = _make_split(root, "train", num_train, seed, image_size, lr_factor, show)
    test, _ = _make_split(root, "test", num_test, seed, image_size, lr_factor, show)
    _write_json(paths.train, train)
    _write_json(paths.test, test)
    _write_json(paths.captions, caps)
    _write_json(paths.meta, {
        "version": VERSION,
        "seed": seed,
        "image_size": image_size,
        "lr_factor": lr_factor,
        "lr_size": image_size // lr_factor,
        "lr_sampled_offsets": list(sampled_offsets(lr_factor)),
        "dot_pixels": int(dot_mask(lr_factor).sum()),
        "num_images": {"train": num_train, "test": num_test},
        "num_records": {"train": len(train), "test": len(test), "captions": len(caps)},
        "counts": {"train": _counts(train), "test": _counts(test)},
        "answer_vocabulary": answer_vocabulary(),
        "task_vocabulary": {t: answer_vocabulary(t) for t in TASKS},
        "colors": {k: list(v) for k, v in COLORS.items()},
        "paths": {k: str(Path(v).relative_to(root)) for k, v in asdict(paths).items()},
    })
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``minigemini prep synthetic`` options to ``parser``."""
    parser.add_argument("out_dir", help="output directory (images/, train.json, test.json, captions.json, meta.json)")
    parser.add_argument("--num-train", type=int, default=2000, help="training images (4 questions each)")
    parser.add_argument("--num-test", type=int, default=500, help="test images (4 questions each)")
    parser.add_argument("--image-size", type=int, default=256, help="canvas size; must equal the model's HR size")
    parser.add_argument("--lr-factor", type=int, default=4, help="HR/LR size ratio of the model (>= 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the images and questions (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="disable the progress bar")


def run(args: argparse.Namespace) -> int:
    """Entry point for the CLI sub-command; returns a process exit code."""
    paths = generate_synthetic_dataset(
        args.out_dir, num_train=args.num_train, num_test=args.num_test, image_size=args.image_size,
        lr_factor=args.lr_factor, seed=args.seed, progress=False if args.no_progress else None)
    meta = json.loads(paths.meta.read_text(encoding="utf-8"))
    print(f"wrote {meta['num_records']} records to {paths.root} "
          f"(HR {meta['image_size']}, LR {meta['lr_size']})")
    return 0
