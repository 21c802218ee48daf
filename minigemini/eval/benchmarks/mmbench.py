"""MMBench (dev) with circular evaluation.

Official files read: an MMBench TSV, by default the single `mmbench_dev_*.tsv` in the data
dir (option `tsv` picks one), columns `index, question, hint, A, B, C, D, answer, category,
l2-category, image (base64), ...`. Circular copies of a question carry the same index modulo
1e6 (`index = base + k * 1e6`). Images are decoded once into an image cache dir (option
`image_cache_dir`; default `<data_dir>/_minigemini_images`, else a temp dir).

Prompt as LLaVA `model_vqa_mmbench.py` (single-prediction mode): `[hint\\n]question` then
`\\nA. ...` per option, then "Answer with the option's letter from the given choices directly."
(the Chinese instruction for `*_cn_*` TSVs, or option `lang`).

Evaluator followed: the official MMBench / VLMEvalKit `mcq_circular_eval` without an LLM
matcher ("exact matching"): the option is extracted with `can_infer` (a single option letter
among the answer's tokens, else a single option whose text appears in the answer); a base
question is correct only if every one of its circular copies is; an unextractable answer fails.
Reported: overall, per `category` and per `l2-category` accuracy over base questions.

An option cell is missing only when it is empty: an option whose text is "None"/"none" is a real
option when scoring, as in the official evaluator (the TSV is read without pandas' default NA
strings). The prompt drops it, as MGM/LLaVA `model_vqa_mmbench.py` (`is_none`) does.

Answer files accepted: the native / MGM-LLaVA `model_vqa_mmbench.py` answers JSONL (question_id =
TSV index; with `--all-rounds` several lines per index, the last one kept as
`convert_mmbench_for_submission.py` does), and the upload table that script writes (xlsx, or a
TSV, with `index` and `prediction` columns; an empty prediction is an unanswered question).

Questions are put to the model group by group (a question, then its circular copies, in TSV
order otherwise), so `eval --limit N` answers whole groups. Scoring a subset: a question is
judged on all its copies, so only complete groups are scored (`question_groups()`;
`minigemini.eval.score` drops a partly answered group and states how many it dropped).
The submission file (LLaVA `convert_mmbench_for_submission.py` columns) is written as TSV, and
as xlsx when openpyxl is installed.
"""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

from minigemini.eval.answer_files import RawAnswers, build_answer_set
from minigemini.eval.answers import AnswerSet
from minigemini.eval.benchmarks.base import (IMAGE_TOKEN, MC_LETTER_PROMPT, Benchmark,
                                             BenchmarkDataError, EvalItem, Metrics, QuestionId,
                                             Scope, check_whole_groups, group_accuracy, pct)

OPTION_LETTERS = ("A", "B", "C", "D")
CN_PROMPT = "请直接回答选项字母。"
UPLOAD_FORMAT = ("convert_mmbench_for_submission.py upload table (.xlsx, or .tsv) with 'index' and "
                 "'prediction' columns")
_REJECTIONS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
               "I'm sorry, but without the image provided", "Cannot determine the answer")


