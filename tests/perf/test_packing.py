"""Sequence packing: a packed row gives every sample the logits it gets alone, and the padded batch's loss."""

from __future__ import annotations

import pytest
import torch

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM
from minigemini.data.collate import DataCollator
from minigemini.data.packing import PackingCollator, padding_fraction, plan_rows

IMG = 512  # the tiny config's image token id (16 ids per image)


def _samples(seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i, (n_text, n_img) in enumerate([(9, 1), (5, 0), (14, 1), (3, 1), (11, 0), (7, 2)]):
        text = torch.randint(3, 500, (n_text,), generator=g).tolist()
        ids = [1] + [IMG] * 16 * n_img + text
        labels = [-100] * (len(ids) - n_text // 2) + ids[len(ids) - n_text // 2:]
        item = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "sample_id": f"s{i}"}
        if n_img:
            item["images"] = torch.randn(n_img, 3, 56, 56, generator=g)
            item["images_aux"] = torch.randn(n_img, 3, 128, 128, generator=g)
        out.append(item)
    return out


def _forward_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("skipped_samples", "packed_rows", "sample_ids")}


def test_plan_rows_first_fit_decreasing() -> None:
    assert plan_rows([5, 3, 8, 2, 4], 10) == [[2, 3], [0, 4], [1]]  # 8+2, 5+4, 3
    assert plan_rows([11, 3, 6], 10) == [[0], [1, 2]]  # too long for a row: a row of its own


@pytest.mark.parametrize("llm,attn", [("llama", "sdpa"), ("llama", "eager"), ("qwen2", "sdpa"), ("gemma", "sdpa")])
def test_packed_logits_equal_samples_alone(llm: str, attn: str) -> None:
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(MiniGeminiConfig.tiny(llm=llm, supervised_logits_only=False)).eval()
    model.set_attn_implementation(attn)
    samples = _samples()
    batch = PackingCollator(pad_token_id=0, image_token_id=IMG, max_length=64, return_sample_ids=True)(samples)
    assert batch["input_ids"].shape[0] < len(samples) and "attention_mask" not in batch
    assert [len(r) for r in batch["packed_rows"]] and sum(map(len, batch["packed_rows"])) == len(samples)
    with torch.no_grad():
        logits = model(**_forward_inputs(batch), use_cache=False).logits  # no labels: say no cache
        by_id = {s["sample_id"]: s for s in samples}
        r, start, k = 0, 0, 0
        for sid in batch["sample_ids"]:  # walk the rows in packed order
            if k == len(batch["packed_rows"][r]):
                r, start, k = r + 1, 0, 0
            s = by_id[sid]
            n = len(s["input_ids"])
            alone = model(input_ids=s["input_ids"][None], attention_mask=torch.ones(1, n, dtype=torch.long),
                          images=s.get("images"), images_aux=s.get("images_aux")).logits[0]
            torch.testing.assert_close(logits[r, start:start + n], alone, rtol=1e-4, atol=1e-5)
            start, k = start + n, k + 1


@pytest.mark.parametrize("supervised_only", [True, False])
def test_packed_loss_equals_padded_loss(supervised_only: bool) -> None:
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(MiniGeminiConfig.tiny(supervised_logits_only=supervised_only)).train()
    samples = _samples(1)
    padded = DataCollator(pad_token_id=0, image_token_id=IMG)(samples)
    packed = PackingCollator(pad_token_id=0, image_token_id=IMG, max_length=80, pad_to_multiple_of=8)(samples)
    assert packed["input_ids"].shape[1] % 8 == 0
    assert padding_fraction(packed) < padding_fraction(padded)
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"][:, 1:] != -100).sum())
    loss_padded = model(**_forward_inputs(padded)).loss
    loss_padded.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    loss_packed = model(**_forward_inputs(packed)).loss
    loss_packed.backward()
    torch.testing.assert_close(loss_packed, loss_padded, rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(p.grad, grads[name], rtol=1e-3, atol=1e-5, msg=name)
