"""LazySupervisedDataset: sources, <image> placement, images, lengths, truncation, bad-data policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from minigemini.data.dataset import LazySupervisedDataset, SampleError, place_image_tokens
from minigemini.data.records import RecordError
from minigemini.data.templates import IGNORE_INDEX
from minigemini.model.processing import load_image

MGM = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "mgm_reference" / "tiny_a"


def _rec(rid, image=None, *texts):
    rec = {"id": rid, "conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": t}
                                        for i, t in enumerate(texts)]}
    if image is not None:
        rec["image"] = image
    return rec


@pytest.mark.skipif(not (MGM / "inputs.safetensors").exists(), reason="MGM fixture missing")
def test_mgm_fixture_through_the_dataset(tiny_processor):
    ds = LazySupervisedDataset(str(MGM / "data.json"), tiny_processor, template="vicuna_v1",
                               image_folder=MGM / "images", on_error="raise")
    ref = load_file(str(MGM / "inputs.safetensors"))
    for row in range(2):
        item = ds[row]
        mask = ref["attention_mask"][row]
        ids, labels = ref["input_ids"][row][mask].tolist(), ref["labels"][row][mask].tolist()
        at = ids.index(-200)  # sample0 writes <image> last: moved to the front as MGM does
        assert item["input_ids"].tolist() == ids[:at] + [512] * 16 + ids[at + 1:]
        assert item["labels"].tolist() == labels[:at] + [IGNORE_INDEX] * 16 + labels[at + 1:]
        assert item["sample_id"] == f"sample{row}"
        torch.testing.assert_close(item["images_aux"][0], ref["images_aux"][row], atol=1e-5, rtol=0)
        torch.testing.assert_close(item["images"][0], ref["images"][row], atol=1e-5, rtol=0)
    assert ds.lengths == [6 + 11 + 16, 3 + 2 + 5 + 4 + 16]  # words (placeholders aside) + 16 image tokens
    assert ds.modality_lengths == ds.lengths


def test_text_only_multi_image_and_placement(tmp_path, tiny_processor, image_file):
    image_file(tmp_path / "a.png")
    image_file(tmp_path / "b.png", color=(0, 0, 255))
    records = [_rec("t", None, "hello there", "hi"),
               _rec("two", ["a.png", "b.png"], "<image> left, <image> right: same?", "no"),
               _rec("noimg-token", "a.png", "What is it?", "red")]
    ds = LazySupervisedDataset(records, tiny_processor, image_folder=tmp_path, on_error="raise")
    text = ds[0]
    assert "images" not in text and "images_aux" not in text and text["sample_id"] == "t"
    two = ds[1]
    assert two["images"].shape == (2, 3, 56, 56) and two["images_aux"].shape == (2, 3, 128, 128)
    assert two["input_ids"].tolist().count(tiny_processor.image_token_id) == 32
    assert not torch.equal(two["images"][0], two["images"][1])
    # no <image> in the text: "<image>\n" is prepended to the first user turn
    assert tiny_processor.decode(ds[2]["input_ids"], skip_special_tokens=False).count("<image>") == 16
    assert ds.modality_lengths == [-3, 4 + 32, 4 + 16]


def test_place_image_tokens_rules():
    turns = [{"from": "human", "value": "Q?\n<image>"}, {"from": "gpt", "value": "A"}]
    assert place_image_tokens(turns, 1)[0]["value"] == "<image>\nQ?"
    assert place_image_tokens(turns, 1, move_to_front=False)[0]["value"] == "Q?\n<image>"
    assert place_image_tokens([{"from": "human", "value": "Q"}], 2)[0]["value"] == "<image>\n<image>\nQ"
    with pytest.raises(RecordError, match=r"sample 's3' has 1 <image> placeholder\(s\) but 2 image") as err:
        place_image_tokens(turns, 2, sample_id="s3")
    assert err.value.kind == "image_count_mismatch"
    with pytest.raises(RecordError, match="but 0 image"):
        place_image_tokens(turns, 0)


def test_image_modes_and_exif_through_the_dataset(tmp_path, tiny_processor):
    base = Image.new("RGB", (48, 24), (20, 120, 220))
    base.paste((250, 250, 0), (0, 0, 12, 24))  # a yellow band on the left: orientation matters
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    base.save(tmp_path / "exif.jpg", exif=exif.tobytes(), quality=100)
    rgba = Image.new("RGBA", (30, 30), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(tmp_path / "rgba.png")
    Image.new("L", (30, 20), 77).save(tmp_path / "grey.png")
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    records = [_rec(n, n, "<image>\nWhat?", "This.") for n in ("exif.jpg", "rgba.png", "grey.png", "cmyk.jpg")]
    ds = LazySupervisedDataset(records, tiny_processor, image_folder=tmp_path, on_error="raise")
    with Image.open(tmp_path / "exif.jpg") as raw:
        upright = Image.fromarray(np.asarray(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270)))
    assert upright.size == (24, 48)
    torch.testing.assert_close(ds[0]["images_aux"][0], tiny_processor.preprocess_image(upright)["images_aux"])
    white = tiny_processor.preprocess_image(Image.new("RGB", (30, 30), (255, 255, 255)))
    torch.testing.assert_close(ds[1]["images_aux"][0], white["images_aux"])
    grey = tiny_processor.preprocess_image(Image.new("RGB", (30, 20), (77, 77, 77)))
    torch.testing.assert_close(ds[2]["images_aux"][0], grey["images_aux"])
    with Image.open(tmp_path / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
        rgb = raw.convert("RGB")
    torch.testing.assert_close(ds[3]["images_aux"][0], tiny_processor.preprocess_image(rgb)["images_aux"])
    r, g, b = load_image(tmp_path / "cmyk.jpg").getpixel((10, 10))  # C0 M255 Y255 K0 = red
    assert r > 200 and g < 60 and b < 60


def test_jsonl_bad_line_skip_and_raise(tmp_path, tiny_processor):
    path = tmp_path / "d.jsonl"
    good = json.dumps(_rec("g1", None, "hi", "yo"))
    path.write_text(good + "\n{not json\n" + json.dumps(_rec("g2", None, "a", "b")) + "\n")
    ds = LazySupervisedDataset(str(path), tiny_processor)
    item = ds[1]
    assert item["sample_id"] == "g2"
    assert item["skipped"] == [{"sample_id": "1", "index": 1, "reason": f"{path} line 2: malformed JSON "
                                "(Expecting property name enclosed in double quotes)"}]
    strict = LazySupervisedDataset(str(path), tiny_processor, on_error="raise")
    with pytest.raises(SampleError) as err:
        strict[1]
    assert f"{path} line 2" in str(err.value) and "prep validate" in str(err.value)
    assert err.value.kind == "malformed_json" and err.value.index == 1


def test_missing_and_corrupt_images(tmp_path, tiny_processor, image_file):
    image_file(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    records = [_rec("m", "missing.png", "<image>\nQ", "A"), _rec("c", "broken.png", "<image>\nQ", "A"),
               _rec("ok", "ok.png", "<image>\nQ", "A")]
    ds = LazySupervisedDataset(records, tiny_processor, image_folder=tmp_path)
    item = ds[0]
    assert item["sample_id"] == "ok"
    assert [(s["sample_id"], s["index"]) for s in item["skipped"]] == [("m", 0), ("c", 1)]
    assert "image file not found" in item["skipped"][0]["reason"] and "cannot read image" in item["skipped"][1]["reason"]
    strict = LazySupervisedDataset(records, tiny_processor, image_folder=tmp_path, on_error="raise")
    with pytest.raises(SampleError, match=r"<records> record 0 \(sample 'm'\): image file not found") as err:
        strict[0]
    assert err.value.kind == "missing_image"
    with pytest.raises(SampleError) as err:
        strict[1]
    assert err.value.kind == "corrupt_image"


def test_all_bad_never_hangs(tiny_processor):
    ds = LazySupervisedDataset([_rec(f"b{i}", "nope.png", "Q", "A") for i in range(5)], tiny_processor,
                               max_consecutive_failures=3)
    with pytest.raises(SampleError, match="3 consecutive samples failed from index 4"):
        ds[4]


def test_length_rule_never_cuts_answers_or_images(tmp_path, tiny_processor, image_file):
    """Too long = skipped and reported (as `prep validate` flags it), never a silently shortened answer."""
    image_file(tmp_path / "a.png")
    long_answer = " ".join(["word"] * 60)
    records = [_rec("cut-text", "a.png", "<image>\nQ", long_answer),
               _rec("cut-image", ["a.png", "a.png"], "<image> " + " ".join(["pad"] * 60) + " <image>", "A"),
               _rec("fits", "a.png", "<image>\nQ", "A")]
    ds = LazySupervisedDataset(records, tiny_processor, image_folder=tmp_path, max_length=100, on_error="raise")
    with pytest.raises(SampleError, match=r"cutting would drop \d+ answer token\(s\);") as err:
        ds[0]
    assert err.value.kind == "too_long"
    with pytest.raises(SampleError, match="part of an image block") as err:
        ds[1]
    assert err.value.kind == "too_long"
    skip = LazySupervisedDataset(records, tiny_processor, image_folder=tmp_path, max_length=100)
    item = skip[0]
    assert item["sample_id"] == "fits" and [s["sample_id"] for s in item["skipped"]] == ["cut-text", "cut-image"]
    assert all("max length 100" in s["reason"] for s in item["skipped"])


def test_hf_dataset_sources(tmp_path, tiny_processor, image_file):
    import datasets

    red = Image.new("RGB", (32, 32), (255, 0, 0))
    rows = {"id": ["a", "b"], "image": [red, None],
            "conversations": [[{"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "Red."}],
                              [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]]}
    features = datasets.Features({"id": datasets.Value("string"), "image": datasets.Image(),
                                  "conversations": [{"from": datasets.Value("string"),
                                                     "value": datasets.Value("string")}]})
    hf = datasets.Dataset.from_dict(rows, features=features)
    hf.save_to_disk(str(tmp_path / "saved"))
    hf.to_parquet(str(tmp_path / "d.parquet"))
    expected = tiny_processor.preprocess_image(red)["images_aux"]
    for source in (hf, str(tmp_path / "saved"), str(tmp_path / "d.parquet")):
        ds = LazySupervisedDataset(source, tiny_processor, on_error="raise")
        assert ds.modality_lengths == [1 + 1 + 16, -3]
        torch.testing.assert_close(ds[0]["images_aux"][0], expected)
        assert "images" not in ds[1]
    image_file(tmp_path / "p.png", color=(255, 0, 0))  # a path column + image folder
    paths = datasets.Dataset.from_dict({"image": ["p.png"], "conversations": rows["conversations"][:1]})
    ds = LazySupervisedDataset(paths, tiny_processor, image_folder=tmp_path, on_error="raise")
    assert ds[0]["sample_id"] == "0" and ds.lengths == [18]


def test_system_key_and_template_from_config(tiny_processor):
    rec = _rec("s", None, "hi", "ok")
    rec["system"] = "Be terse."
    ds = LazySupervisedDataset([rec], tiny_processor, on_error="raise")
    assert ds.template.name == "vicuna_v1"
    text = tiny_processor.decode(ds[0]["input_ids"])
    assert text.startswith("Be terse. USER: hi ASSISTANT: ok")


def test_hd_and_resize_configs(tmp_path, sp_tokenizer):
    from minigemini import MiniGeminiConfig, MiniGeminiProcessor

    Image.new("RGB", (60, 30), (10, 200, 10)).save(tmp_path / "wide.png")
    rec = [_rec("w", "wide.png", "<image>\nQ", "A")]
    hd = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny(hd=True))
    item = LazySupervisedDataset(rec, hd, image_folder=tmp_path, on_error="raise")[0]
    assert item["images"].shape == (1, 5, 3, 56, 56) and item["images_aux"].shape == (1, 3, 256, 256)
    assert item["input_ids"].tolist().count(hd.image_token_id) == 80
    pad = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny())
    resize = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny(image_aspect_ratio="resize", use_hr=False))
    padded = LazySupervisedDataset(rec, pad, image_folder=tmp_path)[0]["images_aux"][0]
    resized = LazySupervisedDataset(rec, resize, image_folder=tmp_path)[0]
    assert "images_aux" not in resized  # LR-only baseline
    mean_grey = padded[:, 0, 64]  # top rows of the padded image hold the mean colour -> normalised ~0
    assert mean_grey.abs().max() < 0.02
    assert resized["images"][0][:, 0, 28].abs().min() > 0.5  # resized: the green image reaches the border
