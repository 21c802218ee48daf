"""MME: per-subtask acc / acc+ and the perception (10 subtasks) and cognition (4) totals.

Official files read: the MME release, `MME_Benchmark_release_version/<subtask>/` (the data dir
may be that folder or its parent, as in LLaVA's `playground/data/eval/MME`). Each subtask is
either `images/<img>` + `questions_answers_YN/<stem>.txt` (artwork, celebrity, landmark,
posters, scene) or flat `<img>` + `<stem>.txt`; each txt holds the image's two
`question<TAB>yes|no` lines. LLaVA's `llava_mme.jsonl` is not needed: its prompts are rebuilt
(question without " Please answer yes or no." + the short-answer instruction; option
`prompt_style="original"` keeps the released question instead).

Evaluator followed: MME `eval_tool/calculation.py` (via LLaVA `convert_answer_to_mme.py`):
prediction lower-cased (not stripped); "yes"/"no" as is, else "yes"/"no" searched in its first
4 characters, else "other" (wrong). acc = correct questions / questions, acc+ = images with both questions
right / images, subtask score = 100 * (acc + acc+); totals are sums of subtask scores.
Images are paired by file (upstream pairs consecutive lines, which is the same grouping).
Question ids are `"<subtask>/<image file>#<line index>"`.

Answer files accepted (auto-detected): the native JSONL; the answers JSONL LLaVA/MGM
`model_vqa_loader.py` writes from `llava_mme.jsonl` (`question_id` = `<subtask>/[images/]<img>`,
shared by an image's two questions; paired by subtask, image and the question in `prompt`, as
`convert_answer_to_mme.py` does); and the folder `convert_answer_to_mme.py` writes for
`calculation.py --results_dir` (`<subtask>.txt`, lines `file<TAB>question<TAB>gt<TAB>prediction`).

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

from minigemini.eval.answer_files import AnswerFileError, RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, SHORT_ANSWER_PROMPT, Benchmark,
                                             BenchmarkDataError, EvalItem, Metrics, QuestionId,
                                             Scope, check_whole_groups, in_scope)

PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene",
              "landmark", "artwork", "OCR")
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation",
             "code_reasoning")
IMAGE_EXTS = (".jpg", ".png", ".jpeg", ".JPG", ".PNG")
_YES_NO_SUFFIX = re.compile(r"\s*Please answer yes or no\.\s*$")
LOADER_FORMAT = ("LLaVA/MGM model_vqa_loader.py answers JSONL from llava_mme.jsonl (question_id "
                 "'<subtask>/[images/]<img>', 'prompt', 'text')")
TXT_FORMAT = ("convert_answer_to_mme.py answers folder: <subtask>.txt files, lines "
              "'file<TAB>question<TAB>gt<TAB>prediction'")


def question_core(text: str) -> str:
    """A question without the instruction / " Please answer yes or no." (how the two file kinds are paired)."""
    text = text.replace(SHORT_ANSWER_PROMPT, "").strip()
    return _YES_NO_SUFFIX.sub("", text).strip()


def _stem(name: str) -> str:
    """File name up to its first dot (as convert_answer_to_mme.py names the answer txt)."""
    return name.split("/")[-1].split(".")[0]


def mme_parse(text: str) -> str:
    """MME answer parsing (`calculation.py`): 'yes', 'no' or 'other'."""
    text = text.lower()
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
    default_max_new_tokens = 128  # as MGM/LLaVA model_vqa_loader.py
    DEFAULT_PROMPT_SUFFIX = SHORT_ANSWER_PROMPT
    ANSWER_FORMATS = (LOADER_FORMAT, TXT_FORMAT)

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
        return f"{IMAGE_TOKEN}\n{self.ask(_YES_NO_SUFFIX.sub('', question))}"

    def _by_question(self) -> dict[tuple[str, str, str], QuestionId]:
        return {(r["task"], _stem(r["image"].name), question_core(r["question"])): r["question_id"]
                for r in self._records()}

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        if raw.kind == "dir":
            return self._read_txt_folder(raw)
        rows = raw.dict_rows()
        if raw.kind != "jsonl" or not rows or any("#" in str(r.get("question_id", "#")) or "/" not in
                                                  str(r["question_id"]) for _, r in rows):
            return None
        keyed, pairs = self._by_question(), []
        for lineno, r in rows:
            if "prompt" not in r or "text" not in r:
                raise AnswerFileError(f"{raw.path}:{lineno}: needs 'prompt' and 'text' ({LOADER_FORMAT})")
            qid = str(r["question_id"])
            key = (qid.split("/")[0], _stem(qid), question_core(str(r["prompt"])))
            if key not in keyed:
                raise AnswerFileError(f"{raw.path}:{lineno}: no MME question {key[2]!r} for {qid} in {self.data_dir}")
            pairs.append((lineno, keyed[key], r["text"]))
        return build_answer_set(raw, pairs, LOADER_FORMAT)

    def _read_txt_folder(self, raw: RawAnswers) -> AnswerSet:
        files = [raw.path / f"{t}.txt" for t in PERCEPTION + COGNITION if (raw.path / f"{t}.txt").is_file()]
        if not files:
            raise AnswerFileError(f"{raw.path}: a folder of answers must hold <subtask>.txt files ({TXT_FORMAT}); "
                                  f"none of {', '.join(PERCEPTION + COGNITION)} found")
        keyed, pairs = self._by_question(), []
        for path in files:
            for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) != 4:
                    raise AnswerFileError(f"{path}:{lineno}: expected 4 tab-separated fields ({TXT_FORMAT}), "
                                          f"found {len(fields)}")
                key = (path.stem, _stem(fields[0]), question_core(fields[1]))
                if key not in keyed:
                    raise AnswerFileError(f"{path}:{lineno}: no MME question {fields[1]!r} for {fields[0]} in "
                                          f"{self.data_dir}")
                pairs.append((lineno, keyed[key], fields[3]))
        return build_answer_set(raw, pairs, TXT_FORMAT)

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
