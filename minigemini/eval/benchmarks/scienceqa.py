"""ScienceQA-IMG (test split, questions with an image).

Official files read (ScienceQA release, LLaVA layout `playground/data/eval/scienceqa`):

* `problems.json` (`{pid: {question, choices, answer (index), hint, image, subject, grade,
  ...}}`) and `pid_splits.json` (`{"test": [pid, ...], ...}`);
* or, when those are absent, LLaVA's `llava_test_CQM-A.json` (prompts + "The answer is X."
  targets; no subject/grade breakdown then);
* images `images/test/<pid>/image.png`.

Prompt as LLaVA (`convert_sqa_to_llava.py`, format CQM-A, + `model_vqa_science.py
--single-pred-prompt`): `<image>\\nContext: <hint or N/A>\\nQuestion: ...\\nOptions: (A) ...
(B) ...\\nAnswer with the option's letter from the given choices directly.`

Evaluator followed: LLaVA-1.5 `llava/eval/eval_science_qa.py`: the answer is the text itself
if it is an option letter, else its first letter when it starts with "X. ", else the single
match of `The answer is ([A-Z]).`; anything else (or a letter beyond the choices) is wrong.
Answer files accepted: the native / LLaVA-MGM `model_vqa_science.py` answers JSONL (question_id =
pid; the non-image questions it also answers are outside the IMG subset and not scored), and
the `--output-result` JSON of `eval_science_qa.py` (its `outputs`: pid -> answer text).
Reported: accuracy (IMG subset by default; option `image_only=False` for all test questions)
and accuracy per subject, per grade band (G1-6/G7-12) and per context (TXT/IMG/NO), as
ScienceQA reports them.
"""

from __future__ import annotations

import re
from typing import Any

from minigemini.eval.answer_files import RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, MC_LETTER_PROMPT, Benchmark,
                                             EvalItem, Metrics, QuestionId, Scope, group_accuracy,
                                             in_scope, load_json, pct)

OPTIONS = ("A", "B", "C", "D", "E")
_ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
RESULT_FORMAT = 'eval_science_qa.py --output-result JSON ({"acc": ..., "outputs": {pid: answer text}, ...})'


def sqa_parse(text: str) -> str | None:
    """LLaVA ScienceQA letter parsing; None when it fails."""
    if text in OPTIONS:
        return text
    if len(text) >= 3 and text[0] in OPTIONS and text[1:3] == ". ":
        return text[0]
    found = _ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else None


def cqm_prompt(problem: dict[str, Any]) -> str:
    """LLaVA's CQM-A input text for a ScienceQA problem (without image token/instruction)."""
    context = (problem.get("hint") or "").strip() or "N/A"
    choices = " ".join(f"({OPTIONS[i]}) {c}" for i, c in enumerate(problem["choices"]))
    text = f"Context: {context}\nQuestion: {problem['question']}\nOptions: {choices}\n"
    return text.replace("  ", " ").strip()


class ScienceQA(Benchmark):
    """ScienceQA test split, image questions by default."""

    name = "scienceqa"
    LAYOUT = ("  problems.json + pid_splits.json   (or LLaVA's llava_test_CQM-A.json)\n"
              "  images/test/<pid>/image.png")
    OPTIONS = {"split": "test", "image_only": True, "image_dir": "images/test",
               "llava_file": "llava_test_CQM-A.json"}
    default_max_new_tokens = 1024  # as MGM model_vqa_mmbench.py / model_vqa_science.py
    DEFAULT_PROMPT_SUFFIX = MC_LETTER_PROMPT
    ANSWER_FORMATS = (RESULT_FORMAT,)

    def _records(self) -> list[dict[str, Any]]:
        """pid, prompt text, image file (or None), gold index, breakdown keys."""
        problems_path = self.find_file("problems.json", required=False)
        if problems_path is None:
            return self._records_from_llava()
        problems = load_json(problems_path)
        pids = load_json(self.find_file("pid_splits.json"))[self.options["split"]]
        out = []
        for pid in pids:
            p = problems[pid]
            if self.options["image_only"] and not p.get("image"):
                continue
            grade = int(str(p.get("grade", "grade0")).replace("grade", "") or 0)
            out.append({"pid": pid, "text": cqm_prompt(p), "image": p.get("image"),
                        "answer": p["answer"], "n_choices": len(p["choices"]),
                        "subject": p.get("subject", "unknown"),
                        "grade": "G1-6" if grade <= 6 else "G7-12",
                        "has_text": bool((p.get("hint") or "").strip())})
        return out

    def _records_from_llava(self) -> list[dict[str, Any]]:
        rows = load_json(self.find_file(self.options["llava_file"], "problems.json"))
        out = []
        for row in rows:
            if self.options["image_only"] and "image" not in row:
                continue
            text = row["conversations"][0]["value"].replace(IMAGE_TOKEN, "").strip()
            target = sqa_parse(row["conversations"][1]["value"].strip())
            n_choices = len(re.findall(r"\([A-E]\) ", text.split("Options:")[-1]))
            out.append({"pid": row["id"], "text": text,
                        "image": row["image"].split("/")[-1] if "image" in row else None,
                        "answer": OPTIONS.index(target) if target else -1,
                        "n_choices": n_choices})
        return out

    def items(self) -> list[EvalItem]:
        image_dir = self.data_dir / self.options["image_dir"]
        out = []
        for r in self._records():
            prefix = f"{IMAGE_TOKEN}\n" if r["image"] else ""
            out.append(EvalItem(
                question_id=r["pid"], prompt=f"{prefix}{self.ask(r['text'])}",
                image_paths=[str(image_dir / r["pid"] / r["image"])] if r["image"] else [],
                meta={k: r[k] for k in ("subject", "grade") if k in r}))
        return out

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        doc = raw.document
        if raw.kind != "json" or not isinstance(doc, dict) or not isinstance(doc.get("outputs"), dict):
            return None
        return build_answer_set(raw, ((0, pid, text) for pid, text in doc["outputs"].items()), RESULT_FORMAT)

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        records = [r for r in self._records() if in_scope(r["pid"], scope)]
        correct = []
        for r in records:
            letter = sqa_parse(answers[r["pid"]]) if r["pid"] in answers else None
            idx = OPTIONS.index(letter) if letter in OPTIONS[:r["n_choices"]] else -1
            correct.append(idx == r["answer"])
        out: Metrics = {"accuracy": pct(sum(correct), len(correct))}
        if records and "subject" in records[0]:
            out["per_subject"] = group_accuracy(correct, [r["subject"] for r in records])
            out["per_grade"] = group_accuracy(correct, [r["grade"] for r in records])
            # ScienceQA's overlapping context groups: text context / image context / none.
            groups = {"TXT": lambda r: r["has_text"], "IMG": lambda r: bool(r["image"]),
                      "NO": lambda r: not r["has_text"] and not r["image"]}
            out["per_context"] = {}
            for name, member in groups.items():
                hits = [ok for ok, r in zip(correct, records) if member(r)]
                if hits:
                    out["per_context"][name] = pct(sum(hits), len(hits))
        out["num_questions"] = len(records)
        return out
