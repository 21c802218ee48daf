"""MMMU (validation): per-subject, per-discipline and overall accuracy.

Official files read, either layout:

* the Hugging Face release `MMMU/MMMU`: `<Subject>/validation-*.parquet` with columns `id`,
  `question`, `options` (a Python-list string), `answer`, `question_type`
  ("multiple-choice" | "open"), `image_1` ... `image_7` (`{"bytes", "path"}`); images are
  written once into the image cache dir (option `image_cache_dir`);
* a JSON layout: `validation.json` / `validation.jsonl` (option `json_file`) holding the same
  fields, with `image_k` a path relative to the data dir.

Prompt as MMMU's official LLaVA config (`configs/llava1.5.yaml`, used by Mini-Gemini) reads
after YAML parsing (its blank lines fold to one newline): multiple choice
`"{question}\\n(A) ...\\n(B) ...\\n\\nAnswer with the option's letter from the given choices
directly."` (each option line ends with a newline), open `"{question}\\nAnswer the question
using a single word or phrase."`; `prompt_suffix` replaces both instructions.
`image_mode="first"` (default, as MMMU's LLaVA runner) prepends one `<image>` for `image_1`;
`image_mode="all"` (lmms-eval style) turns every `<image k>` reference into an `<image>`
placeholder, with the images listed in reference order.

Evaluator followed: MMMU `eval/eval_utils.py` (`parse_multi_choice_response`,
`parse_open_response`, `eval_multi_choice`, `eval_open`; see `minigemini.eval.mmmu_parse`),
including its random-letter fallback for unparseable multiple-choice answers (seeded with 42,
option `random_fallback`). Missing answers are always wrong. Overall = micro average.

Answer files accepted (auto-detected): the native JSONL; the answers JSONL MGM's
`mgm/eval/MMMU/eval/run_llava.py` writes (`id`, `question_type`, `answer`, `response`,
`parsed_pred`): scored on its `parsed_pred` as MGM's `eval.py` does (no re-parsing, so its own
random fallback stands); and the MMMU repo's output JSON (`{id: prediction}`, as
`main_eval_only.py` reads it: a multiple-choice prediction is compared as is, an open one goes
through `parse_open_response`).
"""

from __future__ import annotations

import ast
import random
import re
from pathlib import Path
from typing import Any

from minigemini.eval.answer_files import RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, MC_LETTER_PROMPT, SHORT_ANSWER_PROMPT,
                                             Benchmark, EvalItem, Metrics, QuestionId, Scope,
                                             group_accuracy, in_scope, load_json, load_jsonl, pct)
from minigemini.eval.mmmu_parse import eval_open, parse_multi_choice_response, parse_open_response

DOMAINS = {
    "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Health and Medicine": ["Basic_Medical_Science", "Clinical_Medicine",
                            "Diagnostics_and_Laboratory_Medicine", "Pharmacy", "Public_Health"],
    "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
    "Tech and Engineering": ["Agriculture", "Architecture_and_Engineering", "Computer_Science",
                             "Electronics", "Energy_and_Power", "Materials",
                             "Mechanical_Engineering"],
}
SUBJECT_TO_DOMAIN = {s: d for d, subjects in DOMAINS.items() for s in subjects}
_IMAGE_REF = re.compile(r"<image (\d+)>")
MGM_FORMAT = ("MGM run_llava.py answers JSONL (id, question_type, answer, response, parsed_pred), "
              "scored on parsed_pred as MGM's eval.py")
OUTPUT_FORMAT = "MMMU output JSON {id: prediction} (main_eval_only.py / total_val_output.json)"


def _as_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if hasattr(value, "tolist"):
        return [str(v) for v in value.tolist()]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return [str(v) for v in ast.literal_eval(text)]
        except (ValueError, SyntaxError):
            pass
    return [text] if text else []


def subject_of(sample_id: str) -> str:
    """'validation_Art_Theory_12' -> 'Art_Theory'."""
    return "_".join(sample_id.split("_")[1:-1])


