"""`minigemini prep validate`: every problem kind located, exit codes, --write-clean split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from minigemini.cli import main

BIN = Path(sys.executable).parent / "minigemini"


def _rec(rid, image=None, *texts, roles=("human", "gpt")):
    rec = {"id": rid, "conversations": [{"from": roles[i % 2], "value": t} for i, t in enumerate(texts)]}
    if image is not None:
        rec["image"] = image
    return rec


@pytest.fixture()
def bad_data(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    Image.new("RGB", (40, 30), (200, 0, 0)).save(img / "ok.png")
    Image.new("RGB", (5, 5), (0, 0, 0)).save(img / "tiny.png")
    (img / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    lines = [
        json.dumps(_rec("good-1", "ok.png", "<image>\nWhat colour?", "Red.")),
        '{"id": "broken-json", "conversations": [',
        json.dumps({"id": "no-conv", "image": "ok.png"}),
        json.dumps(_rec("robot", None, "hi", "yo", roles=("human", "robot"))),
        json.dumps(_rec("twice", None, "hi", "again", roles=("human", "human"))),
        json.dumps(_rec("empty", None, "hi", "   ")),
        json.dumps(_rec("count", "ok.png", "<image> and <image>?", "One.")),
        json.dumps(_rec("missing", "nowhere.png", "<image>\nQ?", "A.")),
        json.dumps(_rec("corrupt", "broken.jpg", "<image>\nQ?", "A.")),
        json.dumps(_rec("small", "tiny.png", "<image>\nQ?", "A.")),
        json.dumps(_rec("long", None, "Tell me a story.", " ".join(["word"] * 150))),
        json.dumps(_rec("good-2", None, "Say hi.", "Hi!")),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, img


EXPECTED = {  # kind -> (location, id, message part)
    "malformed_json": ("bad.jsonl line 2", "'1'", "malformed JSON"),
    "missing_keys": ("bad.jsonl line 3", "'no-conv'", "no 'conversations' list"),
    "unknown_role": ("bad.jsonl line 4", "'robot'", "unknown role 'robot'"),
    "not_alternating": ("bad.jsonl line 5", "'twice'", "turns must alternate"),
    "empty_answer": ("bad.jsonl line 6", "'empty'", "is empty"),
    "image_count_mismatch": ("bad.jsonl line 7", "'count'", "has 2 <image> placeholder(s) but 1 image(s)"),
    "missing_image": ("bad.jsonl line 8", "'missing'", "nowhere.png"),
    "corrupt_image": ("bad.jsonl line 9", "'corrupt'", "cannot read image"),
    "image_too_small": ("bad.jsonl line 10", "'small'", "5x5 px"),
    "too_long": ("bad.jsonl line 11", "'long'", "> max length 200"),
}


def test_bad_dataset_reports_every_kind(bad_data, tiny_model_dir, capsys):
    path, img = bad_data
    code = main(["prep", "validate", str(path), "--image-folder", str(img), "--tokenizer", str(tiny_model_dir),
                 "--max-length", "200", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1
    assert "checked 12 records: 2 good, 10 with problems" in out
    for kind, (loc, sid, msg) in EXPECTED.items():
        row = next(line for line in out.splitlines() if line.startswith(kind + " "))
        assert row.split()[1] == "1", row
        located = [line for line in out.splitlines() if f"{loc} (id" in line]
        assert any(f"(id {sid})" in line and msg in line for line in located), (kind, located)


def test_write_clean_splits_all_records(bad_data, tmp_path, capsys):
    path, img = bad_data
    out = tmp_path / "clean" / "train.json"
    assert main(["prep", "validate", str(path), "--image-folder", str(img), "--write-clean", str(out),
                 "--no-progress"]) == 1
    good = json.loads(out.read_text())
    rejects = [json.loads(line) for line in (out.parent / "train.rejects.jsonl").read_text().splitlines()]
    assert [r["id"] for r in good] == ["good-1", "long", "good-2"]  # no tokenizer: length unchecked
    assert len(good) + len(rejects) == 12
    assert rejects[0]["problems"][0]["kind"] == "malformed_json" and rejects[0]["record"].startswith('{"id": "broken')
    assert "template and length were not checked" in capsys.readouterr().out
    # the clean file passes
    assert main(["prep", "validate", str(out), "--image-folder", str(img), "--no-progress"]) == 0


def test_good_dataset_exits_zero_via_subprocess(tmp_path, tiny_model_dir):
    Image.new("RGB", (40, 30)).save(tmp_path / "a.png")
    data = tmp_path / "good.json"
    data.write_text(json.dumps([_rec("a", "a.png", "<image>\nQ?", "A."), _rec("b", None, "Hi", "Hello")]))
    proc = subprocess.run([str(BIN), "prep", "validate", str(data), "--image-folder", str(tmp_path), "--tokenizer",
                           str(tiny_model_dir), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checked 2 records: 2 good, 0 with problems" in proc.stdout


def test_template_mismatch_and_plain_tokenizer(tmp_path, sp_tokenizer, capsys):
    tok_dir = tmp_path / "tok"
    sp_tokenizer.save_pretrained(tok_dir)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([_rec("a", None, "Hi", "Hello"), _rec("b", None, "Q", "A")]))
    assert main(["prep", "validate", str(data), "--tokenizer", str(tok_dir), "--no-progress"]) == 2
    assert "minigemini prep: error:" in capsys.readouterr().err  # the message names the fix:
    with pytest.raises(ValueError, match="--num-image-tokens"), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIGEMINI_TRACEBACK", "1")
        main(["prep", "validate", str(data), "--tokenizer", str(tok_dir), "--no-progress"])
    assert main(["prep", "validate", str(data), "--tokenizer", str(tok_dir), "--num-image-tokens", "16",
                 "--template", "vicuna_v1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["prep", "validate", str(data), "--tokenizer", str(tok_dir), "--num-image-tokens", "16",
                 "--template", "llama_3", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "template_mismatch            2" in out.replace("\t", " ")
    assert "needs '<|start_header_id|>' as one token" in out


def test_unreadable_json_file(tmp_path, capsys):
    data = tmp_path / "d.json"
    data.write_text('[{"id": 1,\n "conversations": ]')
    assert main(["prep", "validate", str(data), "--no-progress"]) == 1
    assert "line 2 column 19: malformed JSON" in capsys.readouterr().out


def test_notes_folder_and_the_training_length_rule(tmp_path, tiny_model_dir, tiny_processor, capsys):
    """Automatic <image> placement is a note with ids; the searched folder is printed (default: the data's
    folder, as in training); too_long is exactly what the training dataset refuses (one rule)."""
    from minigemini.data.dataset import LazySupervisedDataset
    from minigemini.data.records import SampleError

    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (40, 30)).save(tmp_path / "imgs" / "a.png")
    recs = [_rec("auto-1", "imgs/a.png", "What colour?", "Black."), _rec("placed", "imgs/a.png", "<image>\nQ?", "A."),
            _rec("auto-2", ["imgs/a.png", "imgs/a.png"], "Same?", "Yes."),
            _rec("long", None, "Tell me a story.", " ".join(["word"] * 150)), _rec("fits", None, "Hi", "Hello")]
    data = tmp_path / "d.json"
    data.write_text(json.dumps(recs))
    assert main(["prep", "validate", str(data), "--tokenizer", str(tiny_model_dir), "--max-length", "100",
                 "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "checked 5 records: 4 good, 1 with problems" in out
    assert f"images searched in: {tmp_path.resolve()}\n" in out
    assert ("note: 2 record(s) have images but no <image> in the text: training puts one <image> per image at the "
            "start of the first user turn: ids auto-1, auto-2") in out
    too_long = [line for line in out.splitlines() if "(id 'long')" in line]
    assert len(too_long) == 1 and "> max length 100: cutting would drop" in too_long[0]
    ds = LazySupervisedDataset(str(data), tiny_processor, image_folder=tmp_path, max_length=100, on_error="raise")
    refused = []
    for i in range(len(ds)):
        try:
            ds[i]
        except SampleError as exc:
            refused.append((exc.sample_id, exc.kind))
    assert refused == [("long", "too_long")]
    assert main(["prep", "validate", str(data), "--image-folder", str(tmp_path / "nowhere"), "--no-progress"]) == 1
    assert f"images searched in: {(tmp_path / 'nowhere').resolve()}\n" in capsys.readouterr().out
