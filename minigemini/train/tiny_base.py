"""The tiny random-init base of `model.tiny` (configs/model/tiny.yaml) and of the demo.

`ensure_tiny_base` writes, once, an LLM + a byte-level BPE tokenizer trained on the run's texts
(`minigemini.data.tokenizer.base_tokenizer`) + the two towers into local folders; `resolve_tiny` points a model
spec at them, so the base loads through the same local-folder path as a real model (`model/builder.py`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch

from ..data.tokenizer import base_tokenizer
from ..model.builder import HR_CONFIG_FILE
from ..model.configuration import MiniGeminiConfig

logger = logging.getLogger(__name__)

TINY_MARKER = "tiny_base.json"
FIXED_TEXT = "USER: ASSISTANT: What is in the image? A picture. Answer the question with one word."


def corpus_texts(files: Iterable[str | Path]) -> list[str]:
    """Every conversation turn of LLaVA-style JSON/JSONL files (the `<image>` placeholder removed)."""
    texts: list[str] = []
    for f in files:
        path = Path(f)
        raw = path.read_text(encoding="utf-8")
        records = [json.loads(line) for line in raw.splitlines() if line.strip()] if path.suffix == ".jsonl" \
            else json.loads(raw)
        for rec in records:
            for turn in rec.get("conversations", []):
                value = str(turn.get("value", "")).replace("<image>", "").strip()
                if value:
                    texts.append(value)
    return texts


def ensure_tiny_base(folder: str | Path, corpus: Iterable[str | Path] = (), llm: str = "llama",
                     vocab_size: int = 1024, hd: bool = False, seed: int = 0,
                     shapes: MiniGeminiConfig | None = None) -> Path:
    """Write (once) a random-init tiny base: `llm/` (+ tokenizer), `vision_lr/`, `vision_hr/`; returns `folder`.
    `shapes` overrides the architecture (default `MiniGeminiConfig.tiny(llm, hd, vocab_size)`)."""
    folder = Path(folder)
    if (folder / TINY_MARKER).is_file():
        return folder
    corpus = list(corpus)
    tokenizer = base_tokenizer([*(corpus_texts(corpus) if corpus else []), FIXED_TEXT], vocab_size)
    shapes = shapes or MiniGeminiConfig.tiny(llm=llm, hd=hd, vocab_size=vocab_size)
    if shapes.text_config.vocab_size < len(tokenizer):
        raise ValueError(f"the LLM vocab ({shapes.text_config.vocab_size}) is smaller than the tokenizer ({len(tokenizer)})")
    torch.manual_seed(seed)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny_base_", dir=folder.parent))
    _write_parts(tmp, shapes, tokenizer)
    info = {"llm": shapes.text_config.model_type, "vocab_size": vocab_size, "hd": shapes.image_grid > 1, "seed": seed,
            "corpus": [str(c) for c in corpus],
            "image_size": shapes.image_size, "image_size_aux": shapes.image_size_aux}
    (tmp / TINY_MARKER).write_text(json.dumps(info, indent=2))
    try:
        os.replace(tmp, folder)  # atomic: a concurrent rank sees all of it or nothing
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / TINY_MARKER).is_file():
            raise
    logger.info("wrote the tiny base model to %s", folder)
    return folder


def _write_parts(tmp: Path, shapes: MiniGeminiConfig, tokenizer: Any) -> None:
    """Random-init LLM (+ tokenizer), CLIP tower and ConvNeXt tower (+ its architecture file) under `tmp`."""
    from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

    from ..model.towers import build_tower
    from ..model.weights import save_weight_subset

    AutoModelForCausalLM.from_config(shapes.text_config).save_pretrained(tmp / "llm")
    tokenizer.save_pretrained(tmp / "llm")
    CLIPVisionModel(CLIPVisionConfig(**shapes.vision_lr["clip_config"])).save_pretrained(tmp / "vision_lr")
    hr = build_tower(shapes.vision_hr)
    (tmp / "vision_hr").mkdir()
    save_weight_subset(hr.state_dict(), tmp / "vision_hr" / "model.safetensors")
    arch = {"timm_name": None, "timm_kwargs": shapes.vision_hr["timm_kwargs"], "drop_path_rate": 0.0}
    (tmp / "vision_hr" / HR_CONFIG_FILE).write_text(json.dumps(arch, indent=2))


def resolve_tiny(spec: Any, corpus: Iterable[str | Path] = ()) -> Any:
    """For a spec with `tiny` set (`model.tiny`): make sure the base exists (its tokenizer trained on
    `tiny.corpus`, else `corpus`); return a copy of the spec pointing at its folders, `tiny` cleared. A spec
    without `tiny`, or with `init_from` (the saved model is the base), comes back as it is."""
    t = spec.tiny
    if t is None or spec.init_from:
        return spec
    base = ensure_tiny_base(t.dir, list(t.corpus) or list(corpus), t.llm, t.vocab_size, t.hd, t.seed)
    info = json.loads((base / TINY_MARKER).read_text())
    out = copy.copy(spec)
    out.tiny = None
    out.llm, out.tokenizer = str(base / "llm"), str(base / "llm")
    out.vision_lr, out.vision_hr, out.vision_hr_arch = str(base / "vision_lr"), str(base / "vision_hr"), None
    out.image_size, out.image_size_aux = info["image_size"], info["image_size_aux"]
    out.image_grid, out.image_global = (2, True) if info["hd"] else (1, False)
    return out
