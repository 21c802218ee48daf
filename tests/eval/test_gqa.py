"""GQA test-dev exact match after LLaVA's normalisation."""

import pytest

from minigemini.eval.benchmarks.gqa import GQA, gqa_normalize


def test_normalize():
    assert gqa_normalize("Yes.") == "yes"
    assert gqa_normalize("Laptop..") == "laptop"
    assert gqa_normalize(" Laptop") == " laptop"  # whitespace kept, as convert_gqa_for_eval.py
    assert gqa_normalize("the left") == "the left"  # no article stripping in GQA


def test_items(gqa_dir):
    items = GQA(gqa_dir).items()
    assert [it.question_id for it in items] == ["q1", "q2", "q3", "q4"]
    assert items[0].prompt == ("<image>\nIs the cat black?\n"
                               "Answer the question using a single word or phrase.")
    assert items[1].image_paths[0].endswith("data/images/n2.jpg")


def test_score_hand_computed(gqa_dir):
    res = GQA(gqa_dir).score({"q1": "Yes.",       # -> "yes" == "yes"  correct
                              "q2": "Laptop",     # -> "laptop"        correct
                              "q3": "the left"})  # != "left"          wrong; q4 missing: wrong
    assert res["accuracy"] == pytest.approx(50.0)              # 2 / 4
    assert res["binary"] == pytest.approx(100 / 3)             # q1, q3, q4 -> 1 / 3
    assert res["open"] == pytest.approx(100.0)                 # q2 (structural "query")
    assert res["per_structural_type"] == pytest.approx(
        {"choose": 0.0, "query": 100.0, "verify": 50.0})
    assert res["num_questions"] == 4
