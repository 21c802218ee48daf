"""Small tokenizers trained locally (nothing downloads), for tests and the CPU demo.

`train_tokenizer` trains a lossless byte-level BPE (GPT-2 / Llama-3 style; `kind="bpe"`) or a
SentencePiece-style BPE with byte fallback (`kind="spm"`: "▁" word prefix, Llama-2 / Mistral /
Gemma style) with the `tokenizers` library. `tiny_tokenizer(family)` adds the special tokens and a
`chat_template` shaped like the real model family's, so every conversation template can be tested;
`base_tokenizer` is the one of the tiny random-init base (`model.tiny`, the demo). The only place that
trains a tokenizer.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "You are a helpful language and vision assistant. Describe the image in detail.",
    "What is shown in this image? A red square and a blue circle on a gray background.",
    "How many dots are there? There are three small dots. What color are they? They are green.",
    "The quick brown fox jumps over the lazy dog. 0123456789 !?.,;:'\"()[]{}<>/\\|@#$%^&*-_=+~`",
]

LLAMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}")
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% elif message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + eos_token }}"
    "{% endif %}{% endfor %}")

# family -> (kind, bos, eos, pad, unk, extra special tokens, chat_template)
FAMILIES: dict[str, tuple] = {
    "vicuna": ("spm", "<s>", "</s>", "<unk>", "<unk>", (), None),
    "llama3": ("bpe", "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", None,
               ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"), LLAMA3_CHAT_TEMPLATE),
    "gemma": ("spm", "<bos>", "<eos>", "<pad>", "<unk>", ("<start_of_turn>", "<end_of_turn>"), GEMMA_CHAT_TEMPLATE),
    "mistral": ("spm", "<s>", "</s>", "<unk>", "<unk>", ("[INST]", "[/INST]"), MISTRAL_CHAT_TEMPLATE),
    "qwen2": ("bpe", None, "<|im_end|>", "<|endoftext|>", None, ("<|im_start|>",), QWEN2_CHAT_TEMPLATE),
    "chatml": ("bpe", "<s>", "<|im_end|>", "<pad>", None, ("<|im_start|>",), CHATML_CHAT_TEMPLATE),
    "yi": ("spm", "<|startoftext|>", "<|im_end|>", "<unk>", "<unk>", ("<|im_start|>", "<|endoftext|>"),
           CHATML_CHAT_TEMPLATE),  # Nous-Hermes-2-Yi-34B (MGM-34B): ChatML markers, no BOS added
}
# the conversation template each family is used with
FAMILY_TEMPLATE = {"vicuna": "vicuna_v1", "llama3": "llama_3", "gemma": "gemma", "mistral": "mistral_instruct",
                   "qwen2": "qwen2", "chatml": "chatml", "yi": "chatml_direct"}
BYTE_TOKENS = [f"<0x{i:02X}>" for i in range(256)]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, special_tokens: Sequence[str] = (),
                    kind: str = "bpe", bos_token: str | None = "<s>", eos_token: str | None = "</s>",
                    pad_token: str | None = "<pad>", unk_token: str | None = None) -> PreTrainedTokenizerFast:
    """Train a tiny lossless tokenizer on `texts` ("bpe": byte-level; "spm": "▁" words + byte fallback)."""
    named = [t for t in (pad_token, bos_token, eos_token, unk_token) if t]
    specials = list(dict.fromkeys(named + list(special_tokens)))
    texts = list(texts)
    if kind == "bpe":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tk.decoder = decoders.ByteLevel()
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tk.train_from_iterator(texts, trainer)
    elif kind == "spm":
        tk = _train_spm(texts, vocab_size, specials, unk_token)
    else:
        raise ValueError(f"kind must be 'bpe' or 'spm', got {kind!r}")
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos_token, eos_token=eos_token,
                                   pad_token=pad_token, unk_token=unk_token,
                                   additional_special_tokens=[t for t in specials if t not in named])


def base_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """The tiny base model's tokenizer (`model.tiny`, the demo): byte-level BPE trained on the run's `texts`;
    unk 0, bos 1, eos 2, pad = unk as in LLaVA; no BOS added by the tokenizer (the templates add it)."""
    return train_tokenizer(texts, vocab_size, kind="bpe", bos_token="<s>", eos_token="</s>", pad_token="<unk>",
                           unk_token="<unk>")


def _train_spm(texts: list[str], vocab_size: int, specials: list[str], unk_token: str | None) -> Tokenizer:
    """SentencePiece-like BPE: spaces become "▁" (one prepended at the start), unknown chars fall back to bytes."""
    meta = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    probe = Tokenizer(models.BPE(unk_token=unk_token))
    probe.pre_tokenizer = meta
    trainer = trainers.BpeTrainer(vocab_size=max(vocab_size - len(BYTE_TOKENS), len(specials) + 64),
                                  special_tokens=specials, show_progress=False)
    probe.train_from_iterator(texts, trainer)
    vocab = probe.get_vocab()
    for b in BYTE_TOKENS:  # byte-fallback pieces after the learned ones, so the tokenizer is lossless
        vocab.setdefault(b, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
              for m in _merges(probe)]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk_token, byte_fallback=True, fuse_unk=True))
    tk.pre_tokenizer = meta
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens(specials)
    return tk


def _merges(tk: Tokenizer) -> list:
    import json

    return json.loads(tk.to_str())["model"]["merges"]


def tiny_tokenizer(family: str = "llama3", texts: Iterable[str] = (), vocab_size: int = 400,
                   kind: str | None = None) -> PreTrainedTokenizerFast:
    """A tiny tokenizer with `family`'s special tokens and chat template (see `FAMILIES`)."""
    if family not in FAMILIES:
        raise KeyError(f"unknown tokenizer family {family!r}; choose one of {sorted(FAMILIES)}")
    default_kind, bos, eos, pad, unk, extra, chat_template = FAMILIES[family]
    corpus = CORPUS + list(texts) + [" ".join(extra)]
    tok = train_tokenizer(corpus, vocab_size, special_tokens=extra, kind=kind or default_kind, bos_token=bos,
                          eos_token=eos, pad_token=pad, unk_token=unk)
    if chat_template:
        tok.chat_template = chat_template
    return tok
