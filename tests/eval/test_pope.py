"""POPE per-split metrics on a hand-built fixture (label files + LLaVA question file)."""

import pytest

from minigemini.eval.benchmarks.pope import POPE, pope_parse

from .conftest import write_jsonl

LABELS = {
    "random": [("r1.jpg", "Is there a dog in the image?", "yes"),
               ("r2.jpg", "Is there a cat in the image?", "yes"),
               ("r3.jpg", "Is there a car in the image?", "no"),
               ("r4.jpg", "Is there a bus in the image?", "no")],
    "popular": [("p1.jpg", "Is there a chair in the image?", "yes"),
                ("p2.jpg", "Is there a table in the image?", "no")],
    "adversarial": [("a1.jpg", "Is there a bench in the image?", "no"),
                    ("a2.jpg", "Is there a person in the image?", "yes")],
}


def make_pope(tmp_path, with_llava=True):
    root = tmp_path / "pope"
    qrows, qid = [], 0
    for split, rows in LABELS.items():
        write_jsonl(root / "coco" / f"coco_pope_{split}.json",
                    [{"question_id": i + 1, "image": im, "text": t, "label": lab}
                     for i, (im, t, lab) in enumerate(rows)])
        for im, t, _ in reversed(rows):  # question file order differs from the label files
            qid += 1
            qrows.append({"question_id": qid, "image": im, "category": split,
                          "text": f"{t}\nAnswer the question using a single word or phrase."})
    if with_llava:
        write_jsonl(root / "llava_pope_test.jsonl", qrows)
    return root, {(r["category"], r["image"]): r["question_id"] for r in qrows}


def test_parse_like_llava():
    assert pope_parse("Yes, there is a dog.") == "yes"
    assert pope_parse("No.") == "no"
    assert pope_parse("There is not a cat. But no...") == "no"
    assert pope_parse("Nothing.") == "yes"     # upstream only looks for the words no/No/not
    assert pope_parse("Not really") == "yes"   # "Not" (capitalised) is not in upstream's list


def test_score_hand_computed(tmp_path):
    root, qid = make_pope(tmp_path)
    answers = {
        qid["random", "r1.jpg"]: "Yes, there is a dog.",  # TP
        qid["random", "r2.jpg"]: "No.",                   # FN
        qid["random", "r3.jpg"]: "There is not a car.",   # TN
        qid["random", "r4.jpg"]: "yes",                   # FP
        qid["popular", "p1.jpg"]: "Yes",                  # TP ; p2 (label no) missing -> FP
        qid["adversarial", "a1.jpg"]: "No, there is no bench",  # TN
        qid["adversarial", "a2.jpg"]: "Yes it is.",             # TP
    }
    res = POPE(root).score(answers)
    # random: TP=FN=TN=FP=1 -> acc 50, P 50, R 50, F1 50, yes 50
    assert res["per_split"]["random"] == pytest.approx(
        {"accuracy": 50, "precision": 50, "recall": 50, "f1": 50, "yes_ratio": 50,
         "num_questions": 4})
    # popular: TP=1, FP=1 -> acc 50, P 50, R 100, F1 2*.5*1/1.5 = 66.67, yes 100
    assert res["per_split"]["popular"] == pytest.approx(
        {"accuracy": 50, "precision": 50, "recall": 100, "f1": 200 / 3, "yes_ratio": 100,
         "num_questions": 2})
    # adversarial: TN=1, TP=1 -> everything 100, yes 50
    assert res["per_split"]["adversarial"]["f1"] == pytest.approx(100)
    # top level = mean over the 3 splits
    assert res["accuracy"] == pytest.approx((50 + 50 + 100) / 3)
    assert res["f1"] == pytest.approx((50 + 200 / 3 + 100) / 3)
    assert res["recall"] == pytest.approx((50 + 100 + 100) / 3)
    assert res["yes_ratio"] == pytest.approx((50 + 100 + 50) / 3)
    assert res["num_questions"] == 8


def test_items_with_and_without_llava_file(tmp_path):
    root, qid = make_pope(tmp_path)
    items = POPE(root).items()
    assert len(items) == 8 and items[0].meta["split"] == "random"
    assert items[0].image_paths[0].endswith("val2014/r4.jpg")
    (root / "llava_pope_test.jsonl").unlink()
    items = POPE(root).items()
    assert items[0].question_id == "adversarial_1"  # label files in the default split order
    assert items[0].prompt == ("<image>\nIs there a bench in the image?\n"
                               "Answer the question using a single word or phrase.")
