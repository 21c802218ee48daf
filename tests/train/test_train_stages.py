"""Stage table, parameter report, builder (tiny preset via local folders) and stage-1 connector loading."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from minigemini.config import load_config
from minigemini.data.tokenizer import base_tokenizer
from minigemini.model.builder import CONNECTOR_FILE, build_model_and_processor, load_connector, save_connector
from minigemini.train.tiny_base import resolve_tiny
from minigemini.train.stages import apply_stage, format_report, trainable_parts


def _tiny(base: Path, **over: str):
    extra = [f"model.{k}={v}" for k, v in over.items()]
    cfg = load_config(None, [f"model.tiny.dir={base}", *extra])
    return build_model_and_processor(resolve_tiny(cfg.model))


def test_stage_table(tiny_base: Path) -> None:
    model, _ = _tiny(tiny_base)
    report = apply_stage(model, "pretrain")
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"mining", "projector"}
    assert report["llm"][0] == 0 and report["projector"][0] == report["projector"][1] > 0
    assert not model.vision_lr.training and not model.vision_hr.training
    apply_stage(model, "finetune")
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == \
        {"mining", "projector", "language_model"}
    apply_stage(model, "finetune", unfreeze=["vision_hr"])
    assert all(p.requires_grad for p in model.vision_hr.parameters())
    assert not any(p.requires_grad for p in model.vision_lr.parameters())
    assert "frozen" in format_report(apply_stage(model, "pretrain"), "pretrain")
    with pytest.raises(ValueError, match="valid: pretrain, finetune"):
        trainable_parts("stage3")
    with pytest.raises(ValueError, match="unknown part.*valid: vision_lr"):
        trainable_parts("pretrain", ["towers"])


def test_builder_loads_local_parts(tiny_base: Path) -> None:
    model, processor = _tiny(tiny_base)
    from transformers import CLIPVisionModel

    clip = CLIPVisionModel.from_pretrained(tiny_base / "vision_lr")
    assert torch.equal(clip.embeddings.patch_embedding.weight, model.vision_lr.clip.embeddings.patch_embedding.weight)
    assert model.config.image_token_id == processor.image_token_id
    assert model.config.text_config.vocab_size >= len(processor.tokenizer)
    again, _ = _tiny(tiny_base)  # deterministic: same base, same weights except the fresh connector
    for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        if not n.startswith(("mining", "projector")):
            assert torch.equal(a, b), n


def test_connector_roundtrip_and_errors(tmp_path: Path, tiny_base: Path) -> None:
    model, _ = _tiny(tiny_base)
    with torch.no_grad():
        model.projector[0].weight.fill_(0.5)
    save_connector(model, tmp_path / "s1")
    fresh, _ = _tiny(tiny_base, pretrained_adapter=str(tmp_path / "s1"))
    assert torch.equal(fresh.projector[0].weight, model.projector[0].weight)
    with pytest.raises(FileNotFoundError, match="stage-1 connector weights not found"):
        load_connector(fresh, tmp_path / "nowhere")
    from safetensors.torch import load_file, save_file

    state = load_file(str(tmp_path / "s1" / CONNECTOR_FILE))
    state["projector.0.weight"] = state["projector.0.weight"][:, :3].contiguous()
    del state["mining.key.0.bias"]
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"missing \['mining.key.0.bias'\].*shape mismatch \['projector.0.weight"):
        load_connector(fresh, tmp_path / "bad.safetensors")


def test_tiny_tokenizer_roundtrip() -> None:
    tok = base_tokenizer(["What color are the tiny dots?", "A big red circle."], vocab_size=300)
    text = "USER: What color? ASSISTANT: red</s>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and ids[-1] == tok.eos_token_id
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 0)
    assert copy.deepcopy(tok).decode(ids) == text


def test_base_tokenizer_is_the_one_the_tiny_base_always_had() -> None:
    """Golden ids from the tokenizer that model/builder.py trained itself before data/tokenizer.py took over."""
    tok = base_tokenizer(["What color are the tiny dots?", "A big red circle.",
                          "How many dots are there? Three green dots."], vocab_size=300)
    assert tok("USER: What color are the dots? ASSISTANT: green</s>")["input_ids"] == [
        55, 53, 39, 52, 28, 223, 295, 292, 84, 269, 271, 264, 33, 223, 35, 53, 53, 43, 53, 54, 35, 48, 54, 28, 288, 80, 2]
    assert len(tok) == 300


def test_template_of_a_model_built_from_parts(tmp_path: Path, tiny_base: Path) -> None:
    """data.template null = the LLM family's (as `minigemini convert` picks it); a family it cannot tell is an error
    asking for data.template, except in stage pretrain, where the config records the template it is trained in."""
    from minigemini.model.configuration import tiny_text_config
    from minigemini.train.template_choice import config_template, data_template

    llama = load_config(None, [f"model.llm={tiny_base / 'llm'}", "training.stage=finetune"])
    tok = base_tokenizer(["a b c"], vocab_size=300)
    assert data_template(llama, llama.model, tok) == "vicuna_v1" and config_template(llama, llama.model, tok) is None
    model, _ = _tiny(tiny_base, **{"tiny.llm": "llama"})
    assert model.config.template == "vicuna_v1"  # tiny_base: a Llama without a Llama-3 / Yi tokenizer
    tiny_text_config("qwen2").save_pretrained(tmp_path / "qwen2")
    qwen = load_config(None, [f"model.llm={tmp_path / 'qwen2'}", "training.stage=finetune"])
    with pytest.raises(ValueError, match=r"data.template is null and the LLM .*qwen2 \(model_type qwen2\).*set data.template"):
        data_template(qwen, qwen.model, tok)
    qwen.data.template = "chatml"
    assert data_template(qwen, qwen.model, tok) == config_template(qwen, qwen.model, tok) == "chatml"
    qwen.training.stage = "pretrain"
    qwen.data.template = "plain"
    assert config_template(qwen, qwen.model, tok) == "plain"  # the template this stage-1 model is trained in
    llama.training.stage, llama.data.template = "pretrain", "plain"
    assert config_template(llama, llama.model, tok) is None  # its family's (vicuna_v1) goes into the config


def test_built_llm_is_causal(tiny_base: Path) -> None:
    """Regression: wrapping the loaded LLM's config reset its attention implementation (no causal mask)."""
    model, _ = _tiny(tiny_base)
    lm = model.language_model.eval()
    ids = torch.randint(3, 300, (1, 12))
    changed = ids.clone()
    changed[0, -1] = 5
    with torch.no_grad():
        a, b = lm(input_ids=ids).logits, lm(input_ids=changed).logits
    assert lm.config._attn_implementation == "sdpa"
    assert torch.equal(a[0, :-1], b[0, :-1])


