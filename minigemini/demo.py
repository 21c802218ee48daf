"""`minigemini demo`: the embedded main job — does patch info mining see what LR cannot?

On a fresh machine, with no downloads: generate the synthetic detail-VQA set (tiny coloured dots
drawn only on HR pixels that bilinear downsampling never samples, so they are absent from the LR
image), build a small random-init base model in local folders (LLM + tokenizer trained on the
synthetic text, CLIP ViT, ConvNeXt), train Mini-Gemini (LR + HR + mining) and an LR-only baseline
(same LR tower, same N visual tokens, same budget) through stage 1 (captions) and stage 2 (QA)
with the regular training stack, evaluate both on the held-out split (detail vs control
questions), then print a table and write `results.json`, `results.md` and `demo_results.png`.

The towers stay random-init and frozen (nothing can be downloaded here): a random ConvNeXt stem is
a random linear view of 4x4 pixel patches, enough to carry colour, which attention pooling keeps.
As in the real recipe, stage 2 reads the frozen towers' features from a cache (`prep cache-features`
on the stage-1 output, in the training precision): no image is decoded and no tower runs in its 8
epochs (`--no-feature-cache` computes them on the fly).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VARIANTS = {"mini-gemini": True, "lr-only": False}  # name -> use_hr


@dataclass
class DemoSettings:
    """Sizes and budget; the defaults are what the README's table was measured with."""

    out: Path = Path("outputs/demo")
    seed: int = 0
    num_train: int = 2000  # images (each gives 4 questions + 1 caption)
    num_test: int = 150
    hr_size: int = 128  # HR side; LR = HR / lr_factor
    lr_factor: int = 4
    patch: int = 8  # LR ViT patch: (32 / 8)^2 = 16 visual tokens
    batch_size: int = 16
    stage1_epochs: float = 2.0
    stage2_epochs: float = 8.0
    stage1_lr: float = 1e-3
    stage2_lr: float = 1e-3
    precision: str = "fp32"
    workers: int = 0  # data loading in the training process: a worker next to 2 compute threads oversubscribes 2 cores
    feature_cache: bool = True  # stage 2 reads cached tower features (built from the stage-1 output)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.lr_factor


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="train Mini-Gemini and an LR-only baseline on synthetic detail VQA (CPU, no downloads)",
                              description=__doc__.split("\n\n")[1])
    d = DemoSettings()
    p.add_argument("--out", default=str(d.out), help="output folder (data, models, results, plot)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the data, the base model and training")
    p.add_argument("--num-train", type=int, default=d.num_train, help="training images (e.g. 16 for a quick test)")
    p.add_argument("--num-test", type=int, default=d.num_test, help="held-out images (4 questions each)")
    p.add_argument("--stage1-epochs", type=float, default=d.stage1_epochs, help="epochs of stage 1 (captions)")
    p.add_argument("--stage2-epochs", type=float, default=d.stage2_epochs, help="epochs of stage 2 (questions)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="training batch size")
    p.add_argument("--precision", default=d.precision, choices=["fp32", "bf16"], help="training precision")
    p.add_argument("--no-feature-cache", dest="feature_cache", action="store_false",
                   help="stage 2 runs the frozen towers on every image instead of reading cached features")
    p.add_argument("--verbose", action="store_true",
                   help="show every detail: Trainer log dicts, parts tables, dependency warnings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = DemoSettings(out=Path(args.out), seed=args.seed, num_train=args.num_train, num_test=args.num_test,
                            stage1_epochs=args.stage1_epochs, stage2_epochs=args.stage2_epochs,
                            batch_size=args.batch_size, precision=args.precision, feature_cache=args.feature_cache)
    results = run_demo(settings)
    print("\n" + results["table"] + "\n")
    print(closing_text(settings, results["chat_examples"]))
    return 0


class Phases:
    """Numbered phase labels, '[3/10] mini-gemini stage 1', counted once for the whole demo."""

    def __init__(self, s: DemoSettings) -> None:
        self.total = 2 + len(VARIANTS) * (4 if s.feature_cache else 3)  # data, base; per model: stages, cache, eval
        self.done = 0

    def next(self, text: str) -> str:
        self.done += 1
        return f"[{self.done}/{self.total}] {text}"


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """The whole demo; returns the results dict also written to `results.json` (+ chat examples)."""
    import torch

    from minigemini.data.synthetic import generate_synthetic_dataset

    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    s.out.mkdir(parents=True, exist_ok=True)
    phases = Phases(s)
    label = phases.next("synthetic detail-VQA set")
    data = generate_synthetic_dataset(s.out / "data", num_train=s.num_train, num_test=s.num_test,
                                      image_size=s.hr_size, lr_factor=s.lr_factor, seed=s.seed)
    print(f"{label}: {s.num_train} train / {s.num_test} held-out images (HR {s.hr_size} px, LR {s.lr_size} px) "
          f"in {data.train.parent}", flush=True)
    label = phases.next("base model")
    base = build_base(s, data)
    print(f"{label}: random-init LLM + tokenizer, CLIP ViT, ConvNeXt in {base}", flush=True)
    curves: dict[str, dict[str, dict[int, float]]] = {}
    scores: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    for name, use_hr in VARIANTS.items():
        t0 = time.perf_counter()
        model_dir, curves[name] = train_variant(s, phases, base, data, name, use_hr)
        timings[name] = time.perf_counter() - t0
        label = phases.next(f"{name} evaluation")
        scores[name] = evaluate(model_dir, data.test, s.out / f"predictions_{name}.jsonl", desc=label)
        print(f"{label}: {scores[name]['detail']:.1f} % on detail, {scores[name]['control']:.1f} % on control "
              f"questions ({s.num_test * 4} held-out)", flush=True)
    from .demo_report import write_report

    meta = json.loads(Path(data.meta).read_text())
    results = write_report(s.out, scores, curves, timings, time.perf_counter() - start, settings=s, data_meta=meta)
    results["chat_examples"] = chat_examples(s, data.test)
    return results


def train_variant(s: DemoSettings, phases: Phases, base: Path, data: Any, name: str,
                  use_hr: bool) -> tuple[Path, dict[str, dict[int, float]]]:
    """Stage 1 (captions), the feature cache, stage 2 (questions) of one model; one line per phase."""
    from minigemini.train.progress import summary_line

    curves: dict[str, dict[int, float]] = {}
    adapter, cache = None, None
    for stage, what, train_file, epochs, lr in (
            ("pretrain", "stage 1 (captions)", data.captions, s.stage1_epochs, s.stage1_lr),
            ("finetune", "stage 2 (questions)", data.train, s.stage2_epochs, s.stage2_lr)):
        label = phases.next(f"{name} {what}")
        t0 = time.perf_counter()
        result = train_stage(s, base, name, use_hr, stage, train_file, epochs, lr, adapter, cache, desc=label)
        print(f"{label}: {summary_line(result, time.perf_counter() - t0)}", flush=True)
        curves[stage], adapter = result.losses, result.output_dir
        if s.feature_cache and cache is None:
            label = phases.next(f"{name} feature cache")
            cache = cache_features(s, adapter, data.train, s.out / "feature_cache" / name, desc=label)
            print(f"{label}: the frozen towers' features of {s.num_train} images ({s.precision}) in {cache}",
                  flush=True)
    return adapter, curves


def chat_examples(s: DemoSettings, test_file: Path) -> dict[str, dict[str, str]]:
    """Per model: its folder and a held-out detail question (image, prompt, expected answer) to chat about."""
    records = json.loads(Path(test_file).read_text())
    rec = next((r for r in records if r.get("question_type") == "detail"), records[0])
    prompt = rec["conversations"][0]["value"].replace("<image>", "").strip()
    image = str(Path(test_file).parent / rec["image"])
    return {name: {"model": str(s.out / "runs" / name / "finetune"), "image": image, "prompt": prompt,
                   "expected": rec["conversations"][1]["value"]} for name in VARIANTS}


def closing_text(s: DemoSettings, examples: dict[str, dict[str, str]]) -> str:
    """Where the trained models are and the exact `minigemini chat` command for each."""
    import shlex

    lines = ["trained models (ask them yourself):"]
    for name, ex in examples.items():
        lines.append(f"  {name}: {ex['model']}")
        lines.append(f"    minigemini chat --model {shlex.quote(ex['model'])} --image {shlex.quote(ex['image'])} "
                     f"--prompt {shlex.quote(ex['prompt'])}")
    expected = next(iter(examples.values()))["expected"] if examples else ""
    lines.append(f"  (expected answer: {expected!r}; the LR-only model cannot see the dots)")
    lines.append(f"results: {s.out / 'results.md'}, {s.out / 'results.json'}, {s.out / 'demo_results.png'} "
                 f"(+ .svg), predictions_*.jsonl")
    return "\n".join(lines)


def build_base(s: DemoSettings, data: Any) -> Path:
    """Local folders `llm/` (+ tokenizer), `vision_lr/`, `vision_hr/`: loaded like any real model."""
    from minigemini.model import MiniGeminiConfig
    from minigemini.train.tiny_base import ensure_tiny_base

    vocab = 512
    shapes = MiniGeminiConfig.tiny(
        vocab_size=vocab, image_size=s.lr_size, image_size_aux=s.hr_size,
        vision_lr={"backend": "hf_clip", "weights": None, "select_layer": -2, "select_feature": "patch",
                   "clip_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                   "num_attention_heads": 4, "image_size": s.lr_size, "patch_size": s.patch,
                                   "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 32}},
        vision_hr={"backend": "timm_convnext", "weights": None, "timm_name": None, "drop_path_rate": 0.0,
                   "timm_kwargs": {"depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128]}})
    text = shapes.text_config
    text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads = 128, 256, 4, 4
    # the chat template's fixed text is part of the tokenizer's corpus, so it costs few tokens
    from minigemini.data.templates import get_template

    template_text = s.out / "data" / "template_text.json"
    template_text.write_text(json.dumps([{"id": "template", "conversations": [
        {"from": "human", "value": get_template("vicuna_v1").system + " USER: ASSISTANT:"}]}]))
    return ensure_tiny_base(s.out / "base", [data.captions, data.train, data.test, template_text],
                            vocab_size=vocab, seed=s.seed, shapes=shapes)


def cache_features(s: DemoSettings, model_dir: Path, data_file: Path, out: Path, desc: str) -> Path:
    """`minigemini prep cache-features` for the stage-1 model's (frozen, unchanged) towers."""
    from minigemini.data.feature_cache_build import build_feature_cache

    summary = build_feature_cache(model_dir, data_file, out, image_folder=Path(data_file).parent, dtype=s.precision,
                                  workers=0, overwrite=True, progress=desc)
    if summary["failures"]:
        raise RuntimeError(f"feature cache: {len(summary['failures'])} images failed, e.g. {summary['failures'][:3]}")
    return out


def train_stage(s: DemoSettings, base: Path, name: str, use_hr: bool, stage: str, train_file: Path,
                epochs: float, lr: float, adapter: Path | None, feature_cache: Path | None = None,
                desc: str = "training") -> Any:
    """One stage through the regular training stack (`minigemini.train.run.run_training`), one bar named `desc`."""
    from minigemini.config import from_dict
    from minigemini.train.progress import PhaseProgress
    from minigemini.train.run import run_training

    out = s.out / "runs" / name / stage
    raw = {
        "model": {"llm": str(base / "llm"), "vision_lr": str(base / "vision_lr"),
                  "vision_hr": str(base / "vision_hr"), "image_size": s.lr_size, "image_size_aux": s.hr_size,
                  "use_hr": use_hr, "model_max_length": 128,
                  "pretrained_adapter": str(adapter) if adapter else None},
        "data": {"train": [str(train_file)], "num_workers": s.workers,
                 "template": "plain" if stage == "pretrain" else "vicuna_v1",
                 "feature_cache": str(feature_cache) if feature_cache else None},
        "training": {"stage": stage, "output_dir": str(out), "seed": s.seed, "num_train_epochs": epochs,
                     "per_device_train_batch_size": s.batch_size, "learning_rate": lr, "warmup_ratio": 0.03,
                     "lr_scheduler_type": "cosine", "precision": s.precision, "gradient_checkpointing": False,
                     "logging_steps": 10, "save_strategy": "no", "report_to": [], "use_cpu": True,
                     **s.extra},
    }
    from minigemini.logs import verbose

    callbacks = [] if verbose() else [PhaseProgress(desc)]  # verbose: the Trainer's own bar and log dicts
    return run_training(from_dict(raw, source=f"demo/{name}/{stage}"), callbacks=callbacks)


def evaluate(model_dir: Path, test_file: Path, predictions: Path, batch_size: int = 50,
             desc: str = "evaluation") -> dict[str, float]:
    """Greedy answers for every held-out question (written to `predictions`, one JSON line each);
    exact-match accuracy per task and per question type."""
    from tqdm.auto import tqdm

    from minigemini.infer.generate import GenerationOptions, Generator

    records = json.loads(Path(test_file).read_text())
    gen = Generator.from_pretrained(model_dir, device="cpu", dtype="float32")
    options = GenerationOptions(max_new_tokens=6)
    hits: dict[str, list[bool]] = {}
    root = Path(test_file).parent
    lines = []
    for i in tqdm(range(0, len(records), batch_size), desc=desc, unit="batch", leave=False):
        chunk = records[i:i + batch_size]
        prompts = [gen.question_prompt(r["conversations"][0]["value"]) for r in chunk]
        answers = gen.generate(prompts, [[root / r["image"]] for r in chunk], options)
        for rec, answer in zip(chunk, answers):
            ok = answer.strip().lower().rstrip(".") == rec["conversations"][1]["value"].strip().lower()
            for key in (rec["task"], rec["question_type"]):
                hits.setdefault(key, []).append(ok)
            lines.append(json.dumps({"question_id": rec["id"], "text": answer, "answer": rec["conversations"][1]["value"],
                                     "correct": ok}))
    predictions.write_text("\n".join(lines) + "\n")
    return {k: 100.0 * sum(v) / len(v) for k, v in sorted(hits.items())}
