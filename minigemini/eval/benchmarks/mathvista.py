"""MathVista testmini: answer extraction + normalisation + exact comparison.

Official files read, either layout:

* the GitHub release `testmini.json` (also `data/testmini.json`): `{pid: {question, image
  ("images/<pid>.jpg"), choices, unit, precision, answer, question_type ("multi_choice" |
  "free_form"), answer_type ("text" | "integer" | "float" | "list"), query, metadata}}`,
  images relative to the data dir;
* the Hugging Face release `AI4Math/MathVista`: `data/testmini-*.parquet` (same fields plus
  `decoded_image` bytes, written once into the image cache dir).

Prompt: `<image>\\n` + the zero-shot query (hint + question + choices) rebuilt as MGM's
`model_math_vista.py` (`create_one_query`, = MathVista's `build_query.py` zero-shot) does, which
ignores the data's `query` field; option `query="data"` uses that field instead (when present).

Evaluator followed: MathVista `evaluation/extract_answer.py` + `calculate_score.py`. The rule
steps of `extract_answer` run first (response equal to a choice, int()/float() of the whole
response, `The answer is "..."`); upstream then asks GPT-4. Without a judge that last step is
replaced by rules (a leading/declared option letter for multiple choice, the last number for
integer/float, the last [...] for lists). With `judge=` an `extract()`-capable judge takes the
GPT-4 role; a plain `judge()` judge scores correctness directly. `normalize_extracted_answer`
(letter -> choice text, else most similar choice by edit distance; int / float rounded to
`precision` / str(list)) and `safe_equal` are reproduced. Reported: accuracy, per question
type / answer type and per metadata field (language, source, category, task, context, grade,
skills).

Answer files accepted (auto-detected): the native JSONL; the answers JSONL MGM's
`model_math_vista.py` writes (one problem per line with `pid`, `query`, `response`); and the
JSON document `{pid: {..., "response": ..., "extraction": ...}}` that MathVista's
`extract_answer.py` writes (MGM's script writes it over the same `.jsonl` path). Where a line
has an `extraction` (the GPT-4 step done), it is scored as `calculate_score.py` does:
`normalize_extracted_answer(extraction)` == answer, with no extraction of our own.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from minigemini.eval.answer_files import RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, Benchmark, EvalItem, Metrics,
                                             QuestionId, Scope, in_scope, load_json, pct)
from minigemini.eval.judge import AnswerExtractor, judge_score, require_judge

META_KEYS = ("language", "source", "category", "task", "context", "grade", "skills")
MGM_FORMAT = "MGM model_math_vista.py answers JSONL (pid, query, response[, extraction]) per line"
EXTRACTED_FORMAT = 'MathVista extract_answer.py output JSON {pid: {..., "response": ..., "extraction": ...}}'
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insert/delete/substitute, unit costs)."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def quick_extract(response: str, problem: dict[str, Any]) -> str | None:
    """The rule steps of upstream `extract_answer`; None where upstream would ask GPT-4."""
    choices, atype = problem.get("choices") or [], problem["answer_type"]
    if not response:
        return ""
    if problem["question_type"] == "multi_choice" and response in choices:
        return response
    if atype == "integer":
        try:
            return str(int(response))
        except ValueError:
            pass
    if atype == "float":
        try:
            return str(float(response))
        except ValueError:
            pass
    quoted = re.search(r'The answer is "(.*)"\.', response)
    return quoted.group(1) if quoted else None


def rule_fallback(response: str, problem: dict[str, Any]) -> str:
    """Rule stand-in for the GPT-4 extraction: option letter, last number or last list."""
    text, atype = response.strip(), problem["answer_type"]
    if problem["question_type"] == "multi_choice":
        letters = "".join(chr(65 + i) for i in range(len(problem.get("choices") or [])))
        if not letters:
            return text
        m = (re.match(rf"^\(?([{letters}])\)?(?:[.:)]|\s|$)", text) or
             re.search(rf"(?:answer|option) is:?\s*\(?([{letters}])\b\)?", text, re.I))
        return m.group(1) if m else text
    if atype in ("integer", "float"):
        nums = _NUMBER.findall(text)
        return nums[-1].replace(",", "") if nums else text
    if atype == "list":
        lists = re.findall(r"\[[^\[\]]*\]", text)
        return lists[-1] if lists else text
    return text


def rule_extract(response: str, problem: dict[str, Any]) -> str:
    """Judge-free `extract_answer`: upstream's quick rules, then `rule_fallback`."""
    quick = quick_extract(response, problem)
    return quick if quick is not None else rule_fallback(response, problem)


