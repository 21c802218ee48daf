"""`eval --limit N` scores the N answered questions (N of M in the results); a full run still counts
missing answers as wrong; grouped metrics (MME pairs, MMBench circular copies) keep complete groups only."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from minigemini.eval.benchmarks import get_benchmark
from minigemini.eval.benchmarks.mmbench import MMBench
from minigemini.eval.benchmarks.mme import MME
from minigemini.eval.judge import CallableJudge
from minigemini.eval.runner import PREDICTIONS_FILE, evaluate
from minigemini.eval.score import score_predictions

from .conftest import GQA_QUESTIONS, write_answers
from .test_mathvista import ANSWERS as MATHVISTA_ANSWERS
from .test_mathvista import mv_dir  # noqa: F401  (fixture)
from .test_mmbench import row
from .test_mme import YN, write_pair
from .test_mmmu import ANSWERS as MMMU_ANSWERS
from .test_mmmu import mmmu_json  # noqa: F401  (fixture)
from .test_mmvet import ANSWERS as MMVET_ANSWERS
from .test_mmvet import mmvet_dir  # noqa: F401  (fixture)
from .test_pope import make_pope
from .test_scienceqa import sqa_dir  # noqa: F401  (fixture)
from .test_textvqa import make_textvqa
from .test_vqav2 import vqa_dir  # noqa: F401  (fixture)

GQA_RIGHT = {qid: q["answer"] for qid, q in GQA_QUESTIONS.items()}  # q1..q4, in benchmark order


class AnswerKeyGenerator:
    """Stands in for `Generator`: answers each GQA question with its ground truth."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def question_prompt(self, prompt: str) -> str:
        return prompt

    def generate(self, prompts, images=None, options=None):
        by_question = {q["question"]: q["answer"] for q in GQA_QUESTIONS.values()}
        self.asked += prompts
        return [by_question[p.split("\n")[1]] for p in prompts]


def _answers_file(path: Path, answers: dict) -> Path:
    write_answers(path, [{"question_id": k, "text": v} for k, v in answers.items()])
    return path


