"""VQAv2 val-style scoring with the official VQA accuracy."""

import json

import pytest

from minigemini.eval.benchmarks.vqav2 import VQAv2

from .conftest import write_json

QUESTIONS = {"questions": [
    {"image_id": 42, "question": "How many dogs?", "question_id": 420},
    {"image_id": 42, "question": "Is it sunny?", "question_id": 421},
    {"image_id": 7, "question": "What color is the car?", "question_id": 70},
]}
ANNOTATIONS = {"annotations": [
    {"question_id": 420, "image_id": 42, "answer_type": "number",
     "answers": [{"answer": a, "answer_id": i + 1} for i, a in
                 enumerate(["2"] * 3 + ["two"] * 2 + ["3"] * 5)]},
    {"question_id": 421, "image_id": 42, "answer_type": "yes/no",
     "answers": [{"answer": "yes", "answer_id": i + 1} for i in range(10)]},
    {"question_id": 70, "image_id": 7, "answer_type": "other",
     "answers": [{"answer": a, "answer_id": i + 1} for i, a in
                 enumerate(["red"] * 2 + ["blue"] * 8)]},
]}


@pytest.fixture
def vqa_dir(tmp_path):
    root = tmp_path / "vqav2"
    write_json(root / "v2_OpenEnded_mscoco_val2014_questions.json", QUESTIONS)
    write_json(root / "v2_mscoco_val2014_annotations.json", ANNOTATIONS)
    return root


def test_items(vqa_dir):
    items = VQAv2(vqa_dir).items()
    assert [it.question_id for it in items] == [420, 421, 70]
    assert items[0].prompt == ("<image>\nHow many dogs?\n"
                               "Answer the question using a single word or phrase.")
    assert items[2].image_paths[0].endswith("val2014/COCO_val2014_000000000007.jpg")


def test_score_hand_computed(vqa_dir):
    res = VQAv2(vqa_dir).score({
        420: "Two",   # -> "2"; annotators disagree so "two" -> "2": 5 x "2", 5 x "3" -> 1.0
        421: "Yes.",  # EvalAI processing -> "yes"; unanimous "yes" -> 1.0
        70: "red",    # 2 of 10: (2*1/3 + 8*2/3) / 10 = 0.6
    })
    # accuracy = (1 + 1 + 0.6) / 3 = 86.67 %
    assert res["accuracy"] == pytest.approx(100 * 2.6 / 3)
    assert res["per_answer_type"] == pytest.approx({"number": 100.0, "other": 60.0,
                                                    "yes/no": 100.0})
    # a missing answer scores 0: (1 + 0 + 0.6) / 3
    assert VQAv2(vqa_dir).score({420: "2", 70: "red"})["accuracy"] == pytest.approx(100 * 1.6 / 3)


def test_submission_and_test_split(vqa_dir, tmp_path):
    bench = VQAv2(vqa_dir)
    (path,) = bench.write_submission({420: "Two", 421: "Yes."}, tmp_path)
    assert json.loads(path.read_text()) == [{"question_id": 420, "answer": "2"},
                                            {"question_id": 421, "answer": "yes"},
                                            {"question_id": 70, "answer": ""}]
    (vqa_dir / "v2_mscoco_val2014_annotations.json").unlink()
    res = bench.score({420: "2"})
    assert "accuracy" not in res and "submission" in res["status"]
