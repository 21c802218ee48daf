"""MME acc / acc+ / totals on a fixture in the release layout (flat and nested subtasks)."""

import pytest

from minigemini.eval.benchmarks import BenchmarkDataError
from minigemini.eval.benchmarks.mme import MME, mme_parse

YN = " Please answer yes or no."


def write_pair(qa_dir, img_dir, stem, ext, lines):
    qa_dir.mkdir(parents=True, exist_ok=True)
    img_dir.mkdir(parents=True, exist_ok=True)
    (img_dir / f"{stem}{ext}").write_bytes(b"fake image")
    (qa_dir / f"{stem}.txt").write_text("\n".join(f"{q}\t{a}" for q, a in lines) + "\n")


@pytest.fixture
def mme_dir(tmp_path):
    root = tmp_path / "MME"
    rel = root / "MME_Benchmark_release_version"
    ex = rel / "existence"  # flat layout
    write_pair(ex, ex, "img1", ".jpg", [(f"Is there a dog in this image?{YN}", "Yes"),
                                        (f"Is there a cat in this image?{YN}", "No")])
    write_pair(ex, ex, "img2", ".png", [(f"Is there a car in this image?{YN}", "Yes"),
                                        (f"Is there a bus in this image?{YN}", "No")])
    art = rel / "artwork"  # nested layout
    write_pair(art / "questions_answers_YN", art / "images", "a1", ".jpg",
               [(f"Is this artwork created by X?{YN}", "Yes"),
                (f"Is this artwork created by Y? {YN}", "No")])  # double space as in MME
    code = rel / "code_reasoning"
    write_pair(code, code, "c1", ".png", [(f"Will the code print 3?{YN}", "Yes"),
                                          (f"Will the code print 4?{YN}", "No")])
    return root


def test_parse():
    assert mme_parse("Yes") == "yes"
    assert mme_parse("No, it is not.") == "no"
    assert mme_parse("Not sure") == "no"             # "no" inside the first 4 characters
    assert mme_parse("The answer is yes") == "other"  # nothing in the first 4 characters


def test_items(mme_dir):
    items = MME(mme_dir).items()
    ids = [it.question_id for it in items]
    assert ids[:3] == ["existence/img1.jpg#0", "existence/img1.jpg#1", "existence/img2.png#0"]
    assert len(items) == 8
    assert items[0].prompt == ("<image>\nIs there a dog in this image?\n"
                               "Answer the question using a single word or phrase.")
    art = next(it for it in items if it.question_id == "artwork/a1.jpg#1")
    assert art.prompt.splitlines()[1] == "Is this artwork created by Y?"
    assert art.image_paths[0].endswith("artwork/images/a1.jpg")
    orig = MME(mme_dir, prompt_style="original").items()
    assert orig[0].prompt == f"<image>\nIs there a dog in this image?{YN}"


def test_score_hand_computed(mme_dir):
    answers = {
        "existence/img1.jpg#0": "Yes", "existence/img1.jpg#1": "No",           # both right
        "existence/img2.png#0": "yes", "existence/img2.png#1": "Yes, there is",  # 2nd wrong
        "artwork/a1.jpg#0": "No", "artwork/a1.jpg#1": "no",                    # 1st wrong
        "code_reasoning/c1.png#0": "The answer is yes",  # parsed "other" -> wrong
        # code_reasoning/c1.png#1 missing -> wrong
    }
    res = MME(mme_dir).score(answers)
    sub = res["per_subtask"]
    # existence: 3/4 questions -> acc 75; images both-right 1/2 -> acc+ 50; score 125
    assert sub["existence"]["acc"] == pytest.approx(75)
    assert sub["existence"]["acc_plus"] == pytest.approx(50)
    assert sub["existence"]["score"] == pytest.approx(125)
    # artwork: acc 1/2 = 50, acc+ 0/1 = 0 -> 50 ; code_reasoning: 0 + 0 -> 0
    assert sub["artwork"]["score"] == pytest.approx(50)
    assert sub["code_reasoning"]["score"] == pytest.approx(0)
    assert res["perception"] == pytest.approx(125 + 50)
    assert res["cognition"] == pytest.approx(0)
    assert "count" in res["subtasks_missing"] and "artwork" not in res["subtasks_missing"]


def test_data_dir_may_be_release_folder_and_errors(mme_dir, tmp_path):
    assert len(MME(mme_dir / "MME_Benchmark_release_version").items()) == 8
    (tmp_path / "nothing").mkdir()
    with pytest.raises(BenchmarkDataError, match="MME_Benchmark_release_version"):
        MME(tmp_path / "nothing").items()