def test_limit_scores_only_the_answered_questions(gqa_dir, tmp_path, capsys):
    generator = AnswerKeyGenerator()
    out = tmp_path / "run"
    res = evaluate(generator, "gqa", gqa_dir, out, limit=2, batch_size=2, progress=False)
    assert len(generator.asked) == 2
    meta = res["meta"]
    assert res["accuracy"] == pytest.approx(100.0) and res["num_questions"] == 2
    assert (meta["subset"], meta["limit"], meta["num_scored"], meta["num_total"]) == ("answered", 2, 2, 4)
    assert meta["num_missing"] == 2 and meta["num_missing_scored_as_wrong"] == 0
    assert meta["note"].startswith("score over 2 of 4 questions")
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["accuracy"] == pytest.approx(100.0) and on_disk["meta"]["num_scored"] == 2
    assert on_disk["meta"]["generation"]["num_generated"] == 2
    md = (out / "results.md").read_text()
    assert "scored: 2 of 4 questions (subset: answered, first 2 only)" in md
    assert "missing ids (not scored): q3, q4" in md

    # the same answers without --limit: the 2 unanswered questions count as wrong and are reported
    full = evaluate(None, "gqa", gqa_dir, tmp_path / "full", predictions=out / PREDICTIONS_FILE)
    fmeta = full["meta"]
    assert full["accuracy"] == pytest.approx(50.0) and full["num_questions"] == 4
    assert (fmeta["subset"], fmeta["num_scored"], fmeta["num_total"]) == ("all", 4, 4)
    assert fmeta["num_missing"] == 2 and fmeta["missing_ids"] == ["q3", "q4"]
    assert fmeta["num_missing_scored_as_wrong"] == 2 and "note" not in fmeta

    # the CLI prints the scope: N of M with --limit, M of M (missing = wrong) without
    from minigemini.cli import main

    preds = str(out / PREDICTIONS_FILE)
    capsys.readouterr()
    assert main(["eval", "--benchmark", "gqa", "--data-dir", str(gqa_dir), "--predictions", preds,
                 "--out", str(tmp_path / "cli"), "--limit", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| accuracy | 100.00 |" in printed
    assert "- scored: 2 of 4 questions (subset: answered, first 2 only)" in printed
    assert "note: score over 2 of 4 questions (the answered questions among the first 2)" in printed
    assert main(["eval", "--benchmark", "gqa", "--data-dir", str(gqa_dir), "--predictions", preds,
                 "--out", str(tmp_path / "cli_full")]) == 0
    printed = capsys.readouterr().out
    assert "| accuracy | 50.00 |" in printed and "- scored: 4 of 4 questions (subset: all)" in printed
    assert "- missing ids (scored as wrong): q3, q4" in printed


def test_subset_answered_without_limit_and_subset_all_with_limit(gqa_dir, tmp_path):
    preds = _answers_file(tmp_path / "a.jsonl", {"q1": "yes", "q2": "laptop", "q4": "yes"})  # q3 missing, q4 wrong
    res = score_predictions("gqa", gqa_dir, preds, subset="answered")
    assert res["accuracy"] == pytest.approx(200 / 3) and res["meta"]["num_scored"] == 3
    res = score_predictions("gqa", gqa_dir, preds, subset="all", limit=3)  # q3 in scope, unanswered: wrong
    assert res["accuracy"] == pytest.approx(200 / 3) and res["meta"]["num_missing_scored_as_wrong"] == 1
    assert (res["meta"]["num_scored"], res["meta"]["num_answered_not_scored"]) == (3, 1)
    with pytest.raises(ValueError, match="subset must be one of"):
        score_predictions("gqa", gqa_dir, preds, subset="some")


def _mme(tmp_path: Path) -> Path:
    root = tmp_path / "MME"
    ex = root / "existence"
    write_pair(ex, ex, "img1", ".jpg", [(f"Is there a dog?{YN}", "Yes"), (f"Is there a cat?{YN}", "No")])
    write_pair(ex, ex, "img2", ".png", [(f"Is there a car?{YN}", "Yes"), (f"Is there a bus?{YN}", "No")])
    return root


def test_mme_limit_keeps_complete_image_pairs(tmp_path):
    root = _mme(tmp_path)
    ids = MME(root).question_ids()
    assert ids == ["existence/img1.jpg#0", "existence/img1.jpg#1", "existence/img2.png#0", "existence/img2.png#1"]
    preds = _answers_file(tmp_path / "a.jsonl", {ids[0]: "Yes", ids[1]: "No", ids[2]: "Yes"})  # --limit 3

    sub = score_predictions("mme", root, preds, subset="answered", limit=3)
    assert (sub["meta"]["num_scored"], sub["meta"]["num_total"]) == (2, 4)
    assert sub["meta"]["num_incomplete_groups_dropped"] == 1 and sub["meta"]["num_answered_not_scored"] == 1
    ex = sub["per_subtask"]["existence"]
    assert (ex["acc"], ex["acc_plus"], ex["score"], ex["num_images"]) == (100.0, 100.0, 200.0, 1)
    assert sub["perception"] == pytest.approx(200.0)

    full = score_predictions("mme", root, preds)  # img2's second question missing: wrong, and img2 fails acc+
    ex = full["per_subtask"]["existence"]
    assert (ex["acc"], ex["acc_plus"], ex["score"]) == (75.0, 50.0, 125.0)
    assert full["meta"]["num_missing"] == 1 and full["meta"]["num_scored"] == 4

    with pytest.raises(ValueError, match="split 1 groups"):  # scoring a partial pair directly is refused
        MME(root).score({ids[0]: "Yes", ids[1]: "No", ids[2]: "Yes"}, scope=set(ids[:3]))

    nothing = score_predictions("mme", root, preds, subset="answered", limit=1)
    assert nothing["meta"]["num_scored"] == 0 and nothing["status"].startswith("nothing to score")


def _mmbench(tmp_path: Path) -> Path:
    """TSV in index order: the base questions first, their circular copies (index + k * 1e6) after."""
    root = tmp_path / "mmbench"
    root.mkdir()
    rows = [row(1, "Sky colour?", ["blue", "red", "green"], "A", "color", "attr"),
            row(2, "How many cats?", ["1", "2"], "B", "count", "fine"),
            row(3, "Which animal?", ["dog", "cat"], "B", "color", "attr"),
            row(1000001, "Sky colour?", ["red", "green", "blue"], "C", "color", "attr"),
            row(2000001, "Sky colour?", ["green", "blue", "red"], "B", "color", "attr"),
            row(1000002, "How many cats?", ["2", "1"], "A", "count", "fine")]
    pd.DataFrame(rows).to_csv(root / "mmbench_dev_20230712.tsv", sep="\t", index=False)
    return root


def test_mmbench_questions_come_group_by_group_and_limit_keeps_complete_groups(tmp_path):
    root = _mmbench(tmp_path)
    bench = MMBench(root, image_cache_dir=str(tmp_path / "cache"))
    order = [1, 1000001, 2000001, 2, 1000002, 3]  # each question followed by its circular copies
    assert bench.question_ids() == order and [it.question_id for it in bench.items()] == order
    preds = _answers_file(tmp_path / "a.jsonl", {1: "A", 1000001: "C", 2000001: "B", 2: "B"})  # --limit 4

    sub = score_predictions("mmbench", root, preds, subset="answered", limit=4)
    assert sub["accuracy"] == pytest.approx(100.0) and sub["num_questions"] == 1 and sub["num_rows"] == 3
    assert (sub["meta"]["num_scored"], sub["meta"]["num_total"]) == (3, 6)
    assert sub["meta"]["num_incomplete_groups_dropped"] == 1  # question 2: copy 1000002 not answered
    assert sub["per_category"] == {"color": 100.0}

    full = score_predictions("mmbench", root, preds)  # 2 (copy missing) and 3 (missing) wrong: 1 of 3
    assert full["accuracy"] == pytest.approx(100 / 3) and full["num_questions"] == 3
    assert full["meta"]["num_missing"] == 2 and full["meta"]["num_scored"] == 6
    with pytest.raises(ValueError, match="whole groups"):
        bench.score({1: "A", 2: "B"}, scope={1, 2})


def test_pope_subset_leaves_out_unscored_splits(tmp_path):
    root, qid = make_pope(tmp_path)
    answers = {qid["random", "r1.jpg"]: "Yes", qid["random", "r2.jpg"]: "No.",  # TP, FN
               qid["random", "r3.jpg"]: "No", qid["random", "r4.jpg"]: "yes"}   # TN, FP
    preds = _answers_file(tmp_path / "a.jsonl", answers)
    sub = score_predictions("pope", root, preds, subset="answered")
    assert set(sub["per_split"]) == {"random"} and sub["meta"]["num_scored"] == 4 and sub["meta"]["num_total"] == 8
    assert (sub["accuracy"], sub["f1"], sub["yes_ratio"]) == (50.0, 50.0, 50.0)
    full = score_predictions("pope", root, preds)  # the 4 other questions are wrong: popular/adversarial acc 0
    assert full["per_split"]["popular"]["accuracy"] == 0.0 and full["accuracy"] == pytest.approx(50 / 3)


# independent questions: a subset's score is the mean of its questions' own scores
CASES = {
    "gqa": ("gqa_dir", {}, {"q1": "yes", "q2": "laptop", "q3": "right", "q4": "no"}, "accuracy"),
    "scienceqa": ("sqa_dir", {}, {"1": "B", "2": "A. cat", "3": "A", "4": "The answer is C."}, "accuracy"),
    "textvqa": (None, {}, {101: "Two", 102: "the cat.", 104: "Yes"}, "accuracy"),
    "vqav2": ("vqa_dir", {}, {420: "Two", 421: "Yes.", 70: "red"}, "accuracy"),
    "mmmu": ("mmmu_json", {"random_fallback": False}, MMMU_ANSWERS, "accuracy"),
    "mathvista": ("mv_dir", {}, MATHVISTA_ANSWERS, "accuracy"),
    "mmvet": ("mmvet_dir", {"judge": CallableJudge(lambda q, a, p: 1.0 if a in p else 0.5 if p.startswith("d")
                                                   else 0.0)}, MMVET_ANSWERS, "total"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_independent_scorer_scores_a_subset(name, request, tmp_path):
    fixture, options, answers, key = CASES[name]
    data_dir = request.getfixturevalue(fixture) if fixture else make_textvqa(tmp_path)
    bench = get_benchmark(name)(data_dir, **options)
    answered = [q for q in bench.question_ids() if q in answers]
    scope = set(answered[:-1])  # a strict subset of the answered questions
    assert len(scope) >= 1 and bench.question_groups() is None
    sub = bench.score(answers, scope=scope)
    singles = [bench.score(answers, scope={q})[key] for q in scope]
    assert sub["num_questions"] == len(scope)
    assert sub[key] == pytest.approx(sum(singles) / len(singles))
    everything = bench.score(answers)
    assert everything["num_questions"] == len(bench.question_ids())
