"""GQA test-dev balanced, exact-match accuracy.

Official files read (GQA release, LLaVA layout `playground/data/eval/gqa/data`):

* `testdev_balanced_questions.json`: `{question_id: {"imageId", "question", "answer",
  "types": {"structural", "semantic", ...}, ...}}` (also looked up under `data/`);
* images `images/<imageId>.jpg` (or `data/images/`).

Evaluator followed: LLaVA `scripts/convert_gqa_for_eval.py` (prediction
`text.rstrip('.').lower()`, nothing else: whitespace is kept, as upstream) and the official GQA
`eval.py --tier testdev_balanced` accuracy (prediction == gold answer) over the questions with
`isBalanced` true (all of them in `testdev_balanced_questions.json`; a questions file with
unbalanced ones, e.g. `testdev_all_questions.json` via `question_file=`, is filtered the same
way), with its binary/open split (open = structural type "query") and per structural / semantic
type accuracy.

Answer files accepted: the native / LLaVA `model_vqa_loader.py` answers JSONL, and
`testdev_balanced_predictions.json` as `convert_gqa_for_eval.py` writes it
(`[{"questionId", "prediction"}]`; normalising it again changes nothing).
"""

from __future__ import annotations

from typing import Any

from minigemini.eval.answer_files import RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, SHORT_ANSWER_PROMPT, Benchmark,
                                             EvalItem, Metrics, QuestionId, Scope, group_accuracy,
                                             in_scope, load_json, pct)


PREDICTIONS_FORMAT = ('convert_gqa_for_eval.py testdev_balanced_predictions.json: '
                      '[{"questionId": ..., "prediction": ...}, ...]')


def gqa_normalize(text: str) -> str:
    """LLaVA's GQA prediction normalisation: drop trailing periods, lower-case (no strip)."""
    return text.rstrip(".").lower()


class GQA(Benchmark):
    """GQA test-dev balanced split."""

    name = "gqa"
    LAYOUT = ("  testdev_balanced_questions.json   (or data/testdev_balanced_questions.json)\n"
              "  images/<imageId>.jpg              (or data/images/)")
    OPTIONS = {"question_file": "testdev_balanced_questions.json", "image_dir": None}
    default_max_new_tokens = 128  # as MGM/LLaVA model_vqa_loader.py
    DEFAULT_PROMPT_SUFFIX = SHORT_ANSWER_PROMPT
    ANSWER_FORMATS = (PREDICTIONS_FORMAT,)

    def _questions(self) -> dict[str, dict[str, Any]]:
        """The balanced questions (official eval.py scores only those with `isBalanced`)."""
        name = self.options["question_file"]
        data = load_json(self.find_file(name, f"data/{name}"))
        return {qid: q for qid, q in data.items() if q.get("isBalanced", True)}

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
                         prompt=f"{IMAGE_TOKEN}\n{self.ask(q['question'])}",
                         image_paths=[str(image_dir / f"{q['imageId']}.jpg")],
                         meta={"image_id": q["imageId"], "question": q["question"]})
                for qid, q in self._questions().items()]

    def question_ids(self) -> list[QuestionId]:
        return list(self._questions())

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        if raw.kind != "json" or not raw.has_keys("questionId", "prediction"):
            return None
        return build_answer_set(raw, ((0, r["questionId"], r["prediction"]) for _, r in raw.rows),
                                PREDICTIONS_FORMAT)

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
