"""Locally trained tiny tokenizers: lossless, special tokens intact, save/load round trip."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from minigemini.data.tokenizer import FAMILIES, FAMILY_TEMPLATE, tiny_tokenizer, train_tokenizer

TEXT = "Hello wörld 🙂 — tabs\tand  double  spaces\nnew line <b>x</b> 3.14"


@pytest.mark.parametrize("kind", ["bpe", "spm"])
def test_train_tokenizer_is_lossless(kind):
    tok = train_tokenizer(["some words to learn merges from"] * 5, vocab_size=300, special_tokens=["<sep>"],
                          kind=kind, unk_token="<unk>" if kind == "spm" else None)
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == TEXT
    sep = tok.convert_tokens_to_ids("<sep>")
    assert sep == (4 if kind == "spm" else 3)  # after pad, bos, eos (, unk)
    assert tok("a<sep>b", add_special_tokens=False)["input_ids"].count(sep) == 1
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    with pytest.raises(ValueError, match="kind must be"):
        train_tokenizer(["x"], kind="wordpiece")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_tokenizers_round_trip(family, tmp_path):
    tok = tiny_tokenizer(family)
    for special in FAMILIES[family][5]:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(TEXT)["input_ids"] == tok(TEXT)["input_ids"] and again.decode(tok(TEXT, add_special_tokens=False)
                                                                                ["input_ids"]) == TEXT
    assert again.chat_template == tok.chat_template and again.eos_token == tok.eos_token
    assert family in FAMILY_TEMPLATE
