"""Optional LLM-judge interface (off by default; nothing here touches the network).

Benchmarks whose official scoring uses GPT (MM-Vet grading, MathVista answer extraction)
accept a `judge=` option. Anything with a `judge(question, answer, prediction) -> float`
method works (a score in [0, 1]: how correct `prediction` is given the reference `answer`);
a judge that also has `extract(question, prediction) -> str` is used by MathVista the way
upstream uses GPT-4 (extract the final answer, then compare by rule).

Example (user code, not shipped): wrap any local or remote LLM in a class with `judge()`
that builds the benchmark's grading prompt and parses the number it returns.
"""

from __future__ import annotations

import math
from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class Judge(Protocol):
    """Scores a prediction against a reference answer."""

    def judge(self, question: str, answer: str, prediction: str) -> float:
        """Correctness of `prediction` in [0, 1] (MM-Vet style partial credit allowed)."""
        ...


@runtime_checkable
class AnswerExtractor(Protocol):
    """Extracts the final short answer from a long response (MathVista-style)."""

    def extract(self, question: str, prediction: str) -> str:
        """The final answer stated in `prediction`, or '' if none."""
        ...


class CallableJudge:
    """Adapts plain functions to the `Judge` (and optionally `AnswerExtractor`) protocol."""

    def __init__(self, score_fn: Callable[[str, str, str], float],
                 extract_fn: Callable[[str, str], str] | None = None) -> None:
        self._score_fn = score_fn
        if extract_fn is not None:
            self.extract = extract_fn  # type: ignore[method-assign]

    def judge(self, question: str, answer: str, prediction: str) -> float:
        """Delegate to the wrapped scoring function."""
        return self._score_fn(question, answer, prediction)


def judge_score(judge: Judge, question: str, answer: str, prediction: str) -> float:
    """Call `judge` and check its result is a finite number, clamped to [0, 1]."""
    value = float(judge.judge(question, answer, prediction))
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"judge returned a non-finite score {value!r}")
    return min(1.0, max(0.0, value))


def require_judge(obj: object) -> Judge:
    """Validate a user-supplied judge object (raises TypeError with a clear message)."""
    if not isinstance(obj, Judge):
        raise TypeError("judge must have a method judge(question, answer, prediction) -> float")
    return obj
