"""MMBench circular evaluation on a TSV with circular copies (index + k * 1e6)."""

import base64
from pathlib import Path

import pandas as pd
import pytest

from minigemini.eval.benchmarks.mmbench import MMBench, infer_option

IMG = base64.b64encode(b"\x89PNG fake image bytes").decode()
NAN = float("nan")


def row(index, question, options, answer, category, l2, hint=NAN, image=IMG):
    opts = dict(zip("ABCD", options + [NAN] * (4 - len(options))))
    return {"index": index, "question": question, "hint": hint, **opts, "answer": answer,
            "category": category, "image": image, "source": "src", "l2-category": l2,
            "comment": NAN, "split": "dev"}


def make_mmbench(tmp_path: Path) -> Path:
    root = tmp_path / "mmbench"
    root.mkdir()
    rows = [
        row(1, "What color is the sky?", ["blue", "red", "green"], "A", "color", "attr"),
        row(1000001, "What color is the sky?", ["red", "green", "blue"], "C", "color", "attr",
            image="1"),  # image given by reference to the base row, as in VLMEvalKit TSVs
        row(2000001, "What color is the sky?", ["green", "blue", "red"], "B", "color", "attr"),
        row(2, "How many cats?", ["1", "2"], "B", "count", "fine", hint="Look closely."),
        row(1000002, "How many cats?", ["2", "1"], "A", "count", "fine", hint="Look closely."),
        row(3, "Which animal?", ["dog", "cat"], "B", "color", "attr"),
        row(4, "Question four?", ["yes", "no"], "A", "count", "fine"),
    ]
    pd.DataFrame(rows).to_csv(root / "mmbench_dev_20230712.tsv", sep="\t", index=False)
    return root


def test_infer_option():
    choices = {"A": "dog", "B": "cat", "C": "bird"}
    assert infer_option("B", choices) == "B"
    assert infer_option("C. bird", choices) == "C"
    assert infer_option("The answer is (A).", choices) == "A"
    assert infer_option("It is a cat", choices) == "B"       # lower-case "a" is no letter
    assert infer_option("A or B", choices) is None           # two letters, no option text
    assert infer_option("Cannot determine the answer", choices) == "Z"
    assert infer_option("no idea", choices) is None


def test_items_prompt_and_images(tmp_path):
    bench = MMBench(make_mmbench(tmp_path), image_cache_dir=str(tmp_path / "cache"))
    items = bench.items()
    assert [it.question_id for it in items] == [1, 1000001, 2000001, 2, 1000002, 3, 4]
    assert items[3].prompt == ("<image>\nLook closely.\nHow many cats?\nA. 1\nB. 2\n"
                               "Answer with the option's letter from the given choices directly.")
    assert Path(items[1].image_paths[0]).read_bytes() == base64.b64decode(IMG)
    assert items[1].meta["base_index"] == 1


def test_circular_score_hand_computed(tmp_path):
    bench = MMBench(make_mmbench(tmp_path))
    answers = {
        1: "A", 1000001: "C. blue", 2000001: "The answer is B",  # all 3 rotations right
        2: "B", 1000002: "B",        # 2nd rotation wrong -> whole question 2 wrong
        3: "It is a cat",            # option text match -> B, right (single row)
        # 4 missing -> wrong
    }
    res = bench.score(answers)
    # base questions 1 and 3 right, 2 and 4 wrong -> 2 / 4
    assert res["accuracy"] == pytest.approx(50.0)
    assert res["per_category"] == pytest.approx({"color": 100.0, "count": 0.0})
    assert res["per_l2_category"] == pytest.approx({"attr": 100.0, "fine": 0.0})
    assert res["num_questions"] == 4 and res["num_rows"] == 7
    # with question 2's rotation fixed, 3 / 4
    assert bench.score({**answers, 1000002: "A"})["accuracy"] == pytest.approx(75.0)


def test_submission_tsv(tmp_path):
    bench = MMBench(make_mmbench(tmp_path))
    paths = bench.write_submission({1: "A", 2: "B"}, tmp_path)
    sub = pd.read_table(paths[0])
    assert "prediction" in sub.columns and "image" not in sub.columns
    assert sub.set_index("index").loc[2, "prediction"] == "B"
    assert pd.isna(sub.set_index("index").loc[3, "prediction"])