def normalize_extracted_answer(extraction: Any, problem: dict[str, Any]) -> str | None:
    """MathVista `normalize_extracted_answer`: map to a choice / int / rounded float / str."""
    choices, qtype, atype = problem.get("choices") or [], problem["question_type"], \
        problem["answer_type"]
    if qtype == "multi_choice":
        extraction = str(extraction).strip() if extraction is not None else ""
        letter = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letter:
            extraction = letter[0].upper()
        options = [chr(65 + i) for i in range(len(choices))]
        if extraction in options:
            return str(choices[options.index(extraction)])
        dists = [edit_distance(extraction, str(c)) for c in choices]
        return str(choices[dists.index(min(dists))]) if choices else None
    try:
        if atype == "integer":
            return str(int(float(extraction)))
        if atype == "float":
            return str(round(float(extraction), int(problem.get("precision") or 0)))
        if atype == "list":
            return str(extraction)
    except (TypeError, ValueError):
        return None
    return extraction


class MathVista(Benchmark):
    """MathVista testmini."""

    name = "mathvista"
    LAYOUT = ("  testmini.json (or data/testmini.json) + images/<pid>.jpg, or\n"
              "  data/testmini-*.parquet   (Hugging Face AI4Math/MathVista)")
    OPTIONS = {"split": "testmini", "judge": None, "image_cache_dir": None, "query": "mgm"}
    default_max_new_tokens = 1024  # as MGM model_math_vista.py
    ANSWER_FORMATS = (MGM_FORMAT, EXTRACTED_FORMAT)

    def _problems(self) -> list[dict[str, Any]]:
        if getattr(self, "_cached", None) is not None:
            return self._cached
        split = self.options["split"]
        path = self.find_file(f"{split}.json", f"data/{split}.json", required=False)
        if path is not None:
            data = load_json(path)
            rows = [dict(v, pid=str(v.get("pid", k))) for k, v in data.items()] \
                if isinstance(data, dict) else list(data)
        else:
            files = sorted(self.data_dir.glob(f"data/{split}-*.parquet")) + sorted(
                self.data_dir.glob(f"{split}-*.parquet"))
            if not files:
                self.find_file(f"{split}.json", f"data/{split}-<shard>.parquet")
            import pandas as pd

            rows = [r for f in files for r in pd.read_parquet(f).to_dict(orient="records")]
        for r in rows:
            r["pid"] = str(r["pid"])
            choices = r.get("choices")
            r["choices"] = [str(c) for c in choices] if choices is not None and len(
                choices) else []
            prec = r.get("precision")
            r["precision"] = None if prec is None or (isinstance(prec, float) and
                                                      math.isnan(prec)) else int(prec)
            r["metadata"] = dict(r.get("metadata") or {})
        self._cached = rows
        return rows

    @staticmethod
    def build_query(p: dict[str, Any]) -> str:
        """Zero-shot query as build_query.py (used when the data has no `query` field)."""
        if p["question_type"] == "multi_choice":
            hint = ("Hint: Please answer the question and provide the correct option letter, "
                    "e.g., A, B, C, D, at the end.")
        elif p["answer_type"] == "integer":
            hint = ("Hint: Please answer the question requiring an integer answer and provide "
                    "the final value, e.g., 1, 2, 3, at the end.")
        elif p["answer_type"] == "float" and p.get("precision") == 1:
            hint = ("Hint: Please answer the question requiring a floating-point number with "
                    "one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end.")
        elif p["answer_type"] == "float":
            hint = ("Hint: Please answer the question requiring a floating-point number with "
                    "two decimal places and provide the final value, e.g., 1.23, 1.34, 1.45, at "
                    "the end.")
        else:
            hint = ("Hint: Please answer the question requiring a Python list as an answer and "
                    "provide the final list, e.g., [1, 2, 3], [1.2, 1.3, 1.4], at the end.")
        question = f"Question: {p['question']}" + (f" (Unit: {p['unit']})" if p.get("unit") else "")
        parts = [hint, question]
        if p["choices"]:
            parts.append("\n".join(["Choices:"] + [f"({chr(65 + i)}) {c}"
                                                   for i, c in enumerate(p["choices"])]))
        return "\n".join(parts)

    def _query(self, p: dict[str, Any]) -> str:
        if self.options["query"] not in ("mgm", "data"):
            raise ValueError(f"mathvista: option query must be 'mgm' or 'data', got {self.options['query']!r}")
        return (self.options["query"] == "data" and p.get("query")) or self.build_query(p)

    def items(self) -> list[EvalItem]:
        out, cache = [], None
        for p in self._problems():
            img = p.get("decoded_image")
            if isinstance(img, dict) and img.get("bytes"):
                cache = cache or self.image_cache_dir()
                path = cache / f"{p['pid']}{Path(str(p.get('image') or 'x.png')).suffix}"
                if not path.exists():
                    path.write_bytes(img["bytes"])
            else:
                path = self.data_dir / str(p.get("image") or f"images/{p['pid']}.jpg")
            query = self._query(p)
            out.append(EvalItem(question_id=p["pid"], prompt=f"{IMAGE_TOKEN}\n{self.ask(query)}",
                                image_paths=[str(path)],
                                meta={"question_type": p["question_type"],
                                      "answer_type": p["answer_type"]}))
        return out

    def question_ids(self) -> list[QuestionId]:
        return [p["pid"] for p in self._problems()]

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        if raw.kind == "jsonl" and raw.has_keys("pid", "response"):
            rows = [(n, r["pid"], r) for n, r in raw.rows]
            fmt = MGM_FORMAT
        elif raw.kind == "json" and isinstance(raw.document, dict) and raw.document and all(
                isinstance(v, dict) and "response" in v for v in raw.document.values()):
            rows = [(0, pid, r) for pid, r in raw.document.items()]
            fmt = EXTRACTED_FORMAT
        else:
            return None
        out = build_answer_set(raw, ((n, pid, r["response"]) for n, pid, r in rows), fmt)
        out.extras = {str(pid): {"extraction": r["extraction"]} for _, pid, r in rows if "extraction" in r}
        return out

    def _correct(self, p: dict[str, Any], response: str, judge: Any) -> bool:
        extra = self.answer_extras.get(str(p["pid"]), {})
        if "extraction" in extra:  # extract_answer.py already ran: calculate_score.py alone
            return normalize_extracted_answer(extra["extraction"], p) == str(p["answer"])
        query = self._query(p)
        if judge is not None and not isinstance(judge, AnswerExtractor):
            return judge_score(judge, query, str(p["answer"]), response) >= 0.5
        if judge is None:
            extraction = rule_extract(response, p)
        else:
            quick = quick_extract(response, p)
            extraction = quick if quick is not None else judge.extract(query, response)  # upstream GPT-4
        return normalize_extracted_answer(extraction, p) == str(p["answer"])

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        judge = self.options["judge"]
        if judge is not None:
            require_judge(judge)
        problems = [p for p in self._problems() if in_scope(p["pid"], scope)]
        correct = [p["pid"] in answers and self._correct(p, answers[p["pid"]], judge)
                   for p in problems]
        out: Metrics = {"accuracy": pct(sum(correct), len(correct)),
                        "extraction": "rules" if judge is None else "judge"}
        keyed = {"question_type": [p["question_type"] for p in problems],
                 "answer_type": [p["answer_type"] for p in problems]}
        for key in META_KEYS:
            keyed[key] = [p["metadata"].get(key) for p in problems]
        for key, values in keyed.items():
            groups: dict[str, list[bool]] = {}
            for ok, val in zip(correct, values):
                for v in (list(val) if key == "skills" and val is not None else [val]):
                    if v is not None:
                        groups.setdefault(str(v), []).append(ok)
            if groups:
                out[f"per_{key}"] = {k: pct(sum(v), len(v)) for k, v in sorted(groups.items())}
        out["num_questions"] = len(problems)
        return out
