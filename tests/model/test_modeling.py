"""The wrapper: splicing, mixed batches, loss masking, generation, save/load, several LLM families."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM

FAMILIES = ["llama", "gemma", "qwen2", "mistral", "phi3"]


def _batch(cfg: MiniGeminiConfig, hd: bool = False):
    """Row 0: text + image + text; row 1: text only (right padded)."""
    n = cfg.num_image_tokens
    img = cfg.image_token_id
    row0 = [1, 10, 11] + [img] * n + [12, 13, 14, 15]
    row1 = [1, 20, 21, 22, 23]
    width = len(row0)
    ids = torch.zeros(2, width, dtype=torch.long)
    ids[0] = torch.tensor(row0)
    ids[1, : len(row1)] = torch.tensor(row1)
    mask = torch.zeros_like(ids)
    mask[0] = 1
    mask[1, : len(row1)] = 1
    labels = ids.clone()
    labels[ids == img] = -100
    labels[mask == 0] = -100
    images = torch.randn(1, 5, 3, 56, 56) if hd else torch.randn(1, 3, 56, 56)
    images_aux = torch.randn(1, 3, cfg.image_size_aux, cfg.image_size_aux)
    return ids, mask, labels, images, images_aux


def _model(llm: str = "llama", **kw) -> MiniGeminiForCausalLM:
    torch.manual_seed(0)
    return MiniGeminiForCausalLM(MiniGeminiConfig.tiny(llm=llm, **kw)).eval()


def test_splice_writes_visual_tokens_at_image_positions() -> None:
    model = _model()
    cfg = model.config
    ids, mask, _, images, aux = _batch(cfg)
    with torch.no_grad():
        visual = model.encode_images(images, aux)
        embeds = model.embed_tokens(ids, visual)
        table = model.get_input_embeddings().weight
    pos = (ids[0] == cfg.image_token_id).nonzero().squeeze(1)
    assert pos.tolist() == list(range(3, 3 + cfg.num_image_tokens))
    torch.testing.assert_close(embeds[0, pos], visual[0])
    torch.testing.assert_close(embeds[0, :3], table[ids[0, :3]])
    torch.testing.assert_close(embeds[1], table[ids[1]])  # text-only row untouched


def test_mixed_batch_rows_equal_single_sample_runs() -> None:
    model = _model()
    model.config.supervised_logits_only = False
    ids, mask, labels, images, aux = _batch(model.config)
    with torch.no_grad():
        both = model(ids, mask, images=images, images_aux=aux).logits
        alone_img = model(ids[:1], mask[:1], images=images, images_aux=aux).logits
        n = int(mask[1].sum())
        alone_txt = model(ids[1:, :n], mask[1:, :n]).logits
    torch.testing.assert_close(both[0], alone_img[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both[1, :n], alone_txt[0], rtol=1e-4, atol=1e-5)


def test_loss_ignores_image_positions_and_matches_manual_ce() -> None:
    model = _model()
    ids, mask, labels, images, aux = _batch(model.config)
    model.config.supervised_logits_only = False
    with torch.no_grad():
        out = model(ids, mask, labels=labels, images=images, images_aux=aux)
    logits = out.logits[:, :-1]
    targets = labels[:, 1:]
    keep = targets != -100
    # image positions are never targets. Row 0 targets: 10, 11 (before the image) and 12..15 = 6;
    # row 1: 20..23 = 4 (BOS is never a target); nothing predicts an image token.
    assert int(keep.sum()) == 6 + 4
    assert not (targets[keep] == model.config.image_token_id).any()
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(out.loss, manual)
    # the supervised-only path gives the same loss without full logits
    model.config.supervised_logits_only = True
    with torch.no_grad():
        sparse = model(ids, mask, labels=labels, images=images, images_aux=aux)
    assert sparse.logits is None
    torch.testing.assert_close(sparse.loss, out.loss, rtol=1e-5, atol=1e-6)


def test_mismatched_image_tokens_raise_clear_error() -> None:
    model = _model()
    ids, mask, _, images, aux = _batch(model.config)
    with pytest.raises(ValueError, match="image tokens but 2 images"):
        model(ids, mask, images=torch.cat([images, images]), images_aux=torch.cat([aux, aux]))
    with pytest.raises(ValueError, match="no images were given"):
        model(ids, mask)


@pytest.mark.parametrize("hd", [False, True])
def test_generate_with_cache_equals_no_cache_and_manual_greedy_loop(hd: bool) -> None:
    model = _model(hd=hd)
    ids, mask, _, images, aux = _batch(model.config, hd=hd)
    ids, mask = ids[:1], mask[:1]
    kw = dict(images=images, images_aux=aux, max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(input_ids=ids, attention_mask=mask, use_cache=True, **kw)
        uncached = model.generate(input_ids=ids, attention_mask=mask, use_cache=False, **kw)
        seq = ids
        for _ in range(6):
            logits = model(seq, torch.ones_like(seq), images=images, images_aux=aux, use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached, seq)
    assert cached.shape[1] == ids.shape[1] + 6


def test_save_load_roundtrip_identical_outputs(tmp_path) -> None:
    model = _model()
    model.config.supervised_logits_only = False
    ids, mask, labels, images, aux = _batch(model.config)
    with torch.no_grad():
        before = model(ids, mask, labels=labels, images=images, images_aux=aux)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = MiniGeminiForCausalLM.from_pretrained(tmp_path).eval()
    via_auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(via_auto, MiniGeminiForCausalLM)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "minigemini"
    for m in (loaded, via_auto):
        with torch.no_grad():
            after = m(ids, mask, labels=labels, images=images, images_aux=aux)
        assert torch.equal(before.logits, after.logits)
        assert torch.equal(before.loss, after.loss)


@pytest.mark.parametrize("llm", FAMILIES)
def test_llm_families_through_one_wrapper(llm: str, tmp_path) -> None:
    model = _model(llm)
    assert model.language_model.config.model_type == llm
    ids, mask, labels, images, aux = _batch(model.config)
    model.train()
    out = model(ids, mask, labels=labels, images=images, images_aux=aux)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.projector[0].weight.grad is not None and model.mining.query[1].weight.grad is not None
    assert all(p.grad is None for p in model.vision_lr.parameters()), "frozen tower got gradients"
    model.eval()
    model.config.supervised_logits_only = False
    with torch.no_grad():
        ref = model(ids, mask, images=images, images_aux=aux).logits
        gen = model.generate(input_ids=ids[:1], attention_mask=mask[:1], images=images, images_aux=aux,
                             max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert gen.shape == (1, ids.shape[1] + 3)
    model.save_pretrained(tmp_path)
    again = MiniGeminiForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(again(ids, mask, images=images, images_aux=aux).logits, ref)


def test_lr_only_baseline_has_no_hr_parts() -> None:
    model = _model(use_hr=False)
    assert model.vision_hr is None and model.mining is None
    ids, mask, labels, images, _ = _batch(model.config)
    with torch.no_grad():
        out = model(ids, mask, labels=labels, images=images)
    assert torch.isfinite(out.loss)


def test_prebuilt_llm_keeps_causal_attention() -> None:
    from minigemini.model.configuration import tiny_text_config

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(tiny_text_config("llama"))
    model = MiniGeminiForCausalLM(MiniGeminiConfig.tiny(text_config=lm.config), language_model=lm).eval()
    assert model.language_model.config._attn_implementation == "sdpa"
    ids = torch.randint(3, 500, (1, 10))
    changed = ids.clone()
    changed[0, -1] = 7
    with torch.no_grad():
        a = model(ids).logits
        b = model(changed).logits
    torch.testing.assert_close(a[0, :-1], b[0, :-1])  # a later token must not change earlier logits


@pytest.mark.parametrize("auto", [False, True])
def test_towers_stay_frozen_after_from_pretrained(tmp_path, auto: bool) -> None:
    _model().save_pretrained(tmp_path)
    cls = AutoModelForCausalLM if auto else MiniGeminiForCausalLM
    model = cls.from_pretrained(tmp_path).train()  # v5 loads weights as new Parameters (requires_grad=True)
    for tower in (model.vision_lr, model.vision_hr):
        assert not any(p.requires_grad for p in tower.parameters())
        assert not any(m.training for m in tower.modules())
    assert model.projector.training and all(p.requires_grad for p in model.projector.parameters())
    ids, mask, labels, images, aux = _batch(model.config)
    visual = model.encode_images(images, aux)
    assert visual.requires_grad  # the connector trains; the towers build no graph
    assert not model.vision_lr(images).requires_grad
