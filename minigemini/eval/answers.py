"""Answers files: JSON lines, one `{"question_id": ..., "text": ...}` per answered question.

Extra keys (prompt, model id, timings...) are allowed and kept. Question ids are matched to a
benchmark's ids by their string form, so `34602` and `"34602"` are the same question.
Duplicated ids are reported (the last line wins, as with LLaVA's dict-building evaluators);
questions without an answer are reported by `match_answers` and scored as wrong.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

logger = logging.getLogger(__name__)


@dataclass
class AnswerSet:
    """Contents of an answers file, keyed by `str(question_id)`."""

    path: Path
    answers: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicate_ids: list[str] = field(default_factory=list)
    conflicting_duplicate_ids: list[str] = field(default_factory=list)
    num_lines: int = 0
    truncated_last_line: bool = False
    format: str = "answers JSONL"  # which accepted file format it was read as
    extras: dict[str, dict[str, Any]] = field(default_factory=dict)  # per id: fields a scorer may use


@dataclass
class AnswerMatch:
    """Answers aligned with a benchmark's question ids."""

    answers: dict[Any, str]  # keyed by the benchmark's own question ids
    missing_ids: list[Any]
    unknown_ids: list[str]
    duplicate_ids: list[str]


def read_answers(path: str | Path) -> AnswerSet:
    """Parse an answers JSONL file; raises ValueError naming the bad line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"answers file {path} does not exist")
    raw = path.read_text(encoding="utf-8")
    lines = raw.split("\n")
    out = AnswerSet(path=path)
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            if lineno == len(lines) and not raw.endswith("\n"):
                logger.warning("%s: ignoring truncated last line %d", path, lineno)
                out.truncated_last_line = True
                continue
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(rec, dict) or "question_id" not in rec or "text" not in rec:
            raise ValueError(f"{path}:{lineno}: each line needs 'question_id' and 'text' keys")
        if rec["text"] is None:
            raise ValueError(f"{path}:{lineno}: 'text' is null")
        out.num_lines += 1
        key, text = str(rec["question_id"]), str(rec["text"])
        if key in out.answers:
            out.duplicate_ids.append(key)
            if out.answers[key] != text:
                out.conflicting_duplicate_ids.append(key)
        out.answers[key] = text
        out.records[key] = rec
    return out


def match_answers(question_ids: Iterable[Any], answer_set: AnswerSet) -> AnswerMatch:
    """Align answers with `question_ids`; report missing and unknown ids."""
    ids = list(question_ids)
    by_str = {str(q): q for q in ids}
    if len(by_str) != len(ids):
        raise ValueError("benchmark question ids are not unique as strings")
    answers = {by_str[k]: v for k, v in answer_set.answers.items() if k in by_str}
    missing = [q for q in ids if str(q) not in answer_set.answers]
    unknown = [k for k in answer_set.answers if k not in by_str]
    return AnswerMatch(answers=answers, missing_ids=missing, unknown_ids=unknown,
                       duplicate_ids=sorted(set(answer_set.duplicate_ids)))


def append_answer(path: str | Path, question_id: Any, text: str, **extra: Any) -> None:
    """Append one answer line (creates the file and parent dirs); extra keys are stored too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {"question_id": question_id, "text": text, **extra}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
