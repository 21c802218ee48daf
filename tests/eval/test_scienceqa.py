"""ScienceQA-IMG with LLaVA's answer-letter parsing."""

import pytest

from minigemini.eval.benchmarks.scienceqa import ScienceQA, sqa_parse

from .conftest import write_json

INSTR = "Answer with the option's letter from the given choices directly."


def problem(question, choices, answer, subject, grade, hint="", image="image.png"):
    return {"question": question, "choices": choices, "answer": answer, "hint": hint,
            "image": image, "subject": subject, "grade": grade, "lecture": "", "solution": ""}


@pytest.fixture
def sqa_dir(tmp_path):
    root = tmp_path / "scienceqa"
    write_json(root / "problems.json", {
        "1": problem("Which is a mammal?", ["frog", "dog"], 1, "natural science", "grade3"),
        "2": problem("Which word rhymes with bat?", ["cat", "hat", "dog"], 0,
                     "language science", "grade8", hint="Read the text."),
        "3": problem("Which is a state?", ["Texas", "Paris"], 0, "social science", "grade4",
                     image=None),
        "4": problem("Which map is right?", ["left", "right"], 0, "social science", "grade10"),
        "5": problem("Val question?", ["a", "b"], 0, "natural science", "grade1"),
    })
    write_json(root / "pid_splits.json", {"test": ["1", "2", "3", "4"], "val": ["5"]})
    return root


def test_parse_like_llava():
    assert sqa_parse("B") == "B"
    assert sqa_parse("A. cat") == "A"
    assert sqa_parse("The answer is C.") == "C"
    assert sqa_parse("The answer is A") is None   # upstream regex needs a character after it
    assert sqa_parse("b") is None


def test_items(sqa_dir):
    items = ScienceQA(sqa_dir).items()
    assert [it.question_id for it in items] == ["1", "2", "4"]   # IMG subset of test
    assert items[1].prompt == ("<image>\nContext: Read the text.\nQuestion: Which word rhymes "
                               f"with bat?\nOptions: (A) cat (B) hat (C) dog\n{INSTR}")
    assert items[0].prompt.startswith("<image>\nContext: N/A\nQuestion: Which is a mammal?")
    assert items[0].image_paths[0].endswith("images/test/1/image.png")
    all_items = ScienceQA(sqa_dir, image_only=False).items()
    assert len(all_items) == 4 and all_items[2].image_paths == []
    assert not all_items[2].prompt.startswith("<image>")


def test_score_hand_computed(sqa_dir):
    res = ScienceQA(sqa_dir).score({
        "1": "B",                  # dog, right
        "2": "A. cat",             # right
        "3": "A",                  # not in the IMG subset: ignored
        "4": "The answer is C.",   # C is beyond the 2 choices -> wrong
    })
    assert res["accuracy"] == pytest.approx(200 / 3)           # 2 of 3
    assert res["per_subject"] == pytest.approx(
        {"language science": 100.0, "natural science": 100.0, "social science": 0.0})
    assert res["per_grade"] == pytest.approx({"G1-6": 100.0, "G7-12": 50.0})
    assert res["per_context"] == pytest.approx({"TXT": 100.0, "IMG": 200 / 3})
    assert res["num_questions"] == 3
    assert ScienceQA(sqa_dir).score({"1": "B"})["accuracy"] == pytest.approx(100 / 3)  # 2 missing


def test_llava_file_fallback(tmp_path):
    root = tmp_path / "sqa_llava"
    write_json(root / "llava_test_CQM-A.json", [
        {"id": "7", "image": "7/image.png", "conversations": [
            {"from": "human", "value": "Context: N/A\nQuestion: Q?\nOptions: (A) x (B) y\n<image>"},
            {"from": "gpt", "value": "The answer is B."}]},
        {"id": "8", "conversations": [
            {"from": "human", "value": "Context: N/A\nQuestion: R?\nOptions: (A) x (B) y"},
            {"from": "gpt", "value": "The answer is A."}]},
    ])
    bench = ScienceQA(root)
    assert [it.question_id for it in bench.items()] == ["7"]
    assert bench.score({"7": "B"})["accuracy"] == pytest.approx(100.0)
    assert bench.score({"7": "A"})["accuracy"] == pytest.approx(0.0)
