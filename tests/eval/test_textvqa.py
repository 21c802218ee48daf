"""TextVQA on a hand-built fixture in the official + LLaVA layout."""

from pathlib import Path

import pytest

from minigemini.eval.benchmarks import BenchmarkDataError
from minigemini.eval.benchmarks.textvqa import TextVQA

from .conftest import write_json, write_jsonl

SUFFIX = "Answer the question using a single word or phrase."
ANNOTATIONS = {"dataset_name": "textvqa", "data": [
    {"question_id": 101, "image_id": "img1", "question": "what number is shown?",
     "answers": ["two", "2", "2", "3", "3", "3", "3", "3", "3", "3"], "ocr_tokens": ["2", "3"]},
    {"question_id": 102, "image_id": "img1", "question": "what animal is this?",
     "answers": ["cat"] + ["dog"] * 9, "ocr_tokens": []},
    {"question_id": 103, "image_id": "img2", "question": "what brand is it?",
     "answers": ["coca cola"] * 10, "ocr_tokens": ["COCA", "COLA"]},
    {"question_id": 104, "image_id": "img3", "question": "is it open?",
     "answers": ["yes"] * 4 + ["no"] * 6, "ocr_tokens": ["OPEN"]},
]}
# LLaVA's question file: question_id is the *image* id (img1 appears twice), order differs.
LLAVA_QUESTIONS = [
    {"question_id": "img1", "image": "img1.jpg", "category": "default",
     "text": f"What animal is this?\n{SUFFIX}"},
    {"question_id": "img1", "image": "img1.jpg", "category": "default",
     "text": f"What number is shown?\nReference OCR token: 2, 3\n{SUFFIX}"},
    {"question_id": "img2", "image": "img2.jpg", "category": "default",
     "text": f"What brand is it?\nReference OCR token: COCA, COLA\n{SUFFIX}"},
    {"question_id": "img3", "image": "img3.jpg", "category": "default",
     "text": f"Is it open?\nReference OCR token: OPEN\n{SUFFIX}"},
]


def make_textvqa(tmp_path: Path, with_llava_file: bool = True) -> Path:
    root = tmp_path / "textvqa"
    write_json(root / "TextVQA_0.5.1_val.json", ANNOTATIONS)
    if with_llava_file:
        write_jsonl(root / "llava_textvqa_val_v051_ocr.jsonl", LLAVA_QUESTIONS)
    (root / "train_images").mkdir(exist_ok=True)
    return root


def test_items_from_llava_question_file(tmp_path):
    bench = TextVQA(make_textvqa(tmp_path))
    items = bench.items()
    # annotation question ids recovered via (image id, question) -> unique ids
    assert [it.question_id for it in items] == [102, 101, 103, 104]
    assert items[1].prompt == (f"<image>\nWhat number is shown?\nReference OCR token: 2, 3\n"
                               f"{SUFFIX}")
    assert items[1].image_paths == [str((tmp_path / "textvqa/train_images/img1.jpg").resolve())]
    no_ocr = TextVQA(make_textvqa(tmp_path), ocr=False).items()
    assert no_ocr[1].prompt == f"<image>\nWhat number is shown?\n{SUFFIX}"


def test_items_without_llava_file_use_annotations(tmp_path):
    items = TextVQA(make_textvqa(tmp_path, with_llava_file=False)).items()
    assert [it.question_id for it in items] == [101, 102, 103, 104]
    assert items[0].prompt == f"<image>\nWhat number is shown?\nReference OCR token: 2, 3\n{SUFFIX}"
    assert items[1].prompt == f"<image>\nWhat animal is this?\n{SUFFIX}"  # no OCR tokens


def test_score_hand_computed(tmp_path):
    bench = TextVQA(make_textvqa(tmp_path))
    answers = {101: "Two",       # -> "2": 3 of 10 annotators -> (3*2/3 + 7*1)/10 = 0.9
               102: "the cat.",  # -> "cat": 1 of 10 -> (1*0 + 9*1/3)/10 = 0.3
               # 103 missing -> 0
               104: "Yes"}       # -> "yes": 4 of 10 -> (4*1 + 6*1)/10 = 1.0
    # accuracy = (0.9 + 0.3 + 0 + 1.0) / 4 = 0.55 -> 55 %
    res = bench.score(answers)
    assert res["accuracy"] == pytest.approx(55.0)
    assert res["num_questions"] == 4
    assert bench.score({101: "2", 102: "cat", 103: "Coca-Cola", 104: "yes"})["accuracy"] == \
        pytest.approx(100 * (0.9 + 0.3 + 1.0 + 1.0) / 4)  # "coca-cola" -> "coca cola"


def test_missing_file_error_names_file_and_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BenchmarkDataError, match="TextVQA_0.5.1_val.json") as err:
        TextVQA(tmp_path / "empty").items()
    assert "train_images" in str(err.value)


def test_unknown_option_rejected(tmp_path):
    with pytest.raises(TypeError, match="valid options"):
        TextVQA(make_textvqa(tmp_path), use_ocr=True)
