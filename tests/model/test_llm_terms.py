"""The wrapped LLM keeps its own loss and logits terms: Granite's `logits_scaling`, the MoE router
auxiliary loss (Mixtral, Qwen2-MoE). Compared with the HF model alone on the same text-only batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
LLMS = {
    "granite": dict(logits_scaling=8.0, embedding_multiplier=2.0, residual_multiplier=0.5),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2, output_router_logits=True, router_aux_loss_coef=0.5),
    "qwen2_moe": dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                      shared_expert_intermediate_size=48, output_router_logits=True, router_aux_loss_coef=0.5),
}


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two right-padded text rows; labels: -100 on the prompt and the padding."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 128, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    ids[1, 8:] = 0
    labels = ids.clone()
    labels[:, :5] = -100
    labels[mask == 0] = -100
    return ids, mask, labels


@pytest.mark.parametrize("llm", sorted(LLMS))
def test_loss_and_logits_equal_the_hf_model_alone(llm: str) -> None:
    text = AutoConfig.for_model(llm, **COMMON, **LLMS[llm])
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(MiniGeminiConfig.tiny(vocab_size=128, text_config=text)).eval()
    hf = AutoModelForCausalLM.from_config(text).eval()  # the HF model alone, same weights
    hf.load_state_dict(model.language_model.state_dict())
    ids, mask, labels = _batch()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, labels=labels)
        plain = model(input_ids=ids, attention_mask=mask)
        model.config.supervised_logits_only = False
        full = model(input_ids=ids, attention_mask=mask, labels=labels)
        model.config.supervised_logits_only = True
        sparse = model(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(plain.logits, ref.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(full.logits, ref.logits, atol=1e-5, rtol=0)
    assert sparse.logits is None
    for out in (full, sparse):
        torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    # the term is real: without it the loss would differ by far more than the tolerance
    keep = labels[:, 1:] != -100
    bare_ce = F.cross_entropy(ref.logits[:, :-1][keep], labels[:, 1:][keep])
    if llm == "granite":
        raw = hf.lm_head(hf.model(input_ids=ids, attention_mask=mask).last_hidden_state)
        torch.testing.assert_close(ref.logits, raw / 8.0, atol=1e-5, rtol=0)
        assert (raw - ref.logits).abs().max() > 1e-2
    else:
        torch.testing.assert_close(sparse.aux_loss, ref.aux_loss, atol=1e-6, rtol=0)
        assert ref.aux_loss > 0.1 and abs(float(ref.loss - bare_ce) - 0.5 * float(ref.aux_loss)) < 1e-5
        assert len(sparse.router_logits) == 2  # the router outputs are returned too