def test_cast_frozen_keeps_trained_weights_fp32(tiny_base: Path) -> None:
    from minigemini.train.stages import cast_frozen

    model, _ = _tiny(tiny_base)
    apply_stage(model, "pretrain")
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    inv_freq = dict(model.language_model.named_buffers())
    assert cast_frozen(model, torch.bfloat16) == frozen > 0
    for name, p in model.named_parameters():
        want = torch.float32 if name.startswith(("mining", "projector")) else torch.bfloat16
        assert p.dtype == want, name
    assert all(b.dtype == inv_freq[n].dtype for n, b in model.language_model.named_buffers())  # buffers untouched
    assert cast_frozen(model, torch.bfloat16) == 0  # idempotent


def test_cast_frozen_only_named_parts(tiny_base: Path) -> None:
    from minigemini.train.stages import cast_frozen

    model, _ = _tiny(tiny_base)
    apply_stage(model, "pretrain")
    cast_frozen(model, torch.bfloat16, parts=("vision_lr", "vision_hr"))
    assert {p.dtype for p in model.vision_hr.parameters()} == {p.dtype for p in model.vision_lr.parameters()} \
        == {torch.bfloat16}
    assert {p.dtype for p in model.language_model.parameters()} == {torch.float32}  # e.g. QLoRA's fp32 norms
