"""`--benchmark custom`: a user's JSONL/CSV, four metrics, data errors before the model loads, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from minigemini.eval.benchmarks import BenchmarkDataError
from minigemini.eval.benchmarks.custom import Custom, anls, exact_match, vqa_accuracy
from minigemini.eval.score import score_predictions

from .conftest import write_jsonl


def images(root: Path, n: int = 3) -> None:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (40 + 8 * i, 32), (60 * i, 90, 200 - 50 * i)).save(root / "img" / f"{i}.png")


def make_jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    root = tmp_path / "mine"
    images(root)
    return write_jsonl(root / "data.jsonl", rows)


ROWS = [
    {"id": "a", "image": "img/0.png", "question": "What colour?", "answer": "Red", "category": "colour"},
    {"id": "b", "image": "img/1.png", "question": "How many?", "answers": ["two", "2", "2"], "category": "count"},
    {"id": "c", "image": ["img/1.png", "img/2.png"], "question": "Same shape?", "answer": "yes"},
    {"id": "d", "image": "img/2.png", "question": "Read the sign.", "answer": "coca cola"},
]


def test_metric_functions_hand_computed():
    assert exact_match(" red. ", ["Red"]) == 1.0 and exact_match("dark red", ["red"]) == 0.0
    # VQA: "2" and "two" are the same after the EvalAI processing: 3 matches -> min(1, 3/3)
    assert vqa_accuracy("Two", ["two", "2", "2"]) == 1.0
    assert vqa_accuracy("2", ["2", "3", "3"]) == pytest.approx(1 / 3)
    # ANLS: "coca cola" vs "coca colla": distance 1 over 10 characters -> 0.9; "pepsi": >= 0.5 -> 0
    assert anls("Coca  Colla", ["coca cola"]) == pytest.approx(0.9)
    assert anls("pepsi", ["coca cola"]) == 0.0


def test_items_and_prompt_suffix(tmp_path):
    path = make_jsonl(tmp_path, ROWS)
    items = Custom(path).items()
    assert items[0].prompt == "<image>\nWhat colour?\nAnswer the question using a single word or phrase."
    assert items[2].prompt.startswith("<image>\n<image>\nSame shape?") and len(items[2].image_paths) == 2
    assert items[0].image_paths == [str(path.parent / "img" / "0.png")]
    assert Custom(path, prompt_suffix="Reply in one word.").items()[1].prompt == \
        "<image>\nHow many?\nReply in one word."
    assert Custom(path, prompt_suffix="").items()[3].prompt == "<image>\nRead the sign."


def test_score_each_metric_from_a_predictions_file(tmp_path):
    path = make_jsonl(tmp_path, ROWS)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"question_id": "a", "text": "red."},
                                               {"question_id": "b", "text": "2"},
                                               {"question_id": "d", "text": "coca colla"}])  # c missing
    em = score_predictions("custom", path, preds)
    assert em["exact_match"] == pytest.approx(50.0)  # a ("red." = "Red"), b ("2" among the answers) of 4
    assert em["per_category"] == pytest.approx({"colour": 100.0, "count": 100.0})  # c, d have no category
    vqa = score_predictions("custom", path, preds, metric="vqa_accuracy")
    # a: 1 of 1 -> 1/3; b: 3 of 3 -> 1; c: missing 0; d: 0 -> 1.333 / 4
    assert vqa["vqa_accuracy"] == pytest.approx(100 * (1 / 3 + 1) / 4)
    score = score_predictions("custom", path, preds, metric="anls")
    # a: "red." vs "red": distance 1 / 4 -> 0.75; b: "2" vs "2" -> 1; d: 0.9 -> 2.65 / 4
    assert score["anls"] == pytest.approx(100 * (0.75 + 1 + 0.9) / 4)


def test_multiple_choice_csv(tmp_path):
    root = tmp_path / "mc"
    images(root)
    (root / "q.csv").write_text(
        "image,question,choices,answer\n"
        'img/0.png,Which colour?,"[""red"", ""blue""]",B\n'
        "img/1.png,Which shape?,circle|square|star,star\n"
        "img/2.png,Which size?,small|big,A\n")
    items = Custom(root, metric="multiple_choice").items()  # the folder's single .csv
    assert items[1].prompt == ("<image>\nWhich shape?\nA. circle\nB. square\nC. star\n"
                               "Answer with the option's letter from the given choices directly.")
    assert [it.question_id for it in items] == [2, 3, 4]  # ids default to the CSV line numbers
    preds = write_jsonl(tmp_path / "p.jsonl", [{"question_id": 2, "text": "B"},
                                               {"question_id": 3, "text": "The answer is star"},
                                               {"question_id": 4, "text": "B. big"}])
    res = score_predictions("custom", root / "q.csv", preds, metric="multiple_choice")
    assert res["multiple_choice"] == pytest.approx(200 / 3)  # B right, "star" -> C right, B != A


@pytest.mark.parametrize("row, message", [
    ({"image": "img/0.png", "answer": "x"}, r"data\.jsonl:2: missing or empty 'question'"),
    ({"image": "img/9.png", "question": "q", "answer": "x"},
     r"data\.jsonl:2: image file .*img/9\.png does not exist"),
    ({"image": "img/0.png", "question": "q", "answers": []}, r"data\.jsonl:2: no answer"),
    ({"image": "img/0.png", "question": "q", "answer": "x", "label": 1},
     r"data\.jsonl:2: unknown column\(s\) \['label'\]"),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    path = make_jsonl(tmp_path, [ROWS[0], row])
    with pytest.raises(BenchmarkDataError, match=message):
        Custom(path).check()


def test_data_file_or_folder(tmp_path):
    with pytest.raises(BenchmarkDataError, match="holds 0 .jsonl/.csv files; give the data file itself"):
        Custom(tmp_path)
    with pytest.raises(BenchmarkDataError, match="does not exist"):
        Custom(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown metric 'bleu'; choose one of exact_match, vqa_accuracy"):
        Custom(make_jsonl(tmp_path, ROWS), metric="bleu")


def test_bad_data_reported_before_the_model_loads(tmp_path, monkeypatch, capsys):
    from minigemini.cli import main
    from minigemini.infer import generate

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when the benchmark data is bad")

    monkeypatch.setattr(generate.Generator, "from_pretrained", no_model)
    path = make_jsonl(tmp_path, [ROWS[0], {"image": "img/0.png", "question": "q", "answer": ""}])
    assert main(["eval", "--model", str(tmp_path / "model"), "--benchmark", "custom", "--data-dir", str(path)]) == 2
    assert "data.jsonl:2: no answer" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--benchmark", "pope", "--data-dir", str(tmp_path), "--metric", "anls"]) == 2
    assert "--metric applies to --benchmark custom only" in capsys.readouterr().err
    assert main(["eval", "--predictions", str(path), "--benchmark", "custom", "--data-dir", str(path),
                 "--option", "colour=red"]) == 2  # an unknown option: one line, no traceback
    assert "custom: unknown option(s) ['colour']" in capsys.readouterr().err


@pytest.fixture()
def chatml_model_dir(tmp_path: Path) -> Path:
    """A random-init tiny Qwen2-style model with a small trained BPE tokenizer (no SentencePiece), saved."""
    import torch

    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor
    from minigemini.data.tokenizer import tiny_tokenizer

    tok = tiny_tokenizer("chatml")
    config = MiniGeminiConfig.tiny(llm="qwen2", vocab_size=len(tok), template="chatml")
    processor = MiniGeminiProcessor(tok, config)
    torch.manual_seed(0)
    out = tmp_path / "tiny_chatml"
    MiniGeminiForCausalLM(config).eval().save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_custom_end_to_end_on_the_tiny_model(chatml_model_dir, tmp_path, capsys):
    from minigemini.cli import main

    tiny_model_dir = chatml_model_dir
    path = make_jsonl(tmp_path, ROWS)
    out = tmp_path / "out"
    assert main(["eval", "--model", str(tiny_model_dir), "--benchmark", "custom", "--data-dir", str(path),
                 "--metric", "exact_match", "--prompt-suffix", "Reply in one word.", "--out", str(out),
                 "--max-new-tokens", "3", "--device", "cpu", "--no-progress"]) == 0
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["question_id"] for r in lines] == ["a", "b", "c", "d"]
    assert all(r["prompt"].endswith("\nReply in one word.") for r in lines)
    gold = {r["id"]: [r["answer"]] if "answer" in r else r["answers"] for r in ROWS}
    by_hand = sum(r["text"].strip().lower().rstrip(".") in [g.lower() for g in gold[r["question_id"]]]
                  for r in lines) * 100 / 4
    results = json.loads((out / "results.json").read_text())
    assert results["exact_match"] == pytest.approx(by_hand)

    # The same predictions re-scored where two gold answers are what the model said: 2 of 4 right at least.
    said = {r["question_id"]: r["text"] for r in lines}
    assert said["a"].strip() and said["b"].strip()  # the seeded tiny model writes something (not an empty answer)
    rows = [dict(ROWS[0], answer=said["a"]), dict(ROWS[1], answers=[said["b"]]), ROWS[2], ROWS[3]]
    rescored = make_jsonl(tmp_path / "again", rows)
    res = score_predictions("custom", rescored, out / "predictions.jsonl")
    expected = 2 + sum(said[k].strip().lower().rstrip(".") == gold[k][0] for k in "cd")  # a, b right by construction
    assert res["exact_match"] == pytest.approx(100 * expected / 4)
    assert results["meta"]["options"] == {"prompt_suffix": "Reply in one word.", "metric": "exact_match"}
