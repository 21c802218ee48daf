"""Shared helpers for the benchmark-scorer tests: tiny fixtures in the official layouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def write_json(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def write_answers(path: Path, records: list[dict[str, Any]]) -> Path:
    """A whole answers file, as `minigemini eval` writes it line by line (each record has question_id, text)."""
    assert all("question_id" in r and "text" in r for r in records)
    return write_jsonl(path, records)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


GQA_QUESTIONS = {
    "q1": {"imageId": "n1", "question": "Is the cat black?", "answer": "yes",
           "types": {"structural": "verify", "semantic": "attr"}},
    "q2": {"imageId": "n2", "question": "What is on the table?", "answer": "laptop",
           "types": {"structural": "query", "semantic": "rel"}},
    "q3": {"imageId": "n2", "question": "Is the mug on the left or right?", "answer": "left",
           "types": {"structural": "choose", "semantic": "rel"}},
    "q4": {"imageId": "n3", "question": "Is there a dog?", "answer": "no",
           "types": {"structural": "verify", "semantic": "obj"}},
}


@pytest.fixture
def gqa_dir(tmp_path: Path) -> Path:
    """GQA LLaVA layout: data/testdev_balanced_questions.json + data/images/."""
    root = tmp_path / "gqa"
    write_json(root / "data" / "testdev_balanced_questions.json", GQA_QUESTIONS)
    (root / "data" / "images").mkdir(parents=True)
    return root
