"""Benchmark registry: `BENCHMARKS[name]` -> `Benchmark` subclass, `get_benchmark(name)`."""

from __future__ import annotations

from minigemini.eval.benchmarks.base import (Benchmark, BenchmarkDataError, EvalItem,
                                             IMAGE_TOKEN, MC_LETTER_PROMPT, SHORT_ANSWER_PROMPT)
from minigemini.eval.benchmarks.custom import Custom
from minigemini.eval.benchmarks.gqa import GQA
from minigemini.eval.benchmarks.mathvista import MathVista
from minigemini.eval.benchmarks.mmbench import MMBench
from minigemini.eval.benchmarks.mme import MME
from minigemini.eval.benchmarks.mmmu import MMMU
from minigemini.eval.benchmarks.mmvet import MMVet
from minigemini.eval.benchmarks.pope import POPE
from minigemini.eval.benchmarks.scienceqa import ScienceQA
from minigemini.eval.benchmarks.textvqa import TextVQA
from minigemini.eval.benchmarks.vqav2 import VQAv2

BENCHMARKS: dict[str, type[Benchmark]] = {
    cls.name: cls
    for cls in (TextVQA, VQAv2, GQA, POPE, MME, MMBench, ScienceQA, MMMU, MathVista, MMVet, Custom)
}
_ALIASES = {"sqa": "scienceqa", "scienceqa_img": "scienceqa", "mm-vet": "mmvet",
            "mm_vet": "mmvet", "vqa_v2": "vqav2", "mmbench_en": "mmbench"}


def get_benchmark(name: str) -> type[Benchmark]:
    """The `Benchmark` class registered as `name` (case-insensitive); ValueError lists names."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; valid names: {', '.join(sorted(BENCHMARKS))}")
    return BENCHMARKS[key]


__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkDataError", "EvalItem", "IMAGE_TOKEN",
           "MC_LETTER_PROMPT", "SHORT_ANSWER_PROMPT", "get_benchmark"]