def is_empty(value: Any) -> bool:
    """True for a truly empty cell (None, NaN, ""): the official evaluator's missing option."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and value == ""


def is_none(value: Any) -> bool:
    """True for NaN / None / 'nan' / 'none' cells (LLaVA's `is_none`, used for the prompt only)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip().lower() in ("nan", "none")


def infer_option(answer: str, choices: dict[str, str]) -> str | None:
    """VLMEvalKit `can_infer`: option letter from free text, 'Z' for refusals, None if unsure."""
    answer = str(answer)
    if any(r in answer for r in _REJECTIONS):
        return "Z"
    cleaned = answer
    for ch in ".()[],:;!*#{}":
        cleaned = cleaned.replace(ch, " ")
    tokens = cleaned.split()
    hits = [c for c in choices if c in tokens]
    if len(hits) == 1:
        return hits[0]
    if not hits and ("Z" in tokens):
        return "Z"
    lower = answer.lower()
    text_hits = [c for c, text in choices.items() if str(text).lower() in lower]
    return text_hits[0] if len(text_hits) == 1 else None


class MMBench(Benchmark):
    """MMBench dev split, circular evaluation."""

    name = "mmbench"
    LAYOUT = ("  mmbench_dev_<date>.tsv   (e.g. mmbench_dev_20230712.tsv; pick one with tsv=...)\n"
              "      columns: index, question, hint, A, B, C, D, answer, category, l2-category,"
              " image (base64)")
    OPTIONS = {"tsv": None, "lang": None, "image_cache_dir": None}
    default_max_new_tokens = 1024  # as MGM model_vqa_mmbench.py / model_vqa_science.py
    DEFAULT_PROMPT_SUFFIX = MC_LETTER_PROMPT
    ANSWER_FORMATS = (UPLOAD_FORMAT,)

    def _tsv_path(self) -> Path:
        if self.options["tsv"]:
            return self.find_file(self.options["tsv"])
        found = sorted(self.data_dir.glob("mmbench_dev_*.tsv"))
        if len(found) == 1:
            return found[0]
        if not found:
            self.find_file("mmbench_dev_<date>.tsv")  # raises with the layout
        raise BenchmarkDataError(f"{self.name}: several TSVs {[p.name for p in found]}; "
                                 "choose one with the option tsv=<file name>")

    def _table(self):
        if getattr(self, "_df", None) is None:
            import pandas as pd

            df = pd.read_table(self._tsv_path(), dtype={"index": "int64"}, keep_default_na=False,
                               na_values=[""])
            for col in ("index", "question", "A", "B"):
                if col not in df.columns:
                    raise BenchmarkDataError(f"{self.name}: TSV lacks column {col!r}")
            self._df = df
        return self._df

    def _options(self, row: Any, prompt: bool = False) -> dict[str, str]:
        """Option letter -> text up to the first missing cell (`prompt`: LLaVA's is_none decides)."""
        missing = is_none if prompt else is_empty
        opts = {}
        for letter in OPTION_LETTERS:
            if letter not in row or missing(row[letter]):
                break
            opts[letter] = str(row[letter])
        return opts

    def _prompt(self, row: Any, lang: str) -> str:
        question = str(row["question"])
        hint = row.get("hint")
        if not is_none(hint):
            question = f"{hint}\n{question}"
        for letter, text in self._options(row, prompt=True).items():
            question += f"\n{letter}. {text}"
        if lang == "cn" and self.prompt_suffix == MC_LETTER_PROMPT:
            return f"{IMAGE_TOKEN}\n{question}\n{CN_PROMPT}"
        return f"{IMAGE_TOKEN}\n{self.ask(question)}"

    def _row_order(self) -> list[int]:
        """TSV row positions, each question's circular copies right after it (else TSV order)."""
        bases = [int(i) % 1_000_000 for i in self._table()["index"]]
        first: dict[int, int] = {}
        for pos, base in enumerate(bases):
            first.setdefault(base, pos)
        return sorted(range(len(bases)), key=lambda pos: (first[bases[pos]], pos))

    def question_ids(self) -> list[QuestionId]:
        index = self._table()["index"]
        return [int(index.iloc[pos]) for pos in self._row_order()]

    def question_groups(self) -> dict[QuestionId, Any]:
        """Each row's base question (index mod 1e6): circular evaluation judges all its copies together."""
        return {int(i): int(i) % 1_000_000 for i in self._table()["index"]}

    def items(self) -> list[EvalItem]:
        df, cache, out = self._table(), self.image_cache_dir(), []
        stem = self._tsv_path().stem
        lang = self.options["lang"] or ("cn" if "_cn" in stem else "en")
        for pos in self._row_order():
            row = df.iloc[pos]
            idx = int(row["index"])
            image = str(row["image"]) if "image" in row and not is_none(row["image"]) else ""
            if len(image) < 64 and image.isdigit():  # reference to another row's image
                image = str(df.loc[df["index"] == int(image), "image"].iloc[0])
            path = cache / f"{stem}_{idx}.jpg"
            if image and not path.exists():
                path.write_bytes(base64.b64decode(image))
            out.append(EvalItem(question_id=idx, prompt=self._prompt(row, lang),
                                image_paths=[str(path)] if image else [],
                                meta={"base_index": idx % 1_000_000,
                                      "category": row.get("category"),
                                      "options": self._options(row, prompt=True)}))
        return out

    def read_official_answers(self, raw: RawAnswers) -> AnswerSet | None:
        if raw.kind != "table" or not raw.has_keys("index", "prediction"):
            return None
        return build_answer_set(raw, ((n, int(r["index"]), r["prediction"]) for n, r in raw.rows
                                      if not is_empty(r["prediction"])), UPLOAD_FORMAT)

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        df = self._table()
        check_whole_groups(self.name, self.question_groups(), scope)
        if scope is not None:
            df = df[[int(i) in scope for i in df["index"]]]
        if "answer" not in df.columns:
            return {"status": "no ground truth in this TSV (test split): upload the "
                              "submission file to the MMBench server", "num_questions": len(df)}
        groups: dict[int, dict[str, Any]] = {}
        failed_extraction = 0
        for _, row in df.iterrows():
            idx = int(row["index"])
            base = idx % 1_000_000
            grp = groups.setdefault(base, {"ok": True, "category": None, "l2": None})
            if idx == base or grp["category"] is None:
                grp["category"] = row.get("category")
                grp["l2"] = row.get("l2-category")
            pred = infer_option(answers[idx], self._options(row)) if idx in answers else None
            failed_extraction += pred is None and idx in answers
            grp["ok"] = grp["ok"] and pred == str(row["answer"]).strip()
        ok = [g["ok"] for g in groups.values()]
        out: Metrics = {"accuracy": pct(sum(ok), len(ok)),
                        "per_category": group_accuracy(ok, [g["category"] for g in groups.values()])}
        if "l2-category" in df.columns:
            out["per_l2_category"] = group_accuracy(ok, [g["l2"] for g in groups.values()])
        out.update(num_questions=len(ok), num_rows=len(df),
                   num_unextractable_answers=int(failed_extraction))
        return out

    def write_submission(self, answers: dict[QuestionId, str], out_dir: Path) -> list[Path]:
        """LLaVA-style submission: TSV columns minus hint/category/source/image/comment/l2."""
        df = self._table()
        drop = [c for c in ("hint", "category", "source", "image", "comment", "l2-category")
                if c in df.columns]
        sub = df.drop(columns=drop)
        sub.insert(min(6, len(sub.columns)), "prediction",
                   [answers.get(int(i)) for i in df["index"]])
        stem = Path(out_dir) / f"{self._tsv_path().stem}_submission"
        paths = [stem.with_suffix(".tsv")]
        sub.to_csv(paths[0], sep="\t", index=False)
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            return paths
        sub.to_excel(stem.with_suffix(".xlsx"), index=False, engine="openpyxl")
        return paths + [stem.with_suffix(".xlsx")]
