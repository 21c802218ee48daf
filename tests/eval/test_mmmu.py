"""MMMU parsing rules and scoring on JSON and parquet fixtures."""

import random
from pathlib import Path

import pandas as pd
import pytest

from minigemini.eval.benchmarks.mmmu import MMMU
from minigemini.eval.mmmu_parse import (eval_open, parse_multi_choice_response,
                                        parse_open_response)

from .conftest import write_json

INSTR_MC = "Answer with the option's letter from the given choices directly."


def sample(sid, qtype, answer, options=None, question="Q?", image_1="images/x.png"):
    return {"id": sid, "question": question, "options": str(options or []), "answer": answer,
            "question_type": qtype, "image_1": image_1, "image_2": None}


SAMPLES = [
    sample("validation_Math_1", "multiple-choice", "B", ["3", "4", "5", "6"],
           question="What is 2+2? <image 1>"),
    sample("validation_Math_2", "open", "3.5"),
    sample("validation_Art_Theory_3", "multiple-choice", "C", ["Baroque", "Rococo", "Cubism"]),
    sample("validation_Physics_4", "open", "10"),
    sample("validation_Physics_5", "multiple-choice", "A", ["up", "down"]),
    sample("validation_Art_Theory_6", "multiple-choice", "A", ["x", "y"]),
]
ANSWERS = {
    "validation_Math_1": "(B) 4",                  # bracketed letter -> B, right
    "validation_Math_2": "the answer is 3.50",     # -> 3.5 == 3.5, right
    "validation_Art_Theory_3": "I think the painting style is Cubism because of the shapes",
    #                                                > 5 words, option text -> C, right
    "validation_Physics_4": "The velocity is 12 m/s",  # -> ["12 m/s", 12.0] vs 10.0, wrong
    "validation_Physics_5": "xyz",                 # unparseable -> no fallback: wrong
    # validation_Art_Theory_6 missing -> wrong
}


def test_multi_choice_parsing():
    idx = {"A": "up", "B": "down", "C": "left"}
    letters = ["A", "B", "C"]
    assert parse_multi_choice_response("B", letters, idx) == "B"
    assert parse_multi_choice_response("(A) up, or maybe (C)", letters, idx) == "C"  # last one
    assert parse_multi_choice_response("The answer is B.", letters, idx) == "B"
    assert parse_multi_choice_response("I would say it goes down in the end", letters, idx) == "B"
    assert parse_multi_choice_response("down", letters, idx) is None   # <= 5 words: no text match
    rng = random.Random(42)
    assert parse_multi_choice_response("??", letters, idx, rng) in letters


def test_open_parsing():
    assert parse_open_response("the answer is 3.50") == [3.5]
    assert eval_open("3.5", parse_open_response("The answer is 3.50."))
    assert eval_open("1,000", parse_open_response("It is 1000"))
    assert eval_open(["Paris", "paris city"], parse_open_response("The capital is Paris."))
    assert not eval_open("10", parse_open_response("The velocity is 12 m/s"))
    assert not eval_open("3.5", parse_open_response("3.56"))  # rounding to 2 places: 3.56


@pytest.fixture
def mmmu_json(tmp_path):
    root = tmp_path / "mmmu"
    write_json(root / "validation.json", SAMPLES)
    return root


def test_items_prompt_modes(mmmu_json):
    items = MMMU(mmmu_json).items()
    # MGM's mgm/eval/MMMU/eval/configs/llava1.5.yaml after yaml.safe_load: "{}\n{}\nAnswer with ..."
    assert items[0].prompt == ("<image>\nWhat is 2+2? <image 1>\n(A) 3\n(B) 4\n(C) 5\n(D) 6\n\n"
                               + INSTR_MC)
    assert items[0].image_paths == [str(mmmu_json / "images/x.png")]
    assert items[1].prompt == "<image>\nQ?\nAnswer the question using a single word or phrase."
    lmms = MMMU(mmmu_json, image_mode="all").items()
    assert lmms[0].prompt.startswith("What is 2+2? <image>\n(A) 3")
    assert lmms[0].image_paths == [str(mmmu_json / "images/x.png")]
    assert lmms[1].image_paths == []  # no <image k> reference in that question


def test_score_hand_computed(mmmu_json):
    res = MMMU(mmmu_json, random_fallback=False).score(ANSWERS)
    # right: Math_1, Math_2, Art_Theory_3 -> 3 / 6
    assert res["accuracy"] == pytest.approx(50.0)
    assert res["per_subject"] == pytest.approx({"Art_Theory": 50.0, "Math": 100.0,
                                                "Physics": 0.0})
    # Science = Math (2/2) + Physics (0/2) -> 50 ; Art and Design = Art_Theory 1/2 -> 50
    assert res["per_domain"] == pytest.approx({"Art and Design": 50.0, "Science": 50.0})
    assert res["num_unparsed_multiple_choice"] == 1
    # upstream's random fallback picks some letter for "xyz": accuracy is 3/6 or 4/6
    assert MMMU(mmmu_json).score(ANSWERS)["accuracy"] in (pytest.approx(50.0),
                                                          pytest.approx(400 / 6))


def test_parquet_layout_extracts_images(tmp_path):
    root = tmp_path / "MMMU"
    (root / "Math").mkdir(parents=True)
    rows = [dict(s, image_1={"bytes": b"png-bytes", "path": "m.png"}) for s in SAMPLES[:2]]
    for r in rows:
        r.pop("image_2")
    pd.DataFrame(rows).to_parquet(root / "Math" / "validation-00000-of-00001.parquet")
    bench = MMMU(root, image_cache_dir=str(tmp_path / "cache"))
    items = bench.items()
    assert Path(items[0].image_paths[0]).read_bytes() == b"png-bytes"
    assert bench.score({"validation_Math_1": "B", "validation_Math_2": "3.5"})["accuracy"] == 100
