"""TextVQA (val) with the M4C/EvalAI VQA accuracy.

Official files read (LLaVA / Mini-Gemini layout, `playground/data/eval/textvqa`):

* `TextVQA_0.5.1_val.json`: the official annotations (`data[*]` with `question_id`,
  `image_id`, `question`, `answers` (10 annotator answers), `ocr_tokens`);
* `llava_textvqa_val_v051_ocr.jsonl` (optional, used for the prompts when present): LLaVA's
  question file, one `{"question_id": <image_id>, "image": ..., "text": "<Question>\\n
  Reference OCR token: ...\\nAnswer the question using a single word or phrase."}` per line;
* `train_images/<image_id>.jpg`.

Upstream evaluator followed: LLaVA `llava/eval/eval_textvqa.py` + `m4c_evaluator.py`
(`TextVQAAccuracyEvaluator`): prediction and the 10 answers go through the EvalAI answer
processor, the score is the mean over the 10 leave-one-out subsets of min(#matches/3, 1).
LLaVA's question file reuses the *image* id as `question_id` (several questions share it), so
items here use the annotation's unique `question_id`; LLaVA's pairing of a prompt to an
annotation by `(image_id, question.lower())` is reproduced when building the items.

Answer files accepted: the native JSONL (annotation question ids), and the answers JSONL that
MGM/LLaVA `model_vqa_loader.py` writes (`question_id` = image id, `prompt` = the question
file's text): each line is paired with its annotation exactly as `eval_textvqa.py` does, by
(image id, question read from the prompt by its `prompt_processor`).

Options: `ocr` (default True: keep the "Reference OCR token: ..." line Mini-Gemini uses),
`question_file`, `annotation_file`, `image_dir`.
"""

from __future__ import annotations

import re
from typing import Any

from minigemini.eval.answer_files import AnswerFileError, RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, SHORT_ANSWER_PROMPT, Benchmark,
                                             BenchmarkDataError, EvalItem, Metrics, QuestionId,
                                             Scope, in_scope, load_json, load_jsonl, pct)
from minigemini.eval.vqa_normalize import textvqa_accuracy

OCR_PREFIX = "Reference OCR token: "
LOADER_FORMAT = ("MGM/LLaVA model_vqa_loader.py answers JSONL: question_id = image id, 'prompt' = the "
                 "llava_textvqa_val_v051_ocr.jsonl text, 'text' = answer (paired as eval_textvqa.py)")


def prompt_question(prompt: str) -> str:
    """The question of a LLaVA TextVQA prompt, lower-cased: `eval_textvqa.py`'s `prompt_processor`."""
    lines = prompt.split("\n")
    if prompt.startswith("OCR tokens: "):
        found = re.search(r"Question: (.*?) Short answer:", prompt, re.DOTALL)
        if found:
            return found.group(1).lower()
    elif OCR_PREFIX in prompt and len(lines) == 3:
        return (lines[1] if prompt.startswith(OCR_PREFIX.strip()) else lines[0]).lower()
    elif len(lines) == 2:
        return lines[0].lower()
    raise ValueError(f"not a LLaVA TextVQA prompt (question, optional OCR line, instruction): {prompt!r}")


class TextVQA(Benchmark):
    """TextVQA validation set, VQA soft accuracy."""

    name = "textvqa"
    LAYOUT = ("  TextVQA_0.5.1_val.json\n"
              "  llava_textvqa_val_v051_ocr.jsonl   (optional; LLaVA prompts with OCR tokens)\n"
              "  train_images/<image_id>.jpg")
    OPTIONS = {"ocr": True, "question_file": "llava_textvqa_val_v051_ocr.jsonl",
               "annotation_file": "TextVQA_0.5.1_val.json", "image_dir": "train_images"}
    default_max_new_tokens = 128  # as MGM/LLaVA model_vqa_loader.py
    DEFAULT_PROMPT_SUFFIX = SHORT_ANSWER_PROMPT
    ANSWER_FORMATS = (LOADER_FORMAT,)

    def _annotations(self) -> list[dict[str, Any]]:
        data = load_json(self.find_file(self.options["annotation_file"]))
        if not isinstance(data, dict) or "data" not in data:
            raise BenchmarkDataError(f"{self.name}: annotation file has no 'data' list")
        return data["data"]

    def _prompt_text(self, ann: dict[str, Any], llava_text: str | None) -> str:
        if llava_text is not None:
            lines = llava_text.split("\n")
            if not self.options["ocr"]:
                lines = [ln for ln in lines if not ln.startswith(OCR_PREFIX)]
            if lines[-1] == SHORT_ANSWER_PROMPT:  # the question file's own instruction
                lines.pop()
            return self.ask("\n".join(lines))
        question = ann["question"].strip()
        parts = [question[:1].upper() + question[1:]]
        tokens = ann.get("ocr_tokens") or []
        if self.options["ocr"] and tokens:
            parts.append(OCR_PREFIX + ", ".join(tokens))
        return self.ask("\n".join(parts))

    def items(self) -> list[EvalItem]:
        anns = self._annotations()
        qfile = self.find_file(self.options["question_file"], required=False)
        image_dir = self.data_dir / self.options["image_dir"]
        by_key = {(str(a["image_id"]), a["question"].lower()): a for a in anns}
        if qfile is None:
            pairs = [(a, None, f"{a['image_id']}.jpg") for a in anns]
        else:
            pairs = []
            for row in load_jsonl(qfile):
                key = (str(row["question_id"]), prompt_question(row["text"]))
                if key not in by_key:
                    raise BenchmarkDataError(
                        f"{self.name}: question {key} of {qfile.name} not found in annotations")
                pairs.append((by_key[key], row["text"], row.get("image")
                              or f"{row['question_id']}.jpg"))
        out = []
        for ann, text, image in pairs:
            out.append(EvalItem(
                question_id=ann["question_id"],
                prompt=f"{IMAGE_TOKEN}\n{self._prompt_text(ann, text)}",
                image_paths=[str(image_dir / image)],
                meta={"image_id": ann["image_id"], "question": ann["question"]}))
        return out

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        rows = raw.dict_rows()
        anns = self._annotations()
        image_ids = {str(a["image_id"]) for a in anns}
        if raw.kind != "jsonl" or not rows or not all(str(r.get("question_id")) in image_ids for _, r in rows):
            return None
        by_key = {(str(a["image_id"]), a["question"].lower()): a["question_id"] for a in anns}
        pairs = []
        for lineno, r in rows:
            if "prompt" not in r or "text" not in r:
                raise AnswerFileError(f"{raw.path}:{lineno}: a line keyed by image id needs 'prompt' and 'text' "
                                      f"({LOADER_FORMAT})")
            try:
                key = (str(r["question_id"]), prompt_question(str(r["prompt"])))
            except ValueError as err:
                raise AnswerFileError(f"{raw.path}:{lineno}: {err}") from None
            if key not in by_key:
                raise AnswerFileError(f"{raw.path}:{lineno}: no TextVQA question {key[1]!r} for image {key[0]!r} "
                                      f"in {self.options['annotation_file']}")
            pairs.append((lineno, by_key[key], r["text"]))
        return build_answer_set(raw, pairs, LOADER_FORMAT)

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        gts = {a["question_id"]: a["answers"] for a in self._annotations()}
        ids = [q for q in self.question_ids() if in_scope(q, scope)]
        total = sum(textvqa_accuracy(answers[q], gts[q]) for q in ids if q in answers)
        return {"accuracy": pct(total, len(ids)), "num_questions": len(ids)}
