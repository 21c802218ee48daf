"""The standard VQA normalisation and soft accuracy."""

import pytest

from minigemini.eval.vqa_normalize import (normalize_answer, process_punctuation, soft_scores,
                                           textvqa_accuracy, vqav2_accuracy)


@pytest.mark.parametrize("raw, expected", [
    ("Two", "2"),                  # number word -> digit, lower-case
    ("the cat.", "cat"),           # article dropped, final period stripped
    ("3.5", "3.5"),                # period inside a decimal kept
    ("Hello, World!", "hello world"),
    ("1,000", "1000"),             # comma dropped by word_tokenize
    ("dont", "don't"),             # contraction table
    ("an apple", "apple"),
    ("red-white", "red white"),    # punctuation not touching a space -> space
    ("red - white", "red white"),  # punctuation touching a space -> removed
    ("Cat's\ttoy\n", "cat 's toy"),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_rule_matches_upstream_lookahead():
    # upstream pattern only keeps periods followed by a digit
    assert process_punctuation("a.b .5 end.") == "ab .5 end"


def test_soft_scores_leave_one_out():
    # 10 answers: "2" x3, "3" x7.
    # "2": 3 subsets drop a "2" -> 2 matches -> 2/3; 7 subsets keep all 3 -> 1 => (2 + 7) / 10 = 0.9
    # "3": every subset has >= 6 matches -> 1.0
    scores = soft_scores(["2"] * 3 + ["3"] * 7)
    assert scores["2"] == pytest.approx(0.9)
    assert scores["3"] == pytest.approx(1.0)
    # single match: 1 subset drops it (0), 9 keep it (1/3) -> 3/10
    assert soft_scores(["cat"] + ["dog"] * 9)["cat"] == pytest.approx(0.3)


def test_textvqa_accuracy_normalises_both_sides():
    gts = ["two", "2", "2"] + ["3"] * 7          # "two" counts as "2" -> 3 matches -> 0.9
    assert textvqa_accuracy("Two", gts) == pytest.approx(0.9)
    assert textvqa_accuracy("the cat.", ["cat"] + ["dog"] * 9) == pytest.approx(0.3)
    assert textvqa_accuracy("horse", gts) == 0.0


def test_vqav2_processing_only_when_annotators_disagree():
    # unanimous answers: no processing, so the raw "Yes" does not match (official quirk)
    assert vqav2_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqav2_accuracy("yes", ["yes"] * 10) == 1.0
    # disagreement: both sides processed -> "two" == "2"; 5 x "2", 5 x "3" -> 1.0
    assert vqav2_accuracy("two", ["2"] * 3 + ["two"] * 2 + ["3"] * 5) == pytest.approx(1.0)
