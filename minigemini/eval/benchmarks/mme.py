"""MME: per-subtask acc / acc+ and the perception (10 subtasks) and cognition (4) totals.

Official files read: the MME release, `MME_Benchmark_release_version/<subtask>/` (the data dir
may be that folder or its parent, as in LLaVA's `playground/data/eval/MME`). Each subtask is
either `images/<img>` + `questions_answers_YN/<stem>.txt` (artwork, celebrity, landmark,
posters, scene) or flat `<img>` + `<stem>.txt`; each txt holds the image's two
`question<TAB>yes|no` lines. LLaVA's `llava_mme.jsonl` is not needed: its prompts are rebuilt
(question without " Please answer yes or no." + the short-answer instruction; option
`prompt_style="original"` keeps the released question instead).

Evaluator followed: MME `eval_tool/calculation.py` (via LLaVA `convert_answer_to_mme.py`):
prediction lower-cased; "yes"/"no" as is, else "yes"/"no" searched in its first 4 characters,
else "other" (wrong). acc = correct questions / questions, acc+ = images with both questions
right / images, subtask score = 100 * (acc + acc+); totals are sums of subtask scores.
Images are paired by file (upstream pairs consecutive lines, which is the same grouping).
Question ids are `"<subtask>/<image file>#<line index>"`.

Scoring a subset (`eval --limit`): acc+ needs both questions of an image, so only complete
images are scored (`question_groups()`; `minigemini.eval.score` drops an image with one
question answered and states how many it dropped). Subtasks with no complete image are left
out of the totals (listed in `subtasks_missing`), so a subset's totals are not comparable
with a full run's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, SHORT_ANSWER_PROMPT, Benchmark,
                                             BenchmarkDataError, EvalItem, Metrics, QuestionId,
                                             Scope, check_whole_groups, in_scope)

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
             "code_reasoning")
IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")
_YES_NO_SUFFIX = re.compile(r"\s*Please answer yes or no\.\s*$")


def mme_parse(text: str) -> str:
    """MME answer parsing: 'yes', 'no' or 'other'."""
    text = text.strip().lower()
    if text in ("yes", "no"):
        return text
    head = text[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def _image_groups(records: list[dict[str, Any]]) -> dict[QuestionId, str]:
    return {r["question_id"]: f"{r['task']}/{r['image'].name}" for r in records}


class MME(Benchmark):
    """MME perception + cognition yes/no benchmark."""

    name = "mme"
    LAYOUT = ("  MME_Benchmark_release_version/   (or point --data-dir at it directly)\n"
              "    <subtask>/images/<img> + <subtask>/questions_answers_YN/<stem>.txt, or\n"
              "    <subtask>/<img> + <subtask>/<stem>.txt   (each txt: 2 lines 'question\\tyes|no')\n"
              f"  subtasks: {', '.join(PERCEPTION + COGNITION)}")
    OPTIONS = {"prompt_style": "llava"}
    default_max_new_tokens = 16

    def _root(self) -> Path:
        nested = self.data_dir / "MME_Benchmark_release_version"
        root = nested if nested.is_dir() else self.data_dir
        if not any((root / t).is_dir() for t in PERCEPTION + COGNITION):
            raise BenchmarkDataError(
                f"{self.name}: no MME subtask folder found under {root}.\n"
                f"Expected layout under --data-dir:\n{self.LAYOUT}")
        return root

    def _records(self) -> list[dict[str, Any]]:
        """One record per question, grouped by subtask then image, in release order."""
        root, out = self._root(), []
        for task in PERCEPTION + COGNITION:
            tdir = root / task
            if not tdir.is_dir():
                continue
            if (tdir / "images").is_dir():
                img_dir, qa_dir = tdir / "images", tdir / "questions_answers_YN"
            else:
                img_dir = qa_dir = tdir
            for txt in sorted(qa_dir.glob("*.txt")):
                image = next((img_dir / (txt.stem + e) for e in IMAGE_EXTS
                              if (img_dir / (txt.stem + e)).exists()), None)
                if image is None:
                    raise BenchmarkDataError(f"{self.name}: no image for {txt} in {img_dir}")
                lines = [ln for ln in txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
                for k, line in enumerate(lines):
                    question, answer = line.split("\t")[:2]
                    out.append({"question_id": f"{task}/{image.name}#{k}", "task": task,
                                "image": image, "question": question.strip(),
                                "answer": answer.strip().lower()})
        return out

    def _prompt(self, question: str) -> str:
        if self.options["prompt_style"] == "original":
            return f"{IMAGE_TOKEN}\n{question}"
        return f"{IMAGE_TOKEN}\n{_YES_NO_SUFFIX.sub('', question)}\n{SHORT_ANSWER_PROMPT}"

    def items(self) -> list[EvalItem]:
        return [EvalItem(question_id=r["question_id"], prompt=self._prompt(r["question"]),
                         image_paths=[str(r["image"])],
                         meta={"subtask": r["task"], "question": r["question"]})
                for r in self._records()]

    def question_groups(self) -> dict[QuestionId, Any]:
        """Each question's image (`<subtask>/<image file>`): acc+ scores an image's two questions together."""
        return _image_groups(self._records())

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        records = self._records()
        check_whole_groups(self.name, _image_groups(records), scope)
        per_image: dict[str, dict[str, list[bool]]] = {}
        for r in records:
            if not in_scope(r["question_id"], scope):
                continue
            ok = r["question_id"] in answers and mme_parse(answers[r["question_id"]]) == r["answer"]
            per_image.setdefault(r["task"], {}).setdefault(str(r["image"]), []).append(ok)
        subtasks = {}
        for task, images in per_image.items():
            flat = [ok for oks in images.values() for ok in oks]
            acc = sum(flat) / len(flat)
            acc_plus = sum(all(oks) for oks in images.values()) / len(images)
            subtasks[task] = {"acc": 100 * acc, "acc_plus": 100 * acc_plus,
                              "score": 100 * (acc + acc_plus), "num_questions": len(flat),
                              "num_images": len(images)}
        out: Metrics = {
            "perception": sum((subtasks[t]["score"] for t in PERCEPTION if t in subtasks), 0.0),
            "cognition": sum((subtasks[t]["score"] for t in COGNITION if t in subtasks), 0.0),
            "per_subtask": subtasks,
            "num_questions": sum(s["num_questions"] for s in subtasks.values()),
        }
        missing = [t for t in PERCEPTION + COGNITION if t not in subtasks]
        if missing:
            out["subtasks_missing"] = missing
        return out
