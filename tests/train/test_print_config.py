"""`minigemini train CONFIG --print-config`: the config the run uses, not the dataclass defaults (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from minigemini.cli import main
from minigemini.config import from_dict

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_NAMES = ("vicuna-7b", "clip-vit-large", "convnext_large")  # ModelConfig's defaults


def print_config(capsys: pytest.CaptureFixture, *argv: str) -> tuple[str, dict]:
    assert main(["train", "--print-config", *argv]) == 0  # the flag before CONFIG, as in the issue
    out = capsys.readouterr().out
    return out, yaml.safe_load(out)


def test_a_recipe_prints_its_own_values(capsys: pytest.CaptureFixture) -> None:
    out, cfg = print_config(capsys, str(REPO / "configs/recipes/gemma-2b-finetune.yaml"), "training.seed=7")
    assert cfg["model"]["llm"] == "google/gemma-2b-it" and cfg["data"]["template"] == "gemma"  # model/gemma-2b.yaml
    assert cfg["training"]["learning_rate"] == 2e-5 and cfg["training"]["global_batch_size"] == 128  # stage/
    assert cfg["training"]["seed"] == 7 and cfg["data"]["image_folder"] == "data/MGM-Finetune"
    assert "template" not in cfg["model"] and "data.template: null" not in out
    assert "tiny" not in cfg["model"] and "vicuna-7b" not in out
    from_dict(cfg)  # what it prints is a valid config again


def test_init_from_shows_the_folder_not_the_defaults(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "minigemini", "template": "llama_3", "image_size": 336,
                                                    "image_size_aux": 1536, "image_grid": 2, "image_global": True}))
    out, cfg = print_config(capsys, str(REPO / "configs/custom/finetune.yaml"), f"model.init_from={folder}")
    model = cfg["model"]
    assert model["init_from"] == str(folder) and cfg["data"]["template"] == "llama_3"
    assert "data.template: null in the config = the folder's template" in out
    assert (model["image_size"], model["image_size_aux"], model["image_grid"], model["image_global"]) == (336, 1536, 2, True)
    assert "llm" not in model and "vision_lr" not in model and "tiny" not in model
    assert not any(name in out for name in DEFAULT_MODEL_NAMES)
    assert cfg["training"]["stage"] == "finetune" and cfg["deepspeed"]["config"] == "configs/deepspeed/zero2.json"
    assert cfg["data"]["train"] == ["data/mine/train.json"]
    from_dict(cfg)


def test_tiny_preset_shows_its_base_folders(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from minigemini.train.tiny_base import TINY_MARKER
    from minigemini.train.config_view import TINY_MARKER as VIEW_MARKER

    assert VIEW_MARKER == TINY_MARKER
    base = tmp_path / "tiny_base"
    out, cfg = print_config(capsys, str(REPO / "configs/tiny/finetune.yaml"), f"model.tiny.dir={base}")
    model = cfg["model"]
    assert (model["llm"], model["tokenizer"], model["vision_lr"], model["vision_hr"]) == (
        str(base / "llm"), str(base / "llm"), str(base / "vision_lr"), str(base / "vision_hr"))
    assert "image_size" not in model and "set when the base is written" in out  # not written yet
    assert not any(name in out for name in DEFAULT_MODEL_NAMES)
    base.mkdir()
    (base / "tiny_base.json").write_text(json.dumps({"image_size": 56, "image_size_aux": 256, "hd": True}))
    _, cfg = print_config(capsys, str(REPO / "configs/tiny/finetune.yaml"), f"model.tiny.dir={base}")
    assert [cfg["model"][k] for k in ("image_size", "image_size_aux", "image_grid", "image_global")] == [56, 256, 2, True]
    from_dict(cfg)


def test_null_template_from_parts_is_explained(capsys: pytest.CaptureFixture) -> None:
    out, cfg = print_config(capsys, str(REPO / "configs/stage/finetune.yaml"))
    assert cfg["data"]["template"] is None and "data.template: null = the LLM family's template" in out
