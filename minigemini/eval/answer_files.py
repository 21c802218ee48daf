"""Reading answer files in the shapes the official MGM / LLaVA eval scripts write them.

A benchmark accepts its own answers JSONL (`{"question_id", "text"}` per line, what `minigemini
eval` writes) and the files its official scripts write (`Benchmark.ANSWER_FORMATS`). This module
only reads a file into rows, whatever its shape (JSON lines, one JSON document, a TSV/XLSX
table, or a folder of MME answer txts); each benchmark then recognises its own formats
(`Benchmark.load_answers`) and turns the rows into an `AnswerSet`. A file no format fits is an
`AnswerFileError` naming the formats expected, never a silent score of 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from minigemini.eval.answers import AnswerSet

NATIVE_FORMAT = ('answers JSONL, one {"question_id": ..., "text": ...} per line (minigemini eval, '
                 "LLaVA/MGM model_vqa*.py)")


class AnswerFileError(ValueError):
    """An answers file that is not in any format the benchmark accepts."""


@dataclass
class RawAnswers:
    """An answers file as read, before any benchmark interprets it."""

    path: Path
    kind: str  # "jsonl" | "json" (one document) | "table" (tsv/xlsx) | "dir"
    rows: list[tuple[int, Any]] = field(default_factory=list)  # (line number, 0 if none; record)
    document: Any = None  # the JSON document when kind == "json"
    truncated_last_line: bool = False

    def dict_rows(self) -> list[tuple[int, dict[str, Any]]]:
        """`rows` when every one is a JSON object, else []."""
        return self.rows if self.rows and all(isinstance(r, dict) for _, r in self.rows) else []

    def has_keys(self, *keys: str) -> bool:
        """True when the rows are objects that all hold `keys`."""
        rows = self.dict_rows()
        return bool(rows) and all(all(k in r for k in keys) for _, r in rows)


def _read_jsonl(path: Path, raw: str) -> RawAnswers:
    lines = raw.split("\n")
    out = RawAnswers(path=path, kind="jsonl")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.rows.append((lineno, json.loads(line)))
        except json.JSONDecodeError as err:
            if lineno == len(lines) and not raw.endswith("\n") and out.rows:
                out.truncated_last_line = True  # a run interrupted mid-write
                continue
            raise AnswerFileError(f"{path}:{lineno}: neither a JSON document nor JSON lines ({err.msg})") from None
    return out


def _read_table(path: Path) -> RawAnswers:
    import pandas as pd

    if path.suffix.lower() == ".xlsx":
        df = pd.read_excel(path, keep_default_na=False)
    else:
        df = pd.read_csv(path, sep="\t", keep_default_na=False)
    records = df.to_dict(orient="records")
    return RawAnswers(path=path, kind="table", rows=[(i + 2, r) for i, r in enumerate(records)])


def read_raw_answers(path: str | Path) -> RawAnswers:
    """Read `path` (file or folder) into rows; the shape is found from the content, not the suffix
    (MathVista's extract_answer.py writes one JSON document into a file named `.jsonl`)."""
    path = Path(path)
    if path.is_dir():
        return RawAnswers(path=path, kind="dir")
    if not path.is_file():
        raise FileNotFoundError(f"answers file {path} does not exist")
    if path.suffix.lower() in (".tsv", ".xlsx"):
        return _read_table(path)
    raw = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return _read_jsonl(path, raw)
    if isinstance(doc, list):
        return RawAnswers(path=path, kind="json", rows=[(0, r) for r in doc], document=doc)
    if isinstance(doc, dict) and any(k in doc for k in ("question_id", "pid", "id")) and raw.strip().count("\n") == 0:
        return RawAnswers(path=path, kind="jsonl", rows=[(1, doc)])  # a JSONL file with a single line
    return RawAnswers(path=path, kind="json", document=doc)


def build_answer_set(raw: RawAnswers, pairs: Iterable[tuple[int, Any, Any]], fmt: str) -> AnswerSet:
    """AnswerSet from (line, question id, text) triples; duplicates reported, the last one kept."""
    out = AnswerSet(path=raw.path, truncated_last_line=raw.truncated_last_line)
    out.format = fmt
    for lineno, qid, text in pairs:
        if text is None:
            where = f"{raw.path}:{lineno}" if lineno else str(raw.path)
            raise AnswerFileError(f"{where}: the answer for question {qid!r} is null")
        key, text = str(qid), str(text)
        if key in out.answers:
            out.duplicate_ids.append(key)
            if out.answers[key] != text:
                out.conflicting_duplicate_ids.append(key)
        out.answers[key] = text
        out.num_lines += 1
    return out


def native_answer_set(raw: RawAnswers) -> AnswerSet | None:
    """The minigemini / LLaVA answers JSONL (`question_id` + `text` per line; an empty file has no answers), or None."""
    if raw.kind == "jsonl" and not raw.rows:
        return build_answer_set(raw, [], NATIVE_FORMAT)
    if raw.kind != "jsonl" or not raw.has_keys("question_id", "text"):
        return None
    return build_answer_set(raw, ((n, r["question_id"], r["text"]) for n, r in raw.rows), NATIVE_FORMAT)


def unrecognised(benchmark: str, raw: RawAnswers, formats: Iterable[str], why: str = "") -> AnswerFileError:
    """The one-line error for a file no accepted format fits."""
    listed = "; ".join(f"({i}) {f}" for i, f in enumerate([NATIVE_FORMAT, *formats], 1))
    detail = f" ({why})" if why else ""
    return AnswerFileError(f"{raw.path}: not a {benchmark} answers file{detail}; expected one of: {listed}")
