"""`minigemini prep convert`: table / caption folder / HF dataset -> LLaVA JSON that validates and loads."""

from __future__ import annotations

import csv
import json

from PIL import Image

from minigemini.cli import main
from minigemini.data.dataset import LazySupervisedDataset


def _validate(path, image_folder, model_dir) -> int:
    return main(["prep", "validate", str(path), "--image-folder", str(image_folder), "--tokenizer", str(model_dir),
                 "--no-progress"])


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
                 "file", "--question-column", "q", "--answer-column", "a", "--no-progress"]) == 0
    records = json.loads(out.read_text())
    assert records == [
        {"id": "x1", "image": "r.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour is it?"},
                                                         {"from": "gpt", "value": "Red."}]},
        {"id": "x2", "conversations": [{"from": "human", "value": "Say hello."}, {"from": "gpt", "value": "Hello!"}]}]
    assert _validate(out, images, tiny_model_dir) == 0
    ds = LazySupervisedDataset(str(out), tiny_processor, image_folder=images, on_error="raise")
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
        == [("a", "a.jpg", "<image>\nCaption this.", "A green square."), ("sub/b", "sub/b.png",
                                                                           "<image>\nCaption this.", "Black.")]
    assert _validate(out, folder, tiny_model_dir) == 0
    ds = LazySupervisedDataset(str(out), tiny_processor, template="plain", image_folder=folder, on_error="raise")
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
        assert [r["image"] for r in records] == ["00000000_0.png", "00000001_1.png"]
        assert Image.open(tmp_path / f"{src}_images" / "00000000_0.png").getpixel((0, 0)) == (0, 0, 255)
        assert _validate(out, tmp_path / f"{src}_images", tiny_model_dir) == 0
        loaded = LazySupervisedDataset(str(out), tiny_processor, image_folder=tmp_path / f"{src}_images",
                                       on_error="raise")
        assert loaded[1]["images_aux"].shape == (1, 3, 128, 128)


def test_rows_without_text_are_reported(tmp_path, capsys):
    (tmp_path / "t.jsonl").write_text('{"image": "a.png"}\n{"image": "b.png", "caption": "B."}\n{oops\n')
    assert main(["prep", "convert", str(tmp_path / "t.jsonl"), str(tmp_path / "o.json"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "3 rows" not in err and "2 rows NOT converted" in err
    assert "row 0: no text" in err and "row 2: line 3: malformed JSON" in err
    assert len(json.loads((tmp_path / "o.json").read_text())) == 1
