"""MM-Vet: submission file always; scores only with a judge."""

import json

import pytest

from minigemini.eval.benchmarks.mmvet import MMVet
from minigemini.eval.judge import CallableJudge

from .conftest import write_json


@pytest.fixture
def mmvet_dir(tmp_path):
    root = tmp_path / "mm-vet"
    write_json(root / "mm-vet.json", {
        "v1_0": {"imagename": "v1_0.png", "question": "What is x?", "answer": "14",
                 "capability": ["ocr", "math"]},
        "v1_1": {"imagename": "v1_1.jpg", "question": "What animal?", "answer": "cat",
                 "capability": ["rec"]},
        "v1_2": {"imagename": "v1_2.jpg", "question": "Who painted it?", "answer": "Monet",
                 "capability": ["rec", "know"]},
    })
    return root


ANSWERS = {"v1_0": "It is 14", "v1_1": "dog"}  # v1_2 missing


def test_items(mmvet_dir):
    items = MMVet(mmvet_dir).items()
    assert [it.question_id for it in items] == ["v1_0", "v1_1", "v1_2"]
    assert items[0].prompt == "<image>\nWhat is x?"
    assert items[0].image_paths[0].endswith("mm-vet/images/v1_0.png")


def test_without_judge_no_fake_number(mmvet_dir, tmp_path):
    bench = MMVet(mmvet_dir)
    res = bench.score(ANSWERS)
    assert "total" not in res and "judge" in res["status"]
    (path,) = bench.write_submission(ANSWERS, tmp_path)
    assert json.loads(path.read_text()) == {"v1_0": "It is 14", "v1_1": "dog", "v1_2": ""}


def test_with_judge_hand_computed(mmvet_dir):
    def grade(question, answer, prediction):
        if answer in prediction:
            return 1.0
        return 0.5 if prediction.startswith("d") else 0.0

    res = MMVet(mmvet_dir, judge=CallableJudge(grade)).score(ANSWERS)
    # per-sample scores: v1_0 1.0, v1_1 0.5 (partial), v1_2 0 (missing) -> total 50
    assert res["total"] == pytest.approx(50.0)
    # ocr, math: v1_0 -> 100 ; rec: (0.5 + 0) / 2 -> 25 ; know: v1_2 -> 0
    assert res["per_capability"] == pytest.approx({"rec": 25.0, "ocr": 100.0, "know": 0.0,
                                                   "math": 100.0})
    assert res["per_capability_integration"] == pytest.approx(
        {"know_rec": 0.0, "math_ocr": 100.0, "rec": 50.0})
