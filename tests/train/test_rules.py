"""The option rules (`minigemini/rules.py`): one row per rule, each refused before a model is built with a
one-line message naming the option to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from minigemini.config import load_config
from minigemini.rules import RuleError, check_run_config, check_template_tokenizer

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = REPO / "configs" / "tiny" / "pretrain.yaml"
TINY_FINETUNE = REPO / "configs" / "tiny" / "finetune.yaml"

# (id, preset, overrides ({tmp} = a scratch folder, {data} = the synthetic set), message regex)
ROWS = [
    ("feature_cache x trainable towers", TINY_PRETRAIN, ["data.feature_cache={tmp}", "training.unfreeze=[vision_hr]"],
     r"data.feature_cache .* training.unfreeze=\['vision_hr'\] .*remove them from training.unfreeze"),
    ("packing x attention", TINY_PRETRAIN, ["data.packing=true", "model.attn_implementation=paged_attention"],
     r"data.packing=true cannot be used with model.attn_implementation='paged_attention' .*; or data.packing=false"),
    ("deepspeed x save_only_model", TINY_PRETRAIN, ["deepspeed.config=zero2", "training.extra_args={save_only_model: true}"],
     r"save_only_model=true under DeepSpeed writes checkpoints without weights"),
    ("zero3 x export", TINY_PRETRAIN, ["deepspeed.config={tmp}/zero3_nogather.json"],
     r"ZeRO-3 .*stage3_gather_16bit_weights_on_model_save=true .*or training.export=false"),
    ("zero3 x merge-lora", TINY_FINETUNE, ["deepspeed.config={tmp}/zero3_nogather.json", "training.export=false",
                                           "lora.enabled=true", "model.pretrained_adapter=null"],
     r"ZeRO-3 .*\(and merge-lora\) would write empty weight files"),
    ("deepspeed x nan_policy skip", TINY_PRETRAIN, ["deepspeed.config=zero2", "training.nan_policy=skip"],
     r"training.nan_policy=skip is not supported under DeepSpeed"),
    ("init_from x model overrides", TINY_FINETUNE, ["model.init_from={tmp}", "model.image_size=112",
                                                    "model.pretrained_adapter=null"],
     r"model.init_from=.* fixes the architecture, so model.image_size .*cannot apply"),
    ("quantisation without lora", TINY_FINETUNE, ["lora.bits=4", "model.pretrained_adapter=null"],
     r"lora.bits=4 quantizes the LLM for QLoRA only: set lora.enabled=true or lora.bits=16"),
    ("lora x stage 1", TINY_PRETRAIN, ["lora.enabled=true"],
     r"lora.enabled=true but training.stage=pretrain does not train the LLM: use training.stage=finetune"),
    ("unknown stage", TINY_PRETRAIN, ["training.stage=sft"], r"unknown training.stage 'sft'; valid: pretrain, finetune"),
    ("unknown part", TINY_PRETRAIN, ["training.unfreeze=[vision]"], r"training.unfreeze has unknown part\(s\) \['vision'\]"),
    ("quantisation x zero3", TINY_FINETUNE, ["lora.enabled=true", "lora.bits=4", "deepspeed.config=zero3",
                                             "model.pretrained_adapter=null"],
     r"lora.bits=4 \(QLoRA\) cannot be partitioned by ZeRO-3"),
    ("unknown template", TINY_PRETRAIN, ["data.template=vicunaa"], r"data.template: unknown conversation template"),
    ("extra_args: not a TrainingArguments field", TINY_PRETRAIN, ["training.extra_args={torch_compil: true}"],
     r"training.extra_args.torch_compil is not a transformers.TrainingArguments field \(did you mean torch_compile\?\)"),
    ("extra_args: a typed option's field", TINY_PRETRAIN, ["training.extra_args={learning_rate: 0.1}"],
     r"training.extra_args.learning_rate: set training.learning_rate instead"),
    ("extra_args: data.num_workers's field", TINY_PRETRAIN, ["training.extra_args={dataloader_num_workers: 4}"],
     r"training.extra_args.dataloader_num_workers: set data.num_workers instead"),
    ("bad value", TINY_PRETRAIN, ["training.precision=fp8"], r"training.precision must be one of bf16, fp16, fp32"),
    ("missing init_from (no hub lookup)", TINY_FINETUNE, ["model.init_from=/nowhere"],
     r"model.init_from: /nowhere does not exist"),
    ("missing image folder", TINY_PRETRAIN, ["data.image_folder={tmp}/no_images"],
     r"data.image_folder: .*no_images is not a folder"),
    ("missing training file", TINY_PRETRAIN, ["data.train=[{tmp}/none.json]"], r"data.train: .*none.json does not exist"),
    ("missing stage-1 adapter", TINY_FINETUNE, ["model.pretrained_adapter={tmp}/nothing"],
     r"model.pretrained_adapter: .*nothing does not exist"),
]


@pytest.mark.parametrize("preset, over, message", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_rule_refuses_before_any_model(tmp_path: Path, synthetic_dir: Path, preset: Path, over: list[str],
                                       message: str) -> None:
    (tmp_path / "config.json").write_text("{}")  # a model folder for init_from
    (tmp_path / "zero3_nogather.json").write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    base = [f"data.train=[{synthetic_dir / 'captions.json'}]", "model.pretrained_adapter=null"] \
        if preset == TINY_FINETUNE else [f"data.train=[{synthetic_dir / 'captions.json'}]"]
    cfg = load_config(preset, base + [o.replace("{tmp}", str(tmp_path)) for o in over])
    with pytest.raises(RuleError, match=message) as err:
        check_run_config(cfg)
    assert "\n" not in str(err.value)


def test_valid_configs_pass(tmp_path: Path, synthetic_dir: Path) -> None:
    data = f"data.train=[{synthetic_dir / 'captions.json'}]"
    check_run_config(load_config(TINY_PRETRAIN, [data]))
    check_run_config(load_config(TINY_PRETRAIN, [data, "deepspeed.config=zero3"]))  # gathers 16-bit weights
    check_run_config(load_config(TINY_FINETUNE, [data, "model.pretrained_adapter=null", "lora.enabled=true"]))
    check_run_config(load_config(TINY_PRETRAIN, [data, "data.packing=true", "model.attn_implementation=eager"]))


def test_typed_arguments_are_the_ones_extra_args_may_not_set(synthetic_dir: Path) -> None:
    """`rules.TYPED_ARGUMENTS` names every TrainingArguments field the typed options set in train/run.py."""
    import dataclasses

    from transformers import TrainingArguments

    from minigemini.rules import TYPED_ARGUMENTS
    from minigemini.train.run import FIXED_ARGUMENTS, typed_arguments

    typed = set(typed_arguments(load_config(TINY_PRETRAIN, [f"data.train=[{synthetic_dir / 'captions.json'}]"])))
    assert set(TYPED_ARGUMENTS) == typed | {"resume_from_checkpoint"}  # that one goes to trainer.train()
    assert not typed & set(FIXED_ARGUMENTS)
    assert set(TYPED_ARGUMENTS) <= {f.name for f in dataclasses.fields(TrainingArguments)}
    ok = load_config(TINY_PRETRAIN, [f"data.train=[{synthetic_dir / 'captions.json'}]",
                                      "training.extra_args={torch_compile: true, disable_tqdm: true}"])
    check_run_config(ok)


def test_template_x_tokenizer(tiny_base: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_base / "llm")
    check_template_tokenizer("vicuna_v1", tok, "data.template")
    with pytest.raises(RuleError, match=r"data.template=llama_3: .*'<\|start_header_id\|>' as one token"):
        check_template_tokenizer("llama_3", tok, "data.template")


def test_select_feature_cls_patch_is_refused_at_config_time() -> None:
    from minigemini import MiniGeminiConfig

    spec = MiniGeminiConfig.tiny().vision_lr
    spec["select_feature"] = "cls_patch"
    with pytest.raises(ValueError, match="select_feature 'cls_patch' is not supported.*use select_feature 'patch'"):
        MiniGeminiConfig.tiny(vision_lr=spec)
