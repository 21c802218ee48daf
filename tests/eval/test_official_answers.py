"""Answer files as the official MGM / LLaVA eval scripts write them: auto-detected, scored as upstream.

Each test writes a small file in the official format (field names and layout typed from
dvlab-research/MGM @ 769820cb and haotian-liu/LLaVA: model_vqa_loader.py, convert_*_for_*.py,
eval_science_qa.py, MMMU run_llava.py, model_math_vista.py / extract_answer.py) and checks the
score against a hand computation of the upstream rule (comments give the arithmetic). The
TextVQA (80.00 %), MMMU (acc 0.5), POPE (acc 0.5, F1 2/3 per split) and ScienceQA (IMG 66.67 %)
numbers were also obtained by running MGM's own `eval_textvqa.py`, `MMMU/eval/eval.py`,
`eval_pope.py` and `eval_science_qa.py` on the same files (outside the project).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from minigemini.eval.answer_files import AnswerFileError
from minigemini.eval.score import score_predictions

from .conftest import write_json, write_jsonl
from .test_mathvista import PROBLEMS, mv_dir  # noqa: F401  (fixture)
from .test_mme import YN, mme_dir  # noqa: F401  (fixture)
from .test_mmmu import SAMPLES as MMMU_SAMPLES
from .test_mmvet import mmvet_dir  # noqa: F401  (fixture)
from .test_pope import make_pope
from .test_scienceqa import sqa_dir  # noqa: F401  (fixture)
from .test_textvqa import LLAVA_QUESTIONS, make_textvqa
from .test_vqav2 import vqa_dir  # noqa: F401  (fixture)

SHORT = "Answer the question using a single word or phrase."


def score(bench: str, data: Path, answers: Path, **options) -> dict:
    return score_predictions(bench, data, answers, **options)


# ---- TextVQA: model_vqa_loader answers keyed by image id ------------------------------------------

def test_textvqa_loader_answers_keyed_by_image_id(tmp_path):
    root = make_textvqa(tmp_path)
    texts = ["the cat.", "Two", "Coca-Cola", "Yes"]  # in LLAVA_QUESTIONS order: 102, 101, 103, 104
    rows = [{"question_id": q["question_id"], "prompt": q["text"], "text": t, "answer_id": "x",
             "model_id": "MGM-7B", "metadata": {}} for q, t in zip(LLAVA_QUESTIONS, texts)]
    res = score("textvqa", root, write_jsonl(tmp_path / "merge.jsonl", rows))
    # 102 "cat": 1 of 10 -> 0.3; 101 "2": 3 of 10 -> 0.9; 103 "coca cola" -> 1.0; 104 "yes" 4 of 10 -> 1.0
    assert res["accuracy"] == pytest.approx(100 * (0.3 + 0.9 + 1.0 + 1.0) / 4)  # 80.0
    assert res["meta"]["num_missing"] == 0 and "model_vqa_loader" in res["meta"]["answers_format"]


def test_textvqa_loader_line_with_unknown_question_names_the_line(tmp_path):
    root = make_textvqa(tmp_path)
    rows = [{"question_id": "img1", "prompt": f"What colour is it?\n{SHORT}", "text": "red"}]
    with pytest.raises(AnswerFileError, match=r"bad\.jsonl:1: no TextVQA question 'what colour is it\?'"):
        score("textvqa", root, write_jsonl(tmp_path / "bad.jsonl", rows))


# ---- VQAv2: the EvalAI upload file ----------------------------------------------------------------

def test_vqav2_submission_json(vqa_dir, tmp_path):  # noqa: F811 (fixture imported above)
    sub = write_json(tmp_path / "llava_vqav2_mscoco_test-dev2015.json",
                     [{"question_id": 420, "answer": "2"}, {"question_id": 421, "answer": "yes"},
                      {"question_id": 70, "answer": "red"}])
    res = score("vqav2", vqa_dir, sub)
    # 420: "2" = 3 x "2" + 2 x "two" -> 5 of 10 -> every leave-one-out subset >= 4/3 -> 1.0
    # 421: 10 of 10 -> 1.0;  70: "red" 2 of 10 -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    assert res["accuracy"] == pytest.approx(100 * 2.6 / 3)
    assert res["meta"]["answers_format"].startswith("convert_vqav2_for_submission.py")


# ---- GQA: testdev_balanced_predictions.json and isBalanced ----------------------------------------

def test_gqa_predictions_json_and_is_balanced(tmp_path):
    questions = {
        "q1": {"imageId": "n1", "question": "Is it red?", "answer": "yes", "isBalanced": True,
               "types": {"structural": "verify", "semantic": "attr"}},
        "q2": {"imageId": "n2", "question": "What is it?", "answer": "laptop", "isBalanced": True,
               "types": {"structural": "query", "semantic": "obj"}},
        "q3": {"imageId": "n2", "question": "Left or right?", "answer": "left", "isBalanced": True,
               "types": {"structural": "choose", "semantic": "rel"}},
        "q4": {"imageId": "n3", "question": "Is there a dog?", "answer": "no", "isBalanced": True,
               "types": {"structural": "verify", "semantic": "obj"}},
        "q5": {"imageId": "n3", "question": "Unbalanced?", "answer": "no", "isBalanced": False,
               "types": {"structural": "verify", "semantic": "obj"}},
    }
    root = tmp_path / "gqa"
    write_json(root / "data" / "testdev_balanced_questions.json", questions)
    preds = write_json(tmp_path / "testdev_balanced_predictions.json", [
        {"questionId": "q1", "prediction": "yes"}, {"questionId": "q2", "prediction": "laptop"},
        {"questionId": "q3", "prediction": "left"}, {"questionId": "q4", "prediction": "yes"},
        {"questionId": "q5", "prediction": "yes"}])
    res = score("gqa", root, preds)
    # q5 is not balanced: left out as eval.py does; q1-q3 right, q4 wrong -> 3 / 4
    assert res["accuracy"] == pytest.approx(75.0) and res["meta"]["num_total"] == 4
    assert res["meta"]["unknown_ids"] == ["q5"]


# ---- POPE: model_vqa_loader answers with llava_pope_test.jsonl ids --------------------------------

def test_pope_loader_answers(tmp_path):
    root, ids = make_pope(tmp_path)
    rows = [{"question_id": qid, "prompt": "p", "text": "Yes"} for qid in ids.values()]
    res = score("pope", root, write_jsonl(tmp_path / "pope.jsonl", rows))
    # every split: all "yes" with half the labels yes -> acc 50, precision 50, recall 100, F1 2/3
    assert res["accuracy"] == pytest.approx(50.0) and res["f1"] == pytest.approx(200 / 3)


def test_pope_loader_answers_without_question_file_is_an_error(tmp_path):
    root, ids = make_pope(tmp_path, with_llava=False)
    rows = [{"question_id": qid, "text": "Yes"} for qid in ids.values()]
    with pytest.raises(AnswerFileError, match="llava_pope_test.jsonl"):
        score("pope", root, write_jsonl(tmp_path / "pope.jsonl", rows))


# ---- MME: llava_mme answers JSONL and the convert_answer_to_mme.py folder ------------------------

MME_ANSWERS = [  # (llava question_id, question, answer, release gt)
    ("existence/img1.jpg", "Is there a dog in this image?", "Yes", "Yes"),
    ("existence/img1.jpg", "Is there a cat in this image?", "No", "No"),
    ("existence/img2.png", "Is there a car in this image?", "Yes", "Yes"),
    ("existence/img2.png", "Is there a bus in this image?", "Yes", "No"),
    ("artwork/images/a1.jpg", "Is this artwork created by X?", "yes", "Yes"),
    ("artwork/images/a1.jpg", "Is this artwork created by Y?", "no", "No"),
    ("code_reasoning/c1.png", "Will the code print 3?", "No", "Yes"),
    ("code_reasoning/c1.png", "Will the code print 4?", "no", "No"),
]


def check_mme(res: dict) -> None:
    # existence: acc 3/4, acc+ 1/2 -> 125; artwork: 2/2, 1/1 -> 200; code: 1/2, 0/1 -> 50
    assert res["per_subtask"]["existence"]["score"] == pytest.approx(125.0)
    assert res["perception"] == pytest.approx(325.0) and res["cognition"] == pytest.approx(50.0)
    assert res["meta"]["num_missing"] == 0


def test_mme_llava_answers_jsonl(mme_dir, tmp_path):  # noqa: F811 (fixture imported above)
    rows = [{"question_id": qid, "prompt": f"{q}\n{SHORT}", "text": a} for qid, q, a, _ in MME_ANSWERS]
    check_mme(score("mme", mme_dir, write_jsonl(tmp_path / "MGM-2B.jsonl", rows)))


def test_mme_answer_txt_folder(mme_dir, tmp_path):  # noqa: F811 (fixture imported above)
    folder = tmp_path / "eval_tool" / "answers" / "MGM-2B"
    folder.mkdir(parents=True)
    by_task: dict[str, list[str]] = {}
    for qid, q, a, gt in MME_ANSWERS:
        stem = qid.split("/")[-1].split(".")[0]
        spaces = "  " if q.endswith("Y?") else " "  # the release's double space kept in the txt
        by_task.setdefault(qid.split("/")[0], []).append(f"{stem}.txt\t{q}{spaces}Please answer yes or no.\t{gt}\t{a}")
    for task, lines in by_task.items():
        (folder / f"{task}.txt").write_text("\n".join(lines) + "\n")
    res = score("mme", mme_dir, folder)
    check_mme(res)
    assert res["meta"]["answers_format"].startswith("convert_answer_to_mme.py")
    (folder / "existence.txt").write_text(f"img1.txt\tIs there a dog in this image?{YN}\tYes\n")
    with pytest.raises(AnswerFileError, match=r"existence\.txt:1: expected 4 tab-separated fields"):
        score("mme", mme_dir, folder)


# ---- ScienceQA: model_vqa_science answers and eval_science_qa result JSON ------------------------

def test_scienceqa_official_files(sqa_dir, tmp_path):  # noqa: F811 (fixture imported above)
    texts = {"1": "B", "2": "A. cat", "3": "A", "4": "B"}  # 3 has no image (outside the IMG subset)
    rows = [{"question_id": pid, "prompt": ("<image>\n" if pid != "3" else "") + "Question", "text": t}
            for pid, t in texts.items()]
    res = score("scienceqa", sqa_dir, write_jsonl(tmp_path / "sqa.jsonl", rows))
    # IMG: 1 "B" = dog right; 2 "A. " -> A = cat right; 4 "B" != A wrong -> 2 / 3
    assert res["accuracy"] == pytest.approx(200 / 3) and res["meta"]["unknown_ids"] == ["3"]
    result = write_json(tmp_path / "sqa_result.json", {"acc": 50.0, "correct": 2, "count": 4,
                                                        "results": {}, "outputs": texts})
    assert score("scienceqa", sqa_dir, result)["accuracy"] == pytest.approx(200 / 3)


# ---- MMBench: an option whose text is "None" is an option ----------------------------------------

def mmbench_none_dir(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    nan = float("nan")
    rows, preds = [], {}
    specs = ([(["a", "b", "c"], "A", "A")] * 5 + [(["a", "b"], "A", "B")] * 3
             + [(["yes", "no", "None"], "C", "C"), (["cat", "None", "dog"], "B", "B")])
    for i, (options, answer, pred) in enumerate(specs, 1):
        cells = dict(zip("ABCD", options + [nan] * (4 - len(options))))
        rows.append({"index": i, "question": f"Q{i}?", "hint": nan, **cells, "answer": answer,
                     "category": "c", "l2-category": "l", "image": "aW1n", "source": "s", "comment": nan})
        preds[i] = pred
    root = tmp_path / "mmbench"
    root.mkdir()
    pd.DataFrame(rows).to_csv(root / "mmbench_dev_20230712.tsv", sep="\t", index=False)
    return root, preds


def test_mmbench_none_option_is_real(tmp_path):
    root, preds = mmbench_none_dir(tmp_path)
    rows = [{"question_id": i, "round_id": 0, "prompt": "p", "text": t, "options": [], "option_char": []}
            for i, t in preds.items()]
    res = score("mmbench", root, write_jsonl(tmp_path / "MGM-34B.jsonl", rows))
    # 5 right + 3 wrong + Q9 "C" (= "None") right + Q10 "B" (= "None") right -> 7 / 10
    assert res["accuracy"] == pytest.approx(70.0)
    from minigemini.eval.benchmarks.mmbench import MMBench

    items = {it.question_id: it.prompt for it in MMBench(root, image_cache_dir=str(tmp_path / "c")).items()}
    assert items[9].endswith("Q9?\nA. yes\nB. no\nAnswer with the option's letter from the given choices directly.")
    assert "B. None" not in items[10]  # the prompt drops it as MGM's model_vqa_mmbench.py (is_none)


def test_mmbench_upload_table(tmp_path):
    root, preds = mmbench_none_dir(tmp_path)
    table = pd.DataFrame({"index": list(preds), "question": "q", "A": "a", "B": "b", "C": "c", "D": "",
                          "answer": "A", "prediction": list(preds.values())})
    table.loc[0, "prediction"] = ""  # an unanswered question
    table.to_csv(tmp_path / "upload.tsv", sep="\t", index=False)
    res = score("mmbench", root, tmp_path / "upload.tsv")
    assert res["accuracy"] == pytest.approx(60.0)  # Q1 now missing -> 6 / 10
    assert res["meta"]["missing_ids"] == [1]


# ---- MMMU: MGM run_llava.py JSONL (parsed_pred) and the MMMU output JSON --------------------------

@pytest.fixture
def mmmu_dir(tmp_path):
    root = tmp_path / "mmmu"
    write_json(root / "validation.json", MMMU_SAMPLES)
    return root


def test_mmmu_mgm_jsonl_scored_on_parsed_pred(mmmu_dir, tmp_path):
    parsed = {"validation_Math_1": ("xyz", "B"), "validation_Math_2": ("3.5", [3.5]),
              "validation_Art_Theory_3": ("C", "A"), "validation_Physics_4": ("12 m/s", ["12 m/s", 12.0]),
              "validation_Physics_5": ("A", "A"), "validation_Art_Theory_6": ("A", "B")}
    rows = [{"id": s["id"], "question_type": s["question_type"], "answer": s["answer"], "response": parsed[s["id"]][0],
             "parsed_pred": parsed[s["id"]][1]} for s in MMMU_SAMPLES]
    res = score("mmmu", mmmu_dir, write_jsonl(tmp_path / "merge.jsonl", rows))
    # right: Math_1 (B), Math_2 (3.5), Physics_5 (A); wrong: Art_3 (A != C), Physics_4, Art_6 -> 3 / 6
    assert res["accuracy"] == pytest.approx(50.0) and res["num_unparsed_multiple_choice"] == 0


def test_mmmu_output_json(mmmu_dir, tmp_path):
    out = write_json(tmp_path / "total_val_output.json", {
        "validation_Math_1": "B", "validation_Math_2": "3.5", "validation_Art_Theory_3": "C",
        "validation_Physics_4": "10", "validation_Physics_5": "(A)", "validation_Art_Theory_6": "A"})
    # multiple choice compared as is: "(A)" != "A" wrong; the open ones parse to 3.5 and 10.0: right -> 5 / 6
    assert score("mmmu", mmmu_dir, out)["accuracy"] == pytest.approx(500 / 6)


# ---- MathVista: model_math_vista JSONL and extract_answer.py output ---------------------------------

def test_mathvista_mgm_jsonl(mv_dir, tmp_path):  # noqa: F811 (fixture imported above)
    responses = {"1": "(B) 4", "2": "The answer is 7.", "3": "2.50", "4": "about 1.3", "5": "bleu", "6": "3"}
    rows = [{**p, "query": p["query"], "response": responses[pid]} for pid, p in PROBLEMS.items()]
    res = score("mathvista", mv_dir, write_jsonl(tmp_path / "merge.jsonl", rows))
    assert res["accuracy"] == pytest.approx(500 / 6)  # only 4 ("1.3" != "1.25") wrong


def test_mathvista_single_line_jsonl(mv_dir, tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{**PROBLEMS["2"], "response": "7"}])
    res = score("mathvista", mv_dir, path, subset="answered")
    assert res["accuracy"] == 100.0 and res["meta"]["answers_format"].startswith("MGM model_math_vista")


def test_mathvista_extracted_json_uses_extraction(mv_dir, tmp_path):  # noqa: F811 (fixture imported above)
    extraction = {"1": "B", "2": "7", "3": "2.50", "4": "1.3", "5": "red", "6": ""}
    doc = {pid: {**p, "response": "blue" if pid == "5" else "x", "extraction": extraction[pid]}
           for pid, p in PROBLEMS.items()}
    path = tmp_path / "merge.jsonl"  # MGM's script writes the JSON document over the .jsonl
    path.write_text(json.dumps(doc, indent=2))
    # B -> "4" right; 7 right; round(2.50, 1) = 2.5 right; 1.3 wrong; "red" wrong; "" -> None wrong
    assert score("mathvista", mv_dir, path)["accuracy"] == pytest.approx(50.0)


# ---- MM-Vet: model_vqa JSONL with integer ids and the official results JSON ----------------------

def test_mmvet_official_files(mmvet_dir, tmp_path):  # noqa: F811 (fixture imported above)
    rows = [{"question_id": k, "prompt": "q", "text": t} for k, t in enumerate(["14", "cat", "Monet"])]
    res = score("mmvet", mmvet_dir, write_jsonl(tmp_path / "merge.jsonl", rows), out_dir=tmp_path / "o1")
    assert "status" in res and res["meta"]["num_missing"] == 0
    official = {"v1_0": "14", "v1_1": "cat", "v1_2": "Monet"}
    assert json.loads((tmp_path / "o1" / "mmvet_submission.json").read_text()) == official
    res = score("mmvet", mmvet_dir, write_json(tmp_path / "MGM-7B.json", official))
    assert res["meta"]["num_answered"] == 3 and res["meta"]["answers_format"].startswith("official MM-Vet")


# ---- files no format fits --------------------------------------------------------------------------

def test_unrecognised_file_names_the_formats(tmp_path):
    root = make_textvqa(tmp_path)
    bad = write_json(tmp_path / "bad.json", {"accuracy": 1})
    with pytest.raises(AnswerFileError, match=r"bad\.json: not a textvqa answers file; expected one of: "
                                              r"\(1\) answers JSONL.*\(2\) MGM/LLaVA model_vqa_loader"):
        score("textvqa", root, bad)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{"question_id": 1, "text": "a"}\nnot json\n')
    with pytest.raises(AnswerFileError, match=r"garbage\.jsonl:2: neither a JSON document nor JSON lines"):
        score("textvqa", root, garbage)


def test_empty_answers_file_scores_every_question_as_missing(tmp_path):
    root = make_textvqa(tmp_path)
    (tmp_path / "empty.jsonl").write_text("")
    res = score("textvqa", root, tmp_path / "empty.jsonl")
    assert res["accuracy"] == 0.0 and res["meta"]["num_missing"] == 4  # listed, not silent


def test_ids_from_another_benchmark_are_an_error_not_zero(tmp_path):
    root = make_textvqa(tmp_path)
    other = write_jsonl(tmp_path / "gqa.jsonl", [{"question_id": "20240001", "text": "yes"}])
    with pytest.raises(AnswerFileError, match=r"none of its 1 question ids .* is a textvqa question"):
        score("textvqa", root, other)


def test_cli_reports_bad_file_in_one_line(tmp_path, capsys):
    from minigemini.cli import main

    root = make_textvqa(tmp_path)
    bad = write_json(tmp_path / "bad.json", [1, 2])
    assert main(["eval", "--benchmark", "textvqa", "--data-dir", str(root), "--predictions", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigemini eval: error: ") and "bad.json: not a textvqa answers file" in err
    assert len(err.splitlines()) == 1  # the message, ending with the traceback hint
