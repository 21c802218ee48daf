"""Run config: YAML + includes + dotted overrides, unknown keys and bad types rejected, presets valid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from minigemini.config import ConfigError, RunConfig, load_config, parse_override, valid_keys

REPO = Path(__file__).resolve().parents[2]


def test_defaults_and_overrides(tmp_path: Path) -> None:
    cfg = load_config(None, ["training.learning_rate=1e-3", "training.report_to=[]", "data.train=[a.json, b.json]",
                             "lora.enabled=true", "model.tokenizer=null", "training.max_steps=5"])
    assert isinstance(cfg, RunConfig)
    assert cfg.training.learning_rate == pytest.approx(1e-3) and isinstance(cfg.training.learning_rate, float)
    assert cfg.training.report_to == [] and cfg.data.train == ["a.json", "b.json"]
    assert cfg.lora.enabled is True and cfg.model.tokenizer is None and cfg.training.max_steps == 5
    assert cfg.lora.target_modules == "all-linear"
    assert parse_override("a.b=1") == ("a.b", 1)


def test_unknown_keys_list_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"training\.lr.*valid keys of training:.*learning_rate"):
        load_config(None, ["training.lr=1"])
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trainig.*valid keys of top level: data, deepspeed"):
        load_config(None, ["trainig.learning_rate=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  llm: x\n  vision_towr: y\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown key\(s\) model\.vision_towr"):
        load_config(bad)


def test_type_errors_and_bad_override() -> None:
    with pytest.raises(ConfigError, match="training.max_steps='many' must be int"):
        load_config(None, ["training.max_steps=many"])
    with pytest.raises(ConfigError, match="lora.enabled=3 must be bool"):
        load_config(None, ["lora.enabled=3"])
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(None, ["training.max_steps"])


def test_include_merges_and_roundtrips(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("training:\n  learning_rate: 1.0e-3\n  seed: 7\nmodel:\n  llm: base\n")
    (tmp_path / "run.yaml").write_text("include: [base.yaml]\ntraining:\n  seed: 8\n")
    cfg = load_config(tmp_path / "run.yaml", ["model.llm=over"])
    assert (cfg.training.learning_rate, cfg.training.seed, cfg.model.llm) == (1e-3, 8, "over")
    cfg.save(tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_every_preset_loads() -> None:
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) >= 20
    for f in files:
        load_config(f)
    for f in sorted((REPO / "configs" / "deepspeed").glob("*.json")):
        ds = json.loads(f.read_text())
        assert ds["train_micro_batch_size_per_gpu"] == "auto" and "optimizer" not in ds
    zero3 = json.loads((REPO / "configs/deepspeed/zero3.json").read_text())["zero_optimization"]
    assert zero3["stage3_gather_16bit_weights_on_model_save"] is True


def test_recipe_hyperparameters() -> None:
    cfg = _compose
    s1 = cfg("vicuna-7b", "pretrain")
    assert (s1.training.learning_rate, s1.training.global_batch_size, s1.data.template) == (1e-3, 256, "plain")
    s2 = cfg("vicuna-7b-hd", "finetune")
    assert (s2.training.learning_rate, s2.training.global_batch_size) == (2e-5, 128)
    assert (s2.model.image_grid, s2.model.image_size_aux, s2.model.image_global) == (2, 1536, True)
    big = cfg("mixtral-8x7b", "finetune_zero3")
    assert big.training.learning_rate == 1e-5 and big.deepspeed.config.endswith("zero3.json")
    for c in (s1, s2, big):
        t = c.training
        assert (t.warmup_ratio, t.lr_scheduler_type, t.weight_decay, t.num_train_epochs) == (0.03, "cosine", 0.0, 1.0)
        assert t.precision == "bf16" and t.gradient_checkpointing
    lora = cfg("llama3-8b", "finetune_lora")
    assert lora.lora.enabled and lora.training.mm_learning_rate == 2e-5 and lora.data.template == "llama_3"
    assert "data.feature_cache" in valid_keys() and "deepspeed.config" in valid_keys()


def _compose(model: str, stage: str) -> RunConfig:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run.yaml"
        run.write_text(f"include: [{REPO}/configs/model/{model}.yaml, {REPO}/configs/stage/{stage}.yaml]\n")
        return load_config(run)


def test_tiny_section_loads_and_overrides() -> None:
    cfg = load_config(REPO / "configs/tiny/pretrain.yaml", ["model.tiny.llm=gemma", "model.tiny.vocab_size=512"])
    assert (cfg.model.tiny.dir, cfg.model.tiny.llm, cfg.model.tiny.vocab_size, cfg.model.tiny.hd) == (
        "runs/tiny_base", "gemma", 512, False)
    demo = load_config(REPO / "configs/demo/pretrain.yaml")  # deep-merged over configs/model/tiny.yaml's section
    assert (demo.model.tiny.dir, demo.model.tiny.vocab_size) == ("runs/demo/tiny_base", 1024)
    assert demo.model.tiny.corpus == ["runs/demo/data/captions.json", "runs/demo/data/train.json"]
    assert load_config(REPO / "configs/tiny/pretrain.yaml", ["model.tiny=null"]).model.tiny is None
    assert load_config(None, ["model.tiny.seed=3"]).model.tiny.seed == 3  # a null section set up by its first key
    assert load_config(None).model.tiny is None and "model.tiny.corpus" in valid_keys()
    with pytest.raises(ConfigError, match=r"unknown key\(s\) model.tiny.vocab .*did you mean model.tiny.vocab_size"):
        load_config(None, ["model.tiny.vocab=1"])


@pytest.mark.parametrize("key, value, new", [
    ("model", "preset: tiny", "model.tiny (a section"), ("model", "tiny_dir: runs/x", "model.tiny.dir"),
    ("model", "tiny_llm: gemma", "model.tiny.llm"), ("model", "tiny_corpus: [a.json]", "model.tiny.corpus"),
    ("model", "template: vicuna_v1", "data.template"), ("training", "dataloader_num_workers: 2", "data.num_workers")])
def test_removed_keys_name_file_line_and_the_new_key(tmp_path: Path, key: str, value: str, new: str) -> None:
    (tmp_path / "base.yaml").write_text(f"# an older config\n{key}:\n  seed: 1\n  {value}\n")
    (tmp_path / "run.yaml").write_text("include: [base.yaml]\n")
    old = value.split(":")[0]
    with pytest.raises(ConfigError, match=rf"base\.yaml:4: {key}\.{old} was removed: use {re.escape(new)}"):
        load_config(tmp_path / "run.yaml")
    with pytest.raises(ConfigError, match=rf"<defaults>: {key}\.{old} was removed: use {re.escape(new)}"):
        load_config(None, [f"{key}.{old}=1"])


@pytest.mark.parametrize("recipe", sorted(p.name for p in (REPO / "configs" / "recipes").glob("*.yaml")))
def test_every_recipe_resolves_its_template(recipe: str) -> None:
    """Pretrain recipes render plain (or the family's, where the official stage 1 did), finetune ones the family's."""
    family = {"vicuna": "vicuna_v1", "llama3": "llama_3", "gemma": "gemma", "mixtral": "mistral_instruct",
              "yi": "chatml_direct"}[recipe.split("-")[0]]
    official_stage1 = {"gemma": "gemma", "llama_3": "llama_3"}  # scripts/*/train/stage_1_2_*.sh --version
    cfg = load_config(REPO / "configs" / "recipes" / recipe)
    expected = official_stage1.get(family, "plain") if cfg.training.stage == "pretrain" else family
    assert cfg.data.template == expected, recipe
