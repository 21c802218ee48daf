"""VQAv2-style open-ended VQA (COCO val2014 annotations; test-dev gets a submission file).

Official files read (VQA v2 release):

* `v2_OpenEnded_mscoco_val2014_questions.json` (`questions[*]`: `question_id`, `image_id`,
  `question`), or LLaVA's `llava_vqav2_mscoco_test-dev2015.jsonl` (`question_id`, `image`,
  `text`) via the `question_file` option;
* `v2_mscoco_val2014_annotations.json` (`annotations[*]`: `question_id`, `answers[*].answer`,
  `answer_type`); absent for test-dev: scoring then only writes the submission file;
* images `val2014/COCO_val2014_<image_id:012d>.jpg` (option `image_dir`, `image_prefix`).

Evaluator followed: LLaVA `scripts/convert_vqav2_for_submission.py` (prediction run through the
EvalAI answer processor) then the official `vqaEval.py` accuracy (leave-one-annotator-out
min(#matches/3, 1); punctuation/digit/article processing when annotators disagree), reported
overall and per `answer_type`. The submission is the official `[{"question_id", "answer"}]`.

Answer files accepted: the native / LLaVA `model_vqa_loader.py` answers JSONL, and the upload
file `convert_vqav2_for_submission.py` writes (a JSON list of `{"question_id", "answer"}`; its
answers are already processed, processing them again changes nothing).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from minigemini.eval.answer_files import RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, SHORT_ANSWER_PROMPT, Benchmark,
                                             EvalItem, Metrics, QuestionId, Scope, in_scope,
                                             load_json, load_jsonl, pct)
from minigemini.eval.vqa_normalize import normalize_answer, vqav2_accuracy

SUBMISSION_FORMAT = ('convert_vqav2_for_submission.py upload JSON: [{"question_id": ..., "answer": ...}, ...]')


class VQAv2(Benchmark):
    """VQAv2 val-style scoring with the official VQA accuracy."""

    name = "vqav2"
    LAYOUT = ("  v2_OpenEnded_mscoco_val2014_questions.json  (or a LLaVA .jsonl question file)\n"
              "  v2_mscoco_val2014_annotations.json          (needed for a local score)\n"
              "  val2014/COCO_val2014_<image_id:012d>.jpg")
    OPTIONS = {"question_file": "v2_OpenEnded_mscoco_val2014_questions.json",
               "annotation_file": "v2_mscoco_val2014_annotations.json",
               "image_dir": "val2014", "image_prefix": "COCO_val2014_"}
    default_max_new_tokens = 128  # as MGM/LLaVA model_vqa_loader.py
    DEFAULT_PROMPT_SUFFIX = SHORT_ANSWER_PROMPT
    ANSWER_FORMATS = (SUBMISSION_FORMAT,)

    def _questions(self) -> list[dict[str, Any]]:
        path = self.find_file(self.options["question_file"])
        if path.suffix == ".jsonl":
            return [{"question_id": r["question_id"], "image": r.get("image"),
                     "question": r["text"].split("\n")[0]} for r in load_jsonl(path)]
        return list(load_json(path)["questions"])

    def _annotations(self) -> dict[QuestionId, dict[str, Any]] | None:
        path = self.find_file(self.options["annotation_file"], required=False)
        if path is None:
            return None
        return {a["question_id"]: a for a in load_json(path)["annotations"]}

    def items(self) -> list[EvalItem]:
        image_dir = self.data_dir / self.options["image_dir"]
        out = []
        for q in self._questions():
            image = q.get("image") or f"{self.options['image_prefix']}{int(q['image_id']):012d}.jpg"
            out.append(EvalItem(
                question_id=q["question_id"],
                prompt=f"{IMAGE_TOKEN}\n{self.ask(q['question'])}",
                image_paths=[str(image_dir / image)],
                meta={"image_id": q.get("image_id"), "question": q["question"]}))
        return out

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        if raw.kind != "json" or not raw.has_keys("question_id", "answer"):
            return None
        return build_answer_set(raw, ((0, r["question_id"], r["answer"]) for _, r in raw.rows), SUBMISSION_FORMAT)

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        anns = self._annotations()
        ids = [q for q in self.question_ids() if in_scope(q, scope)]
        if anns is None:
            return {"status": "no ground truth (test split): submit the submission file to the "
                              "official EvalAI server", "num_questions": len(ids)}
        accs, types = [], []
        for qid in ids:
            ann = anns[qid]
            gts = [a["answer"] for a in ann["answers"]]
            accs.append(vqav2_accuracy(normalize_answer(answers[qid]), gts)
                        if qid in answers else 0.0)
            types.append(ann.get("answer_type", "other"))
        per_type: dict[str, list[float]] = {}
        for acc, t in zip(accs, types):
            per_type.setdefault(t, []).append(acc)
        return {"accuracy": pct(sum(accs), len(accs)),
                "per_answer_type": {t: pct(sum(v), len(v)) for t, v in sorted(per_type.items())},
                "num_questions": len(ids)}

    def write_submission(self, answers: dict[QuestionId, str], out_dir: Path) -> list[Path]:
        """Official result file: [{"question_id": int, "answer": processed text}, ...]."""
        rows = [{"question_id": qid, "answer": normalize_answer(answers.get(qid, ""))}
                for qid in self.question_ids()]
        path = Path(out_dir) / "vqav2_submission.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
        return [path]

