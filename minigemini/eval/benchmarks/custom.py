"""`--benchmark custom`: your own image-question-answer set, scored with a metric you choose.

`--data-dir` is the data file itself (or a folder holding exactly one `.jsonl` / `.csv`):

* JSONL: one object per line, `{"image": "img/1.jpg", "question": "...", "answer": "..."}`;
  `answers` (a list) instead of `answer`; optional `id` (default: the line number), `choices`
  (a list; required by `multiple_choice`), `category` (per-category scores). `image` may be a
  list (several images).
* CSV: a header with the same column names; `answers` / `choices` hold a JSON list or
  `|`-separated values.

Image paths are relative to the data file's folder (option `image_folder` to change it). Any
other key/column, an empty question or answer, a missing image file or a duplicated id is an
error naming the file and line, raised by `check()` before any model is loaded.

Metrics (option `metric`, CLI `--metric`), each in percent:

* `exact_match`: prediction == an answer after lower-casing, trimming whitespace and trailing
  periods and collapsing inner whitespace;
* `vqa_accuracy`: VQA's accuracy min(1, #answers equal to the prediction / 3), both sides through
  the EvalAI answer processing (the official VQAv2/TextVQA evaluators also average this over the
  10 leave-one-annotator-out subsets; with one answer per question a right answer scores 1/3);
* `anls`: DocVQA's average normalised Levenshtein similarity (1 - distance / longer length,
  0 when that is 0.5 or more; best over the answers; lower-cased, whitespace collapsed);
* `multiple_choice`: the option letter read from the prediction as VLMEvalKit's `can_infer`
  does (see `mmbench.infer_option`) equals the answer (a letter, or an option's text).

Prompt: one `<image>` line per image, the question, for `multiple_choice` the options as
`A. text` lines, then the prompt suffix (default: MGM's short-answer instruction, or the
option-letter instruction for `multiple_choice`).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, MC_LETTER_PROMPT, SHORT_ANSWER_PROMPT,
                                             Benchmark, BenchmarkDataError, EvalItem, Metrics,
                                             QuestionId, Scope, in_scope, pct)
from minigemini.eval.benchmarks.mathvista import edit_distance
from minigemini.eval.benchmarks.mmbench import infer_option
from minigemini.eval.vqa_normalize import normalize_answer

METRICS = ("exact_match", "vqa_accuracy", "anls", "multiple_choice")
KEYS = ("id", "image", "question", "answer", "answers", "choices", "category")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _collapse(text: str) -> str:
    return " ".join(text.strip().lower().split())


def exact_match(prediction: str, answers: list[str]) -> float:
    """1.0 when the prediction equals an answer (case, whitespace, trailing periods ignored)."""
    norm = lambda s: _collapse(s).rstrip(".").strip()  # noqa: E731
    return float(norm(prediction) in {norm(a) for a in answers})


def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """min(1, #answers equal to the prediction / 3), EvalAI-normalised."""
    pred = normalize_answer(prediction)
    return min(1.0, sum(normalize_answer(a) == pred for a in answers) / 3)


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """Normalised Levenshtein similarity to the closest answer, 0 below the threshold."""
    best, pred = 0.0, _collapse(prediction)
    for answer in answers:
        gold = _collapse(answer)
        longest = max(len(pred), len(gold))
        distance = edit_distance(pred, gold) / longest if longest else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def _listed(value: Any) -> list[str]:
    """A JSONL list or a CSV cell holding a JSON list / `|`-separated values."""
    if isinstance(value, list):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("["):
        try:
            return [str(v) for v in json.loads(text)]
        except json.JSONDecodeError:
            pass
    return [part.strip() for part in text.split("|")] if text else []


class Custom(Benchmark):
    """A user's own JSONL/CSV benchmark."""

    name = "custom"
    LAYOUT = ("  a .jsonl or .csv file (give it as --data-dir, or a folder holding exactly one), rows with\n"
              "  image, question, answer (or answers); optional id, choices, category")
    OPTIONS = {"metric": "exact_match", "image_folder": None}
    default_max_new_tokens = 32

    def __init__(self, data_dir: str | Path, prompt_suffix: str | None = None, **options: Any) -> None:
        self.data_file = self._find_data_file(Path(data_dir).expanduser().resolve())
        super().__init__(self.data_file.parent, prompt_suffix, **options)
        if self.options["metric"] not in METRICS:
            raise ValueError(f"custom: unknown metric {self.options['metric']!r}; choose one of {', '.join(METRICS)}")
        if prompt_suffix is None:
            self.prompt_suffix = MC_LETTER_PROMPT if self.options["metric"] == "multiple_choice" \
                else SHORT_ANSWER_PROMPT
        self._rows: list[dict[str, Any]] | None = None

    @staticmethod
    def _find_data_file(path: Path) -> Path:
        if path.is_file():
            if path.suffix.lower() not in (".jsonl", ".csv"):
                raise BenchmarkDataError(f"custom: {path} must be a .jsonl or .csv file")
            return path
        if not path.is_dir():
            raise BenchmarkDataError(f"custom: {path} does not exist; give a .jsonl or .csv file as --data-dir")
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".csv"))
        if len(found) != 1:
            raise BenchmarkDataError(f"custom: {path} holds {len(found)} .jsonl/.csv files; give the data file "
                                     "itself as --data-dir")
        return found[0]

    def _raw_rows(self) -> list[tuple[int, Any]]:
        path = self.data_file
        if path.suffix.lower() == ".csv":
            with open(path, encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                return [(reader.line_num, dict(row)) for row in reader]
        out = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    out.append((lineno, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise BenchmarkDataError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        return out

    def _parse(self, lineno: int, rec: Any) -> dict[str, Any]:
        """One validated row; BenchmarkDataError naming file:line otherwise."""
        where = f"{self.data_file}:{lineno}"
        if not isinstance(rec, dict):
            raise BenchmarkDataError(f"{where}: expected an object with image, question, answer")
        unknown = sorted(set(rec) - set(KEYS))
        if unknown:
            raise BenchmarkDataError(f"{where}: unknown column(s) {unknown}; known: {', '.join(KEYS)}")
        for key in ("image", "question"):
            if not rec.get(key) or not str(rec[key]).strip():
                raise BenchmarkDataError(f"{where}: missing or empty {key!r}")
        answers = _listed(rec["answers"]) if rec.get("answers") not in (None, "") else \
            ([str(rec["answer"])] if rec.get("answer") not in (None, "") else [])
        answers = [a for a in answers if a.strip()]
        if not answers:
            raise BenchmarkDataError(f"{where}: no answer (give 'answer' or a non-empty 'answers')")
        images = rec["image"] if isinstance(rec["image"], list) else [rec["image"]]
        folder = Path(self.options["image_folder"]) if self.options["image_folder"] else self.data_file.parent
        paths = [folder / str(im) for im in images]
        for p in paths:
            if not p.is_file():
                raise BenchmarkDataError(f"{where}: image file {p} does not exist")
        choices = _listed(rec["choices"]) if rec.get("choices") not in (None, "") else []
        if self.options["metric"] == "multiple_choice":
            answers = [self._gold_letter(where, choices, answers[0])]
        qid = rec.get("id") if rec.get("id") not in (None, "") else lineno
        return {"id": qid, "images": [str(p) for p in paths], "question": str(rec["question"]).strip(),
                "answers": answers, "choices": choices, "category": rec.get("category") or None}

    @staticmethod
    def _gold_letter(where: str, choices: list[str], answer: str) -> str:
        if not choices:
            raise BenchmarkDataError(f"{where}: metric multiple_choice needs 'choices'")
        letters = LETTERS[:len(choices)]
        if answer.strip() in letters:
            return answer.strip()
        if answer in choices:
            return letters[choices.index(answer)]
        raise BenchmarkDataError(f"{where}: answer {answer!r} is neither an option letter ({letters}) nor an option")

    def rows(self) -> list[dict[str, Any]]:
        """Every row, validated (cached)."""
        if self._rows is None:
            rows = [self._parse(n, rec) for n, rec in self._raw_rows()]
            if not rows:
                raise BenchmarkDataError(f"{self.data_file}: no questions")
            seen: set[str] = set()
            for r in rows:
                if str(r["id"]) in seen:
                    raise BenchmarkDataError(f"{self.data_file}: id {r['id']!r} is used twice")
                seen.add(str(r["id"]))
            self._rows = rows
        return self._rows

    def check(self) -> None:
        self.rows()

    def question_ids(self) -> list[QuestionId]:
        return [r["id"] for r in self.rows()]

    def items(self) -> list[EvalItem]:
        out = []
        for r in self.rows():
            text = r["question"]
            if IMAGE_TOKEN not in text:
                text = "".join(f"{IMAGE_TOKEN}\n" for _ in r["images"]) + text
            if self.options["metric"] == "multiple_choice":
                text += "".join(f"\n{LETTERS[i]}. {c}" for i, c in enumerate(r["choices"]))
            out.append(EvalItem(question_id=r["id"], prompt=self.ask(text), image_paths=r["images"],
                                meta={"category": r["category"]}))
        return out

    def _score_one(self, row: dict[str, Any], prediction: str) -> float:
        metric = self.options["metric"]
        if metric == "multiple_choice":
            choices = dict(zip(LETTERS, row["choices"]))
            return float(infer_option(prediction, choices) == row["answers"][0])
        return {"exact_match": exact_match, "vqa_accuracy": vqa_accuracy, "anls": anls}[metric](
            prediction, row["answers"])

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        rows = [r for r in self.rows() if in_scope(r["id"], scope)]
        values = [self._score_one(r, answers[r["id"]]) if r["id"] in answers else 0.0 for r in rows]
        metric = self.options["metric"]
        out: Metrics = {metric: pct(sum(values), len(values)), "metric": metric}
        if any(r["category"] for r in rows):
            totals: dict[str, list[float]] = {}
            for v, r in zip(values, rows):
                if r["category"]:  # rows without one are in the overall score only
                    totals.setdefault(str(r["category"]), []).append(v)
            out["per_category"] = {k: pct(sum(v), len(v)) for k, v in sorted(totals.items())}
        out["num_questions"] = len(rows)
        return out
