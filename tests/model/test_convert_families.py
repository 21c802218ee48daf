"""`minigemini convert` for every released MGM family, from tiny random checkpoints in the OFFICIAL layout.

Each checkpoint is written as the official MGM code saves it: `config.json` with MGM's
`architectures` / `model_type` and its `mm_*` fields, one safetensors file with MGM key names
(`model.vision_tower...`, `model.vlm_uni_*_projector`, `model.mm_projector`, and the LLM keys as the
official checkpoints store them: Mixtral's per-expert `block_sparse_moe.experts.N.w1/w2/w3`; Gemma
without `lm_head`, tied), and the family's tokenizer. The converted model's logits must equal those
of the plain HF LLM holding the same weights (1e-5); Mixtral's MoE is also checked against the legacy
per-expert formula written out here.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from minigemini import MiniGeminiForCausalLM
from minigemini.cli import main
from minigemini.data.tokenizer import tiny_tokenizer
from minigemini.model.convert import KEY_MAP, convert_mgm_config, detect_template

LLAMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "hidden_act": "silu",
         "tie_word_embeddings": False}
# family -> (tokenizer family, MGM architecture, MGM model_type, LLM fields, expected template)
FAMILIES = {
    "vicuna": ("vicuna", "MGMLlamaForCausalLM", "mgm", LLAMA, "vicuna_v1"),
    "llama3": ("llama3", "MGMLlamaForCausalLM", "mgm", LLAMA, "llama_3"),
    "yi": ("yi", "MGMLlamaForCausalLM", "mgm", LLAMA, "chatml_direct"),
    "gemma": ("gemma", "MGMGemmaForCausalLM", "mgm_gemma",
              {**LLAMA, "head_dim": 8, "hidden_act": "gelu_pytorch_tanh", "tie_word_embeddings": True}, "gemma"),
    "mixtral": ("mistral", "MGMMixtralForCausalLM", "mgm_mixtral",
                {**LLAMA, "num_local_experts": 4, "num_experts_per_tok": 2, "router_jitter_noise": 0.0},
                "mistral_instruct"),
}
TOWERS = {"lr_tower": {"config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                                  "num_attention_heads": 4, "image_size": 56, "patch_size": 14,
                                  "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 16}},
          "hr_tower": {"timm_convnext_kwargs": {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64],
                                                "drop_path_rate": 0.0}}}


def mgm_config(family: str, vocab: int) -> dict:
    _, arch, model_type, llm, _ = FAMILIES[family]
    return {"architectures": [arch], "model_type": model_type, "vocab_size": vocab, **llm,
            "mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": 32, "mm_hidden_size_aux": 64,
            "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch", "mm_projector_type": "mlp2x_gelu",
            "mm_use_im_start_end": False, "image_size_aux": 128, "image_grid": 1, "image_global": False,
            "image_aspect_ratio": "pad", "tokenizer_model_max_length": 2048, "use_mm_proj": True,
            "fixture": TOWERS}


def to_mgm_key(ours: str) -> str:
    for mgm, mine in KEY_MAP:
        if ours.startswith(mine):
            return mgm + ours[len(mine):]
    raise KeyError(ours)


def official_llm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers-5 fused Mixtral experts -> the per-expert keys MGM's checkpoints hold (w1 gate, w3 up, w2 down)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".mlp.experts.gate_up_proj"):
            base = key.replace(".mlp.experts.gate_up_proj", ".block_sparse_moe.experts")
            inter = value.shape[1] // 2
            for e in range(value.shape[0]):
                out[f"{base}.{e}.w1.weight"], out[f"{base}.{e}.w3.weight"] = value[e, :inter], value[e, inter:]
        elif key.endswith(".mlp.experts.down_proj"):
            base = key.replace(".mlp.experts.down_proj", ".block_sparse_moe.experts")
            for e in range(value.shape[0]):
                out[f"{base}.{e}.w2.weight"] = value[e]
        else:
            out[key.replace(".mlp.gate.", ".block_sparse_moe.gate.")] = value
    return out


def write_official_checkpoint(folder, family: str) -> MiniGeminiForCausalLM:
    """A random MGM checkpoint of `family` in the official layout; returns the model it was made from."""
    tok = tiny_tokenizer(FAMILIES[family][0])
    config_dict = mgm_config(family, len(tok))
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(convert_mgm_config(config_dict, template="plain")).eval()
    state = {to_mgm_key(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if config_dict["tie_word_embeddings"]:
        state.pop("lm_head.weight")
    state = official_llm_layout(state)
    folder.mkdir(parents=True)
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config_dict))
    tok.save_pretrained(folder)
    return model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_convert_official_layout(family, tmp_path, capsys):
    src, out = tmp_path / f"MGM-{family}", tmp_path / "converted"
    original = write_official_checkpoint(src, family)
    expected = FAMILIES[family][4]
    assert main(["convert", str(src), str(out)]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("template: ")]
    assert len(printed) == 1 and printed[0].startswith(f"template: {expected} (")
    converted = MiniGeminiForCausalLM.from_pretrained(out).eval()
    assert converted.config.template == expected
    assert json.loads((out / "config.json").read_text())["template"] == expected
    reference = AutoModelForCausalLM.from_config(original.config.text_config).eval()  # the plain HF LLM
    reference.load_state_dict(original.language_model.state_dict())
    ids = torch.randint(0, converted.config.text_config.vocab_size, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = converted(input_ids=ids).logits, reference(input_ids=ids).logits
    assert got.shape == want.shape and (got - want).abs().max().item() < 1e-5


def test_template_override_and_detection_without_tokenizer(tmp_path, capsys):
    src = tmp_path / "MGM-8B"
    write_official_checkpoint(src, "llama3")
    assert main(["convert", str(src), str(tmp_path / "o"), "--template", "v1"]) == 0
    assert "template: vicuna_v1 (--template)" in capsys.readouterr().out.splitlines()
    assert json.loads((tmp_path / "o" / "config.json").read_text())["template"] == "vicuna_v1"
    assert main(["convert", str(src), str(tmp_path / "o2"), "--template", "nope"]) == 2
    assert "unknown conversation template 'nope'" in capsys.readouterr().err
    # the released sizes, from config.json alone
    for vocab, arch, template in [(128256, "MGMLlamaForCausalLM", "llama_3"), (64000, "MGMLlamaForCausalLM",
                                  "chatml_direct"), (32000, "MGMLlamaForCausalLM", "vicuna_v1"),
                                  (32000, "MGMMixtralForCausalLM", "mistral_instruct"),
                                  (256000, "MGMGemmaForCausalLM", "gemma")]:
        assert detect_template({"architectures": [arch], "vocab_size": vocab})[0] == template


def test_mixtral_moe_matches_the_legacy_per_expert_formula(tmp_path):
    """The converted MoE block computes sum_k p_k * w2(silu(w1 x) * w3 x) over the top-2 experts (legacy Mixtral)."""
    src = tmp_path / "MGM-8x7B"
    write_official_checkpoint(src, "mixtral")
    from minigemini.model.convert import convert_mgm_checkpoint

    model = convert_mgm_checkpoint(src)
    ckpt = load_file(str(src / "model.safetensors"))
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    pre = "model.layers.1.block_sparse_moe."
    probs = F.softmax(x @ ckpt[pre + "gate.weight"].T, dim=-1)
    top_p, top_i = probs.topk(2, dim=-1)
    top_p = top_p / top_p.sum(-1, keepdim=True)
    want = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for p, e in zip(top_p[t], top_i[t].tolist()):
            w1, w2, w3 = (ckpt[f"{pre}experts.{e}.{w}.weight"] for w in ("w1", "w2", "w3"))
            want[t] += p * (w2 @ (F.silu(w1 @ x[t]) * (w3 @ x[t])))
    with torch.no_grad():
        got = model.language_model.model.layers[1].mlp(x[None])
    got = got[0] if isinstance(got, tuple) else got
    assert (got[0] - want).abs().max().item() < 1e-5


def test_every_released_family_has_configs_with_its_template():
    """configs/model (normal + HD) and the stage-1 recipes use the template of the official scripts."""
    from pathlib import Path

    from minigemini.config import load_config

    repo = Path(__file__).resolve().parents[2]
    # model preset -> (template, stage-1 template as scripts/*/train/stage_1_2_*.sh pass --version)
    released = {"gemma-2b": ("gemma", "gemma"), "vicuna-7b": ("vicuna_v1", "plain"),
                "vicuna-13b": ("vicuna_v1", "plain"), "llama3-8b": ("llama_3", "llama_3"),
                "mixtral-8x7b": ("mistral_instruct", "plain"), "yi-34b": ("chatml_direct", "plain")}
    for name, (template, stage1) in released.items():
        for preset in (name, f"{name}-hd"):
            assert load_config(repo / "configs" / "model" / f"{preset}.yaml").data.template == template, preset
            pretrain = load_config(repo / "configs" / "recipes" / f"{preset}-pretrain.yaml")
            assert pretrain.data.template == stage1, preset
            finetune = load_config(repo / "configs" / "recipes" / f"{preset}-finetune.yaml")
            assert finetune.data.template == template, preset
