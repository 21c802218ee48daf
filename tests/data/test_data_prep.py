"""data_prep scripts on miniature copies of the public sets: layout, merged JSON, image checks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from minigemini.cli import main as cli

DATA_PREP = Path(__file__).resolve().parents[2] / "data_prep"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"data_prep_{name}", DATA_PREP / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _img(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 24), (120, 10, 10)).save(path)
    return path.name


def _cap(rid: str, image: str, text: str = "A picture.") -> dict:
    return {"id": rid, "image": image, "conversations": [{"from": "human", "value": "<image>\nDescribe it."},
                                                         {"from": "gpt", "value": text}]}


def _write(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def _mini_pretrain_downloads(dl: Path) -> dict[str, Path]:
    _img(dl / "LLaVA-Pretrain/images/00000/000000001.jpg")
    _img(dl / "LLaVA-Pretrain/images/00000/000000002.jpg")
    _img(dl / "ALLaVA-4V/allava_laion/images/11.jpeg")
    _img(dl / "ALLaVA-4V/allava_vflan/images/22.jpeg")
    return {
        "llava": _write(dl / "LLaVA-Pretrain/blip_laion_cc_sbu_558k.json",
                        [_cap("1", "00000/000000001.jpg"), _cap("2", "00000/000000002.jpg")]),
        "laion": _write(dl / "ALLaVA-4V/allava_laion/ALLaVA-Caption-LAION-4V.json",
                        [_cap("allava_laion_cap_11", "allava_laion/images/11.jpeg")]),
        "vflan": _write(dl / "ALLaVA-4V/allava_vflan/ALLaVA-Caption-VFLAN-4V.json",
                        [_cap("allava_vflan_cap_22", "allava_vflan/images/22.jpeg")]),
    }


def test_mgm_pretrain_layout_validates_and_loads(tmp_path, tiny_model_dir, tiny_processor, capsys):
    dl = tmp_path / "downloads"
    files = _mini_pretrain_downloads(dl)
    root = tmp_path / "data"
    argv = ["--root", str(root), "--llava-pretrain-images", str(dl / "LLaVA-Pretrain/images"),
            "--allava-4v-images", str(dl / "ALLaVA-4V"), "--llava-558k", str(files["llava"]),
            "--allava-laion-caption", str(files["laion"]), "--allava-vflan-caption", str(files["vflan"])]
    assert _load("mgm_pretrain").main_for(_load("mgm_pretrain").RECIPE, "", argv) == 0
    layout = root / "MGM-Pretrain"
    assert (layout / "images").is_symlink() and (layout / "ALLaVA-4V").is_symlink()
    merged = json.loads((layout / "mgm_pretrain.json").read_text())
    assert [r["image"] for r in merged] == ["images/00000/000000001.jpg", "images/00000/000000002.jpg",
                                            "ALLaVA-4V/allava_laion/images/11.jpeg",
                                            "ALLaVA-4V/allava_vflan/images/22.jpeg"]
    out = capsys.readouterr().out
    assert "ALLaVA-4V                        2         0" in out and "total                            4         0" in out
    assert cli(["prep", "validate", str(layout / "mgm_pretrain.json"), "--image-folder", str(layout),
                "--tokenizer", str(tiny_model_dir), "--template", "plain", "--no-progress"]) == 0
    from minigemini.data.dataset import LazySupervisedDataset

    ds = LazySupervisedDataset(str(layout / "mgm_pretrain.json"), tiny_processor, template="plain",
                               image_folder=layout, on_error="raise")
    assert len(ds) == 4 and ds[3]["images"].shape == (1, 3, 56, 56)


def test_missing_images_are_counted_and_optionally_rejected(tmp_path, capsys):
    dl = tmp_path / "downloads"
    files = _mini_pretrain_downloads(dl)
    (dl / "LLaVA-Pretrain/images/00000/000000002.jpg").unlink()
    module = _load("mgm_pretrain")
    argv = ["--root", str(tmp_path / "data"), "--llava-pretrain-images", str(dl / "LLaVA-Pretrain/images"),
            "--llava-558k", str(files["llava"]), "--allava-laion-caption", str(files["laion"])]
    assert module.main_for(module.RECIPE, "", argv) == 1
    captured = capsys.readouterr()
    assert "images                           2         1" in captured.out
    assert "missing in images/ e.g. images/00000/000000002.jpg" in captured.out
    assert "ALLaVA-4V                        1         1" in captured.out  # folder not laid out
    assert "2 records reference missing images" in captured.err
    assert module.main_for(module.RECIPE, "", argv + ["--drop-missing"]) == 0
    layout = tmp_path / "data/MGM-Pretrain"
    kept = json.loads((layout / "mgm_pretrain.json").read_text())
    rejects = (layout / "mgm_pretrain.rejects.jsonl").read_text().splitlines()
    assert [r["id"] for r in kept] == ["1"] and len(rejects) == 2 and len(kept) + len(rejects) == 3


def test_mgm_finetune_merges_sources_with_prefixes(tmp_path, capsys):
    dl = tmp_path / "dl"
    _img(dl / "coco/train2017/000000000009.jpg")
    _img(dl / "gqa/images/1.jpg")
    _img(dl / "ALLaVA-4V/allava_vflan/images/5.jpeg")
    _img(dl / "mine/pics/a.png")
    llava = _write(dl / "llava_v1_5_mix665k.json", [
        _cap("c", "coco/train2017/000000000009.jpg"), _cap("g", "gqa/images/1.jpg"),
        {"id": "sharegpt", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}])
    allava = _write(dl / "ALLaVA-Instruct-VFLAN-4V.json", [_cap("v", "allava_vflan/images/5.jpeg")])
    mine = _write(dl / "mine.json", [_cap("m", "a.png")])
    module = _load("mgm_finetune")
    argv = ["--root", str(tmp_path / "data"), "--mode", "copy", "--coco-images", str(dl / "coco"),
            "--gqa-images", str(dl / "gqa"), "--allava-4v-images", str(dl / "ALLaVA-4V"),
            "--llava-665k", str(llava), "--allava-vflan-instruct", str(allava),
            "--extra-json", f"{mine}:mine/", "--rewrite", "mine/=custom/pics/"]
    layout = tmp_path / "data/MGM-Finetune"
    assert module.main_for(module.RECIPE, "", argv) == 1  # custom/pics not laid out yet
    (layout / "custom").mkdir()
    (layout / "custom/pics").symlink_to(dl / "mine/pics")
    assert module.main_for(module.RECIPE, "", argv) == 0
    merged = json.loads((layout / "mgm_instruction.json").read_text())
    assert [r.get("image") for r in merged] == ["coco/train2017/000000000009.jpg", "gqa/images/1.jpg", None,
                                                "ALLaVA-4V/allava_vflan/images/5.jpeg", "custom/pics/a.png"]
    assert (layout / "coco").is_dir() and not (layout / "coco").is_symlink()  # --mode copy
    assert "exists: left as is" in capsys.readouterr().out


def test_llava_script_as_a_subprocess(tmp_path):
    dl = tmp_path / "dl"
    _img(dl / "images/00000/1.jpg")
    ann = _write(dl / "blip_laion_cc_sbu_558k.json", [_cap("1", "00000/1.jpg")])
    proc = subprocess.run([sys.executable, str(DATA_PREP / "llava.py"), "pretrain", "--root", str(tmp_path / "data"),
                           "--llava-pretrain-images", str(dl / "images"), "--llava-558k", str(ann)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "wrote 1 records to" in proc.stdout
    merged = json.loads((tmp_path / "data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json").read_text())
    assert merged[0]["image"] == "images/00000/1.jpg"
