"""End to end: score_predictions / CLI helpers, answers files, results files, registry."""

import json

import pytest

from minigemini.eval.answers import append_answer, match_answers, read_answers
from minigemini.eval.benchmarks import BENCHMARKS, BenchmarkDataError, get_benchmark
from minigemini.eval.results import flatten_metrics, results_table
from minigemini.eval.score import main, parse_options, score_predictions

from .conftest import write_answers


def write_answers_file(path):
    lines = [
        {"question_id": "q1", "text": "Yes.", "prompt": "Is the cat black?", "model_id": "m",
         "metadata": {"t": 0.1}},                                  # extra keys are fine
        {"question_id": "q2", "text": "Laptop", "answer_id": "abc"},
        {"question_id": "q3", "text": "the left"},
        {"question_id": "zzz", "text": "not a benchmark id"},      # unknown id
        {"question_id": "q2", "text": "Laptop"},                   # duplicate (same text)
    ]  # q4 has no answer
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_score_predictions_end_to_end(gqa_dir, tmp_path):
    preds = write_answers_file(tmp_path / "answers.jsonl")
    out = tmp_path / "out"
    res = score_predictions("gqa", gqa_dir, preds, out)
    # q1, q2 right, q3 wrong, q4 missing (wrong) -> 2 / 4
    assert res["accuracy"] == pytest.approx(50.0)
    meta = res["meta"]
    assert meta["num_questions"] == 4 and meta["num_answered"] == 3
    assert meta["num_missing"] == 1 and meta["missing_ids"] == ["q4"]
    assert meta["unknown_ids"] == ["zzz"] and meta["duplicate_ids"] == ["q2"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["accuracy"] == pytest.approx(50.0)
    assert on_disk["meta"]["missing_ids"] == ["q4"]
    md = (out / "results.md").read_text()
    assert "| accuracy | 50.00 |" in md and "| per_structural_type.query | 100.00 |" in md
    assert "num_missing: 1" in md and "q4" in md


def test_score_predictions_without_out_dir_and_with_submission(tmp_path):
    root = tmp_path / "mmvet"
    root.mkdir()
    (root / "mm-vet.json").write_text(json.dumps(
        {"v1_0": {"imagename": "v1_0.png", "question": "Q?", "answer": "a", "capability": ["rec"]}}))
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"question_id": "v1_0", "text": "a"}) + "\n")
    assert "status" in score_predictions("mm-vet", root, preds)  # alias, nothing written
    res = score_predictions("mmvet", root, preds, tmp_path / "o")
    assert json.loads((tmp_path / "o" / "mmvet_submission.json").read_text()) == {"v1_0": "a"}
    assert res["meta"]["submission_files"]


def test_int_and_str_ids_match(tmp_path):
    preds = tmp_path / "a.jsonl"
    write_answers(preds, [{"question_id": "101", "text": "x"}, {"question_id": 102, "text": "y"}])
    match = match_answers([101, 102, 103], read_answers(preds))
    assert match.answers == {101: "x", 102: "y"} and match.missing_ids == [103]


def test_answers_file_helpers(tmp_path):
    path = tmp_path / "sub" / "answers.jsonl"
    assert not path.exists()
    append_answer(path, 5, "five", prompt="p")
    append_answer(path, "6", "six")
    assert set(read_answers(path).answers) == {"5", "6"}
    assert read_answers(path).records["5"]["prompt"] == "p"
    # a crash mid-write leaves a truncated last line: ignored with a warning
    with open(path, "a") as f:
        f.write('{"question_id": 7, "te')
    aset = read_answers(path)
    assert aset.truncated_last_line and set(aset.answers) == {"5", "6"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_answers(bad)
    bad.write_text('not json\n{"question_id": 1, "text": "a"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1: not valid JSON"):
        read_answers(bad)


def test_conflicting_duplicates_last_wins(tmp_path):
    path = tmp_path / "a.jsonl"
    write_answers(path, [{"question_id": 1, "text": "a"}, {"question_id": 1, "text": "b"}])
    aset = read_answers(path)
    assert aset.answers == {"1": "b"} and aset.conflicting_duplicate_ids == ["1"]


def test_results_table_and_flatten():
    res = {"accuracy": 61.234, "per_split": {"a": 1.0, "b": {"c": 2}}, "status": "x|y",
           "meta": {"benchmark": "b", "num_missing": 2, "missing_ids": [1, 2]}}
    assert flatten_metrics({k: v for k, v in res.items() if k != "meta"}) == [
        ("accuracy", 61.234), ("per_split.a", 1.0), ("per_split.b.c", 2), ("status", "x|y")]
    table = results_table(res, title="b")
    assert table.startswith("## b\n\n| metric | value |")
    assert "| accuracy | 61.23 |" in table and "| status | x\\|y |" in table
    assert "- missing ids (scored as wrong): 1, 2" in table


def test_cli_main_and_options(gqa_dir, tmp_path, capsys):
    preds = write_answers_file(tmp_path / "answers.jsonl")
    assert parse_options(["ocr=false", "splits=[\"random\"]", "tsv=a.tsv"]) == {
        "ocr": False, "splits": ["random"], "tsv": "a.tsv"}
    with pytest.raises(ValueError):
        parse_options(["novalue"])
    rc = main(["--benchmark", "gqa", "--data-dir", str(gqa_dir), "--predictions", str(preds),
               "--out", str(tmp_path / "cli"), "--option", "question_file=testdev_balanced_questions.json"])
    assert rc == 0 and "| accuracy | 50.00 |" in capsys.readouterr().out
    assert (tmp_path / "cli" / "results.json").is_file()


def test_registry():
    assert set(BENCHMARKS) == {"textvqa", "vqav2", "gqa", "pope", "mme", "mmbench", "scienceqa",
                               "mmmu", "mathvista", "mmvet", "custom"}
    assert get_benchmark("SQA").name == "scienceqa"
    with pytest.raises(ValueError, match="valid names: custom, gqa, mathvista"):
        get_benchmark("nope")


@pytest.mark.parametrize("name", sorted(set(BENCHMARKS) - {"custom"}))  # custom: tests/eval/test_custom.py
def test_missing_official_files_raise_clear_error(name, tmp_path):
    bench = BENCHMARKS[name](tmp_path)  # empty directory
    with pytest.raises(BenchmarkDataError, match="Expected layout"):
        bench.items()
    with pytest.raises(BenchmarkDataError):
        BENCHMARKS[name](tmp_path / "does-not-exist")
