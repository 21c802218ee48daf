"""LoRA on the LLM only (mining + projector fully trained, saved beside the adapter) and merge-lora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoProcessor

from minigemini import MiniGeminiForCausalLM
from minigemini.cli import main as cli_main
from minigemini.config import load_config
from minigemini.data.collate import DataCollator
from minigemini.data.dataset import LazySupervisedDataset
from minigemini.data.model_chat_template import chat_template_for
from minigemini.train.run import run_training

TINY_LORA = Path(__file__).resolve().parents[2] / "configs" / "tiny" / "finetune_lora.yaml"


def test_lora_run_and_merge(overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path, stage1_dir: Path) -> None:
    out, merged = tmp_path / "lora", tmp_path / "merged"
    cfg = load_config(TINY_LORA, overrides(out, synthetic_dir / "train.json", tiny_base, training__max_steps=3,
                                           model__pretrained_adapter=stage1_dir, training__learning_rate=2e-2,
                                           training__mm_learning_rate=5e-3,
                                           training__save_strategy="no"))
    result = run_training(cfg)
    model = result.trainer.model.eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in n or n.startswith(("mining.", "projector.")) for n in trainable)
    assert any(n.startswith("projector.") for n in trainable) and any(".lora_B." in n for n in trainable)
    report = json.loads((out / "trainable_parameters.json").read_text())
    assert 0 < report["llm"][0] < report["llm"][1] // 4 and report["vision_lr"][0] == 0
    for name in ("adapter_config.json", "adapter_model.safetensors",
                 "mm_projector.safetensors", "run_config.yaml", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n), "LoRA did not train"
    groups = result.trainer.optimizer.param_groups  # separate learning rate for mining + projector
    connector = {id(p) for p in list(model.mining.parameters()) + list(model.projector.parameters())}
    lrs: dict[float, set[int]] = {}
    for g in groups:
        lrs.setdefault(g["initial_lr"], set()).update(id(p) for p in g["params"])
    assert set(lrs) == {2e-2, 5e-3} and lrs[5e-3] == connector

    assert cli_main(["merge-lora", str(out), str(merged)]) == 0
    plain = MiniGeminiForCausalLM.from_pretrained(merged).eval()
    assert not any("lora" in k for k in plain.state_dict())
    merged_processor = AutoProcessor.from_pretrained(merged)
    assert merged_processor.chat_template == chat_template_for(plain.config, merged_processor.tokenizer)

    processor = result.trainer.processing_class
    dataset = LazySupervisedDataset(str(synthetic_dir / "train.json"), processor, image_folder=synthetic_dir)
    batch = DataCollator.from_processor(processor)([dataset[i] for i in range(3)])
    batch.pop("skipped_samples")
    batch.pop("labels")
    with torch.no_grad():
        want = model(**batch).logits
        got = plain(**batch).logits
    assert (got - want).abs().max().item() < 1e-5

    # plain peft: the adapter names a loadable base (the stage-1 folder, absolute) and carries the connector
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(stage1_dir.resolve())
    assert adapter["modules_to_save"] == ["mining", "projector"]
    base = MiniGeminiForCausalLM.from_pretrained(adapter["base_model_name_or_path"]).eval()
    with torch.no_grad():
        before = base(**batch).logits
    assert (before - got).abs().max().item() > 1e-3  # the base alone is not the fine-tuned model
    peft_model = PeftModel.from_pretrained(base, str(out)).eval()
    lora_modules = [n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
    assert lora_modules and all(".language_model." in n for n in lora_modules)  # no LoRA on towers/connector
    with torch.no_grad():
        via_peft = peft_model(**batch).logits
    assert (via_peft - got).abs().max().item() < 1e-5


@pytest.mark.parametrize("bits", [4, 8])
def test_qlora_trains_on_cpu(bits: int, overrides, tmp_path: Path, synthetic_dir: Path, tiny_base: Path,
                             stage1_dir: Path) -> None:
    """QLoRA on CPU through bitsandbytes' CPU backend: the LLM's Linears are quantized, LoRA trains."""
    bnb = pytest.importorskip("bitsandbytes")
    out = tmp_path / "qlora"
    cfg = load_config(TINY_LORA, overrides(out, synthetic_dir / "train.json", tiny_base, training__max_steps=2,
                                           model__pretrained_adapter=stage1_dir, lora__bits=bits,
                                           training__learning_rate=2e-2, training__save_strategy="no"))
    result = run_training(cfg)
    model = result.trainer.model
    kind = bnb.nn.Linear4bit if bits == 4 else bnb.nn.Linear8bitLt
    quantized = [n for n, m in model.language_model.named_modules() if isinstance(m, kind)]
    assert quantized and all(".base_layer" in n for n in quantized)
    assert next(p for n, p in model.named_parameters() if n.endswith("q_proj.base_layer.weight")).device.type == "cpu"
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(v)) for v in result.losses.values())
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n), "LoRA did not train"
    assert (out / "adapter_model.safetensors").is_file()
