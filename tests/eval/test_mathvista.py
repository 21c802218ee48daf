"""MathVista testmini: rule extraction, normalisation, optional judge."""

import pytest

from minigemini.eval.benchmarks.mathvista import (MathVista, normalize_extracted_answer,
                                                  rule_extract)
from minigemini.eval.judge import CallableJudge

from .conftest import write_json


def prob(pid, qtype, atype, answer, choices=None, precision=None, skills=()):
    return {"pid": pid, "question": f"Question {pid}?", "image": f"images/{pid}.jpg",
            "choices": choices, "unit": None, "precision": precision, "answer": answer,
            "question_type": qtype, "answer_type": atype, "query": f"Hint: ...\nQuestion {pid}?",
            "metadata": {"language": "english", "task": "math word problem" if pid != "1"
                         else "figure question answering", "skills": list(skills)}}


PROBLEMS = {
    "1": prob("1", "multi_choice", "text", "4", ["3", "4", "5"], skills=["arithmetic reasoning"]),
    "2": prob("2", "free_form", "integer", "7",
              skills=["arithmetic reasoning", "algebraic reasoning"]),
    "3": prob("3", "free_form", "float", "2.5", precision=1),
    "4": prob("4", "free_form", "float", "1.25", precision=2),
    "5": prob("5", "multi_choice", "text", "blue", ["red", "blue"]),
    "6": prob("6", "free_form", "integer", "3"),
}
ANSWERS = {
    "1": "(B) 4",            # option letter B -> "4", right
    "2": "The answer is 7.",  # last number 7, right
    "3": "2.50",             # float("2.50") -> round(2.5, 1) = "2.5", right
    "4": "about 1.3",        # 1.3 != 1.25, wrong
    "5": "bleu",             # nearest choice by edit distance: blue (2) vs red (3), right
    # "6" missing -> wrong
}


@pytest.fixture
def mv_dir(tmp_path):
    root = tmp_path / "mathvista"
    write_json(root / "testmini.json", PROBLEMS)
    return root


def test_extraction_and_normalisation():
    p = PROBLEMS["1"]
    assert rule_extract("(B) 4", p) == "B"
    assert normalize_extracted_answer("B", p) == "4"
    assert normalize_extracted_answer("(C) 5", p) == "5"
    assert rule_extract('The answer is "7".', PROBLEMS["2"]) == "7"
    assert rule_extract("So we get 1,250 apples", PROBLEMS["2"]) == "1250"
    assert normalize_extracted_answer("7.0", PROBLEMS["2"]) == "7"
    assert normalize_extracted_answer("1.256", PROBLEMS["4"]) == "1.26"
    assert normalize_extracted_answer("n/a", PROBLEMS["4"]) is None


def test_items(mv_dir):
    items = MathVista(mv_dir).items()
    assert [it.question_id for it in items] == ["1", "2", "3", "4", "5", "6"]
    assert items[0].prompt == "<image>\n" + MathVista.build_query(PROBLEMS["1"])  # as MGM's create_one_query
    assert MathVista(mv_dir, query="data").items()[0].prompt == "<image>\nHint: ...\nQuestion 1?"
    assert items[0].image_paths == [str(mv_dir / "images/1.jpg")]


def test_build_query_when_missing():
    p = dict(PROBLEMS["1"], query=None, choices=["3", "4", "5"])
    assert MathVista.build_query(p) == (
        "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, "
        "D, at the end.\nQuestion: Question 1?\nChoices:\n(A) 3\n(B) 4\n(C) 5")


def test_score_rules_hand_computed(mv_dir):
    res = MathVista(mv_dir).score(ANSWERS)
    assert res["accuracy"] == pytest.approx(400 / 6)  # 4 of 6 right
    assert res["extraction"] == "rules"
    assert res["per_question_type"] == pytest.approx({"free_form": 50.0, "multi_choice": 100.0})
    # integer: "2" right, "6" wrong ; float: "3" right, "4" wrong ; text: both right
    assert res["per_answer_type"] == pytest.approx({"float": 50.0, "integer": 50.0,
                                                    "text": 100.0})
    assert res["per_skills"] == pytest.approx({"algebraic reasoning": 100.0,
                                               "arithmetic reasoning": 100.0})


def test_score_with_judges(mv_dir):
    # extractor judge plays upstream's GPT-4 role, only where the quick rules give nothing
    calls = []

    def extract(query, response):
        calls.append(response)
        return {"The answer is 7.": "7", "about 1.3": "1.25"}.get(response, response)

    judged = MathVista(mv_dir, judge=CallableJudge(lambda q, a, p: 0.0, extract)).score(ANSWERS)
    # "1": "(B) 4" -> "4"; "2" -> "7"; "3" quick rule; "4" -> "1.25"; "5" -> blue; "6" missing
    assert judged["accuracy"] == pytest.approx(500 / 6) and judged["extraction"] == "judge"
    assert "2.50" not in calls  # float("2.50") handled by the quick rules
    # a score-only judge decides correctness directly (>= 0.5)
    plain = MathVista(mv_dir, judge=CallableJudge(lambda q, a, p: float(a in p))).score(ANSWERS)
    # "4" in "(B) 4", "7" in "The answer is 7.", "2.5" in "2.50"; others not -> 3 / 6
    assert plain["accuracy"] == pytest.approx(50.0)
    with pytest.raises(TypeError, match="judge"):
        MathVista(mv_dir, judge=object()).score(ANSWERS)