class MMMU(Benchmark):
    """MMMU validation split."""

    name = "mmmu"
    LAYOUT = ("  <Subject>/validation-00000-of-00001.parquet   (Hugging Face MMMU/MMMU), or\n"
              "  validation.json | validation.jsonl  (same fields; image_k = relative path)")
    OPTIONS = {"split": "validation", "json_file": None, "image_mode": "first",
               "random_fallback": True, "image_cache_dir": None}
    default_max_new_tokens = 128  # as MGM MMMU run_llava.py (model_utils.py)
    ANSWER_FORMATS = (MGM_FORMAT, OUTPUT_FORMAT)

    def _rows(self) -> list[dict[str, Any]]:
        if getattr(self, "_cached", None) is not None:
            return self._cached
        split = self.options["split"]
        names = [self.options["json_file"]] if self.options["json_file"] else [
            f"{split}.json", f"{split}.jsonl"]
        json_path = self.find_file(*names, required=False)
        if json_path is not None:
            data = load_jsonl(json_path) if json_path.suffix == ".jsonl" else load_json(json_path)
            rows = list(data.values()) if isinstance(data, dict) else list(data)
        else:
            files = sorted(self.data_dir.glob(f"*/{split}-*.parquet"))
            if not files:
                self.find_file(*names, f"<Subject>/{split}-00000-of-00001.parquet")
            import pandas as pd

            rows = [r for f in files for r in pd.read_parquet(f).to_dict(orient="records")]
        for r in rows:
            r["options"] = _as_list(r.get("options", []))
            r["subject"] = subject_of(str(r["id"]))
        self._cached = rows
        return rows

    def _prompt(self, row: dict[str, Any]) -> tuple[str, list[int]]:
        """Prompt text and the image numbers it refers to (in placeholder order)."""
        question = str(row["question"])
        if row["question_type"] == "multiple-choice":
            listing = "".join(f"({chr(65 + i)}) {opt}\n" for i, opt in enumerate(row["options"]))
            suffix = self.prompt_suffix if self.suffix_given else MC_LETTER_PROMPT
            text = f"{question}\n{listing}\n{suffix}" if suffix else f"{question}\n{listing}".rstrip("\n")
        else:
            suffix = self.prompt_suffix if self.suffix_given else SHORT_ANSWER_PROMPT
            text = f"{question}\n{suffix}" if suffix else question
        if self.options["image_mode"] == "all":
            refs = [int(k) for k in _IMAGE_REF.findall(text)]
            return _IMAGE_REF.sub(IMAGE_TOKEN, text), refs
        return (f"{IMAGE_TOKEN}\n{text}", [1]) if row.get("image_1") is not None else (text, [])

    def _image_path(self, row: dict[str, Any], k: int, cache: Path | None) -> str:
        value = row.get(f"image_{k}")
        if isinstance(value, dict):  # parquet: {"bytes": ..., "path": ...}
            suffix = Path(str(value.get("path") or "x.png")).suffix or ".png"
            path = cache / f"{row['id']}_image_{k}{suffix}"
            if not path.exists():
                path.write_bytes(value["bytes"])
            return str(path)
        return str(self.data_dir / str(value))

    def question_ids(self) -> list[QuestionId]:
        return [r["id"] for r in self._rows()]

    def items(self) -> list[EvalItem]:
        rows = self._rows()
        cache = self.image_cache_dir() if any(isinstance(r.get("image_1"), dict)
                                              for r in rows) else None
        out = []
        for r in rows:
            prompt, refs = self._prompt(r)
            out.append(EvalItem(question_id=r["id"], prompt=prompt,
                                image_paths=[self._image_path(r, k, cache) for k in refs],
                                meta={"subject": r["subject"],
                                      "question_type": r["question_type"]}))
        return out

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        if raw.kind == "jsonl" and raw.has_keys("id", "parsed_pred", "question_type"):
            out = build_answer_set(raw, ((n, r["id"], r.get("response", "")) for n, r in raw.rows), MGM_FORMAT)
            out.extras = {str(r["id"]): {"parsed_pred": r["parsed_pred"]} for _, r in raw.rows}
            return out
        doc = raw.document
        if raw.kind != "json" or not isinstance(doc, dict) or not doc or \
                not all(isinstance(v, str) for v in doc.values()):
            return None
        out = build_answer_set(raw, ((0, k, v) for k, v in doc.items()), OUTPUT_FORMAT)
        out.extras = {str(k): {"prediction_as_is": True} for k in doc}
        return out

    def _correct(self, row: dict[str, Any], response: str, rng: random.Random | None) -> tuple[bool, bool]:
        """(correct, unparsed) for one answer, following the format it came in (see the module doc)."""
        extra = self.answer_extras.get(str(row["id"]), {})
        if row["question_type"] != "multiple-choice":
            gold = _as_list(row["answer"])
            preds = extra["parsed_pred"] if "parsed_pred" in extra else parse_open_response(response)
            return eval_open(gold if len(gold) != 1 else gold[0], preds), False
        gold = _as_list(row["answer"]) if str(row["answer"]).startswith("[") else row["answer"]
        unparsed = False
        if "parsed_pred" in extra:
            pred = extra["parsed_pred"]
        elif extra.get("prediction_as_is"):
            pred = response
        else:
            letters = [chr(65 + i) for i in range(len(row["options"]))]
            pred = parse_multi_choice_response(response, letters, dict(zip(letters, row["options"])), None)
            if pred is None:
                unparsed = True
                pred = rng.choice(letters) if rng is not None and letters else None
        return (pred in gold if isinstance(gold, list) else pred == gold), unparsed

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        rng = random.Random(42) if self.options["random_fallback"] else None
        rows, correct, unparsed = [r for r in self._rows() if in_scope(r["id"], scope)], [], 0
        for r in rows:
            ok, failed = self._correct(r, answers[r["id"]], rng) if r["id"] in answers else (False, False)
            correct.append(ok)
            unparsed += failed
        subjects = [r["subject"] for r in rows]
        domains = [SUBJECT_TO_DOMAIN.get(s, "Other") for s in subjects]
        return {"accuracy": pct(sum(correct), len(correct)),
                "per_domain": group_accuracy(correct, domains),
                "per_subject": group_accuracy(correct, subjects),
                "num_questions": len(rows), "num_unparsed_multiple_choice": unparsed}
