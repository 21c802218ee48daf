"""GQA test-dev balanced, exact-match accuracy.

Official files read (GQA release, LLaVA layout `playground/data/eval/gqa/data`):

* `testdev_balanced_questions.json`: `{question_id: {"imageId", "question", "answer",
  "types": {"structural", "semantic", ...}, ...}}` (also looked up under `data/`);
* images `images/<imageId>.jpg` (or `data/images/`).

Evaluator followed: LLaVA `scripts/convert_gqa_for_eval.py` (prediction
`text.rstrip('.').lower()`) and the official GQA `eval.py` accuracy (prediction == gold
answer), with its binary/open split (open = structural type "query") and per structural /
semantic type accuracy. Surrounding whitespace of the prediction is also stripped.
"""

from __future__ import annotations

from typing import Any

from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, SHORT_ANSWER_PROMPT, Benchmark,
                                             EvalItem, Metrics, QuestionId, Scope, group_accuracy,
                                             in_scope, load_json, pct)


def gqa_normalize(text: str) -> str:
    """LLaVA's GQA prediction normalisation: strip, drop trailing periods, lower-case."""
    return text.strip().rstrip(".").lower()


class GQA(Benchmark):
    """GQA test-dev balanced split."""

    name = "gqa"
    LAYOUT = ("  testdev_balanced_questions.json   (or data/testdev_balanced_questions.json)\n"
              "  images/<imageId>.jpg              (or data/images/)")
    OPTIONS = {"question_file": "testdev_balanced_questions.json", "image_dir": None}
    default_max_new_tokens = 16

    def _questions(self) -> dict[str, dict[str, Any]]:
        name = self.options["question_file"]
        return load_json(self.find_file(name, f"data/{name}"))

    def _image_dir(self):
        if self.options["image_dir"]:
            return self.data_dir / self.options["image_dir"]
        for cand in ("images", "data/images"):
            if (self.data_dir / cand).is_dir():
                return self.data_dir / cand
        return self.data_dir / "images"

    def items(self) -> list[EvalItem]:
        image_dir = self._image_dir()
        return [EvalItem(question_id=qid,
                         prompt=f"{IMAGE_TOKEN}\n{q['question']}\n{SHORT_ANSWER_PROMPT}",
                         image_paths=[str(image_dir / f"{q['imageId']}.jpg")],
                         meta={"image_id": q["imageId"], "question": q["question"]})
                for qid, q in self._questions().items()]

    def question_ids(self) -> list[QuestionId]:
        return list(self._questions())

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        questions = {k: q for k, q in self._questions().items() if in_scope(k, scope)}
        correct, structural, semantic = [], [], []
        for qid, q in questions.items():
            correct.append(qid in answers and gqa_normalize(answers[qid]) == q["answer"])
            types = q.get("types") or {}
            structural.append(types.get("structural", "unknown"))
            semantic.append(types.get("semantic", "unknown"))
        kind = ["open" if s == "query" else "binary" for s in structural]
        return {"accuracy": pct(sum(correct), len(correct)),
                **group_accuracy(correct, kind),
                "per_structural_type": group_accuracy(correct, structural),
                "per_semantic_type": group_accuracy(correct, semantic),
                "num_questions": len(correct)}
