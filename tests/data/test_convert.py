"""`minigemini prep convert`: table / caption folder / HF dataset -> LLaVA JSON that validates and loads."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from minigemini.cli import main
from minigemini.data.dataset import LazySupervisedDataset


def _validate(path, image_folder, model_dir) -> int:
    folder = ["--image-folder", str(image_folder)] if image_folder else []
    return main(["prep", "validate", str(path), *folder, "--tokenizer", str(model_dir), "--no-progress"])


def test_csv_round_trip(tmp_path, tiny_model_dir, tiny_processor):
    images = tmp_path / "imgs"
    images.mkdir()
    Image.new("RGB", (32, 24), (255, 0, 0)).save(images / "r.png")
    with (tmp_path / "qa.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "file", "q", "a"])
        w.writerow(["x1", "r.png", "What colour is it?", "Red."])
        w.writerow(["x2", "", "Say hello.", "Hello!"])  # text-only row
    out = tmp_path / "qa.json"
    assert main(["prep", "convert", str(tmp_path / "qa.csv"), str(out), "--id-column", "uid", "--image-column",
                 "file", "--question-column", "q", "--answer-column", "a", "--image-folder", str(images),
                 "--no-progress"]) == 0
    records = json.loads(out.read_text())
    assert records == [
        {"id": "x1", "image": "imgs/r.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"},
                                                         {"from": "gpt", "value": "Red."}]},
        {"id": "x2", "conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "Hello!"}]}]
    assert _validate(out, None, tiny_model_dir) == 0  # paths are relative to the output's folder: no folder needed
    ds = LazySupervisedDataset(str(out), tiny_processor, image_folder=tmp_path, on_error="raise")
    assert ds[0]["images"].shape == (1, 3, 56, 56) and "images" not in ds[1]


def test_caption_folder(tmp_path, tiny_model_dir, tiny_processor, capsys):
    folder = tmp_path / "caps"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 20), (0, 255, 0)).save(folder / "a.jpg")
    (folder / "a.txt").write_text("A green square.\n")
    Image.new("RGB", (20, 20)).save(folder / "sub" / "b.png")
    (folder / "sub" / "b.txt").write_text("Black.")
    Image.new("RGB", (20, 20)).save(folder / "nocap.png")
    out = tmp_path / "caps.json"
    assert main(["prep", "convert", str(folder), str(out), "--prompt", "Caption this.", "--no-progress"]) == 1
    assert "nocap.png: no caption file nocap.txt" in capsys.readouterr().err
    records = json.loads(out.read_text())
    assert [(r["id"], r["image"], r["conversations"][0]["value"], r["conversations"][1]["value"]) for r in records] \
        == [("a", "caps/a.jpg", "<image>\nCaption this.", "A green square."),
            ("sub/b", "caps/sub/b.png", "<image>\nCaption this.", "Black.")]
    assert _validate(out, None, tiny_model_dir) == 0
    ds = LazySupervisedDataset(str(out), tiny_processor, template="plain", image_folder=tmp_path, on_error="raise")
    sup = [t for t in ds[0]["labels"].tolist() if t != -100]
    assert tiny_processor.decode(sup, skip_special_tokens=False) == "A green square.\n"  # plain: caption + "\\n"


def test_hf_dataset_with_embedded_images(tmp_path, tiny_model_dir, tiny_processor):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"picture": [Image.new("RGB", (24, 24), (0, 0, 255)), Image.new("RGB", (30, 20), (9, 9, 9))],
         "prompt": ["Colour?", "Brightness?"], "response": ["Blue.", "Dark."]},
        features=datasets.Features({"picture": datasets.Image(), "prompt": datasets.Value("string"),
                                    "response": datasets.Value("string")}))
    ds.save_to_disk(str(tmp_path / "hf"))
    ds.to_parquet(str(tmp_path / "hf.parquet"))
    for src in ("hf", "hf.parquet"):
        out = tmp_path / f"{src}.json"
        assert main(["prep", "convert", str(tmp_path / src), str(out), "--image-column", "picture",
                     "--question-column", "prompt", "--answer-column", "response", "--images-out",
                     str(tmp_path / f"{src}_images"), "--no-progress"]) == 0
        records = json.loads(out.read_text())
        assert [r["image"] for r in records] == [f"{src}_images/00000000_0.png", f"{src}_images/00000001_1.png"]
        assert Image.open(tmp_path / f"{src}_images" / "00000000_0.png").getpixel((0, 0)) == (0, 0, 255)
        assert _validate(out, tmp_path, tiny_model_dir) == 0
        loaded = LazySupervisedDataset(str(out), tiny_processor, image_folder=tmp_path, on_error="raise")
        assert loaded[1]["images_aux"].shape == (1, 3, 128, 128)


def test_rows_without_text_are_reported(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "b.png")
    (tmp_path / "t.jsonl").write_text('{"image": "a.png"}\n{"image": "b.png", "caption": "B."}\n{oops\n')
    assert main(["prep", "convert", str(tmp_path / "t.jsonl"), str(tmp_path / "o.json"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "3 rows" not in err and "2 rows NOT converted" in err
    assert "row 0: no text" in err and "row 2: line 3: malformed JSON" in err
    assert len(json.loads((tmp_path / "o.json").read_text())) == 1


def _qa_csv(tmp_path, rows=(("r.png", "What colour?", "Red."),)):
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "r.png")
    with (tmp_path / "qa.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "q", "a", "note"])
        for row in rows:
            w.writerow([*row, "x"])
    return tmp_path / "qa.csv"


@pytest.mark.parametrize("options, message", [
    (["--image-column", "picture", "--question-column", "q", "--answer-column", "a"],
     "no column 'picture' (--image-column) in {src} has columns ['file', 'q', 'a', 'note']"),
    (["--image-column", "file", "--question-column", "question_text", "--answer-column", "a"],
     "no column 'question_text' (--question-column)"),
    (["--image-column", "file", "--question-column", "q", "--answer-column", "ans"], "no column 'ans'"),
    (["--image-column", "file", "--question-column", "q", "--answer-column", "a", "--id-column", "uid"],
     "no column 'uid' (--id-column)"),
    (["--question-column", "q", "--answer-column", "a"],  # the default 'image' column is absent too
     "no image column 'image' in {src} has columns ['file', 'q', 'a', 'note']: pass --image-column NAME, or "
     "--text-only"),
    (["--image-column", "file"], "no text columns in {src} has columns ['file', 'q', 'a', 'note']"),
])
def test_unknown_columns_are_refused_and_nothing_written(tmp_path, capsys, options, message):
    src = _qa_csv(tmp_path)
    out = tmp_path / "out.json"
    assert main(["prep", "convert", str(src), str(out), *options, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message.format(src=src) in err and "Traceback" not in err
    assert not out.exists()


def test_missing_image_file_is_a_problem_not_a_text_only_record(tmp_path, capsys):
    src = _qa_csv(tmp_path, rows=(("r.png", "Q1?", "A1."), ("gone.png", "Q2?", "A2."), ("", "Q3?", "A3.")))
    out = tmp_path / "sub" / "out.json"
    code = main(["prep", "convert", str(src), str(out), "--image-column", "file", "--question-column", "q",
                 "--answer-column", "a", "--no-progress"])
    cap = capsys.readouterr()
    assert code == 1
    assert f"row 1: image file not found: {tmp_path / 'gone.png'} (relative paths are read from {tmp_path}" in cap.err
    records = json.loads(out.read_text())
    assert [(r["id"], r.get("image")) for r in records] == [("0", "../r.png"), ("2", None)]
    assert "wrote 2 records" in cap.out and "1 records without an image" in cap.out
    assert f"image paths are relative to {out.parent.resolve()}" in cap.out and "columns not used: note" in cap.out


def test_text_only_and_no_row_converted(tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text('{"q": "Hi?", "a": "Hello."}\n')
    out = tmp_path / "o.json"
    assert main(["prep", "convert", str(tmp_path / "t.jsonl"), str(out), "--text-only", "--question-column", "q",
                 "--answer-column", "a", "--no-progress"]) == 0
    assert json.loads(out.read_text()) == [{"id": "0", "conversations": [{"from": "human", "value": "Hi?"},
                                                                         {"from": "gpt", "value": "Hello."}]}]
    (tmp_path / "e.jsonl").write_text('{"q": "", "a": "Hello."}\n')
    assert main(["prep", "convert", str(tmp_path / "e.jsonl"), str(tmp_path / "e.json"), "--text-only",
                 "--question-column", "q", "--answer-column", "a", "--no-progress"]) == 2
    assert "no row of" in capsys.readouterr().err and not (tmp_path / "e.json").exists()
