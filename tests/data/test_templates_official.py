"""The released checkpoints' templates write exactly what the official MGM code writes.

Golden strings typed from the official dvlab-research/MGM (commit 769820c) `mgm/conversation.py`
(`conv_templates[name]`, `append_message`, `get_prompt`) and `mgm/train/train.py::preprocess_plain`,
run on the conversation below; the supervised spans are those the official `preprocess_*` leaves
unmasked (run on tokenizers of each family; decoded here). Nothing of the official code is imported.
"""

from __future__ import annotations

import copy

import pytest
from tokenizers import processors

from minigemini.data.templates import (
    IGNORE_INDEX,
    OFFICIAL_TEMPLATES,
    get_template,
    needs_bos,
    normalize_messages,
    render_prompt,
    render_segments,
    stop_strings,
    stop_token_ids,
    tokenize_conversation,
)

Q1, A1, Q2, A2 = "<image>\nWhat is shown?", "A red square.", "How many dots?", "There are three small dots."
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
LLAMA3_SYS = ("<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful language and vision assistant. You are "
              "able to understand the visual content that the user provides, and assist the user with a variety of "
              "tasks using natural language.<|eot_id|>")
U3, A3 = "<|start_header_id|>user<|end_header_id|>\n\n", "<|start_header_id|>system<|end_header_id|>\n\n"
CHATML_SYS = "<|im_start|>system\nAnswer the questions.<|im_end|>"

# template -> (single turn, two turns, generation prompt, generation prompt of the second turn)
GOLDEN = {
    "vicuna_v1": (
        VICUNA + " USER: <image>\nWhat is shown? ASSISTANT: A red square.</s>",
        VICUNA + " USER: <image>\nWhat is shown? ASSISTANT: A red square.</s>USER: How many dots? ASSISTANT: There "
                 "are three small dots.</s>",
        VICUNA + " USER: <image>\nWhat is shown? ASSISTANT:",
        VICUNA + " USER: <image>\nWhat is shown? ASSISTANT: A red square.</s>USER: How many dots? ASSISTANT:"),
    "llama_3": (
        LLAMA3_SYS + U3 + "<image>\nWhat is shown?<|eot_id|>" + A3 + "A red square.<|eot_id|>",
        LLAMA3_SYS + U3 + "<image>\nWhat is shown?<|eot_id|>" + A3 + "A red square.<|eot_id|>" + U3
        + "How many dots?<|eot_id|>" + A3 + "There are three small dots.<|eot_id|>",
        LLAMA3_SYS + U3 + "<image>\nWhat is shown?<|eot_id|>" + A3,
        LLAMA3_SYS + U3 + "<image>\nWhat is shown?<|eot_id|>" + A3 + "A red square.<|eot_id|>" + U3
        + "How many dots?<|eot_id|>" + A3),
    "gemma": (
        "<start_of_turn>user\n<image>\nWhat is shown?<end_of_turn>\n<start_of_turn>model\nA red square.<end_of_turn>\n"
        "<eos>",
        "<start_of_turn>user\n<image>\nWhat is shown?<end_of_turn>\n<start_of_turn>model\nA red square.<end_of_turn>\n"
        "<eos><start_of_turn>user\nHow many dots?<end_of_turn>\n<start_of_turn>model\nThere are three small dots."
        "<end_of_turn>\n<eos>",
        "<start_of_turn>user\n<image>\nWhat is shown?<end_of_turn>\n<start_of_turn>model\n",
        "<start_of_turn>user\n<image>\nWhat is shown?<end_of_turn>\n<start_of_turn>model\nA red square.<end_of_turn>\n"
        "<eos><start_of_turn>user\nHow many dots?<end_of_turn>\n<start_of_turn>model\n"),
    "mistral_instruct": (
        "[INST] <image>\nWhat is shown? [/INST] A red square. </s>",
        "[INST] <image>\nWhat is shown? [/INST] A red square. </s><s>[INST] How many dots? [/INST] There are three "
        "small dots. </s>",
        "[INST] <image>\nWhat is shown? [/INST]",
        "[INST] <image>\nWhat is shown? [/INST] A red square. </s><s>[INST] How many dots? [/INST]"),
    "chatml_direct": (
        CHATML_SYS + "<|im_start|>user\n<image>\nWhat is shown?<|im_end|><|im_start|>assistant\n"
                     "A red square.<|im_end|>",
        CHATML_SYS + "<|im_start|>user\n<image>\nWhat is shown?<|im_end|><|im_start|>assistant\nA red square.<|im_end|>"
        "<|im_start|>user\nHow many dots?<|im_end|><|im_start|>assistant\nThere are three small dots.<|im_end|>",
        CHATML_SYS + "<|im_start|>user\n<image>\nWhat is shown?<|im_end|><|im_start|>assistant\n",
        CHATML_SYS + "<|im_start|>user\n<image>\nWhat is shown?<|im_end|><|im_start|>assistant\nA red square.<|im_end|>"
        "<|im_start|>user\nHow many dots?<|im_end|><|im_start|>assistant\n"),
}
# what the official preprocess_* supervises per answer (answer + the literal end of turn)
SUPERVISED = {"vicuna_v1": " {}</s>", "llama_3": "{}<|eot_id|>", "gemma": "{}<end_of_turn>\n<eos>",
              "mistral_instruct": " {} </s>", "chatml_direct": "{}<|im_end|>"}
FAMILY = {"vicuna_v1": "vicuna", "llama_3": "llama3", "gemma": "gemma", "mistral_instruct": "mistral",
          "chatml_direct": "yi"}
# the official generate() calls stop at EOS (+ <|eot_id|> for llama_3); the trained answer ends with these
STOPS = {"vicuna_v1": ["</s>"], "llama_3": ["<|eot_id|>"], "gemma": ["<end_of_turn>", "<eos>"],
         "mistral_instruct": ["</s>"], "chatml_direct": ["<|im_end|>"]}
# conv.system replaced by "Be brief." (the header kept where conversation.py puts it in the system text)
WITH_SYSTEM = {
    "vicuna_v1": "Be brief. USER: <image>\nWhat is shown? ASSISTANT:",
    "llama_3": "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" + U3 + "<image>\nWhat is shown?"
               "<|eot_id|>" + A3,
    "gemma": "Be brief.<start_of_turn>user\n<image>\nWhat is shown?<end_of_turn>\n<start_of_turn>model\n",
    "mistral_instruct": "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n<image>\nWhat is shown? [/INST]",
    "chatml_direct": "<|im_start|>system\nBe brief.<|im_end|><|im_start|>user\n<image>\nWhat is shown?<|im_end|>"
                     "<|im_start|>assistant\n",
}


def conversation(*texts: str) -> list[dict]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]


def rendered(name: str, turns: list[dict], tokenizer) -> str:
    return "".join(s.text for s in render_segments(normalize_messages(turns), name, tokenizer))


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_rendering_equals_official(name, make_processor):
    proc = make_processor(FAMILY[name])
    single, multi, gen, gen2 = GOLDEN[name]
    assert rendered(name, conversation(Q1, A1), proc.tokenizer) == single
    assert rendered(name, conversation(Q1, A1, Q2, A2), proc.tokenizer) == multi
    assert render_prompt(name, conversation(Q1), proc) == gen
    assert render_prompt(name, conversation(Q1, A1, Q2), proc) == gen2
    assert render_prompt(name, conversation(Q1), proc, system="Be brief.") == WITH_SYSTEM[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_supervised_spans_equal_official_preprocess(name, make_processor, supervised_runs):
    proc = make_processor(FAMILY[name])
    tok = proc.tokenizer
    ids, labels = tokenize_conversation(conversation(Q1, A1, Q2, A2), name, proc, sample_id="s")
    runs = supervised_runs(ids, labels)
    spm = FAMILY[name] in ("vicuna", "gemma", "mistral", "yi")  # tiny SentencePiece decoders drop a leading space
    want = [SUPERVISED[name].format(a) for a in (A1, A2)]
    assert [tok.decode(r, skip_special_tokens=False) for r in runs] == [w.lstrip(" ") if spm else w for w in want]
    # BOS: an id (never text), there iff the official recipe's tokenizer adds it (Yi's does not)
    assert (ids[0] == tok.bos_token_id) == (name != "chatml_direct") == needs_bos(name, tok)
    assert tok.decode(ids[:ids.index(proc.image_token_id)], skip_special_tokens=False).count(tok.bos_token) == \
        (name != "chatml_direct")


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_stop_strings_and_ids(name, make_processor):
    tok = make_processor(FAMILY[name]).tokenizer
    assert stop_strings(name, tok) == STOPS[name]
    want = [tok.convert_tokens_to_ids(s) for s in STOPS[name]] + [tok.eos_token_id]
    assert stop_token_ids(name, tok) == list(dict.fromkeys(want))


def test_plain_training_text_generation_prompt_and_bos(make_processor):
    """preprocess_plain: `<image>` + caption + sep "\\n" (question dropped); get_prompt: "<image>\\nq\\n"."""
    proc = make_processor("vicuna")
    turns = conversation("<image>\nDescribe it.", "A red square.")
    assert rendered("plain", turns, proc.tokenizer) == "<image>A red square.\n"
    assert render_prompt("plain", turns[:1], proc) == "<image>\nDescribe it.\n"
    assert stop_strings("plain", proc.tokenizer) == ["\n"]
    ids, labels = tokenize_conversation(turns, "plain", proc)
    caption = proc.tokenizer("A red square.\n", add_special_tokens=False)["input_ids"]
    # this tokenizer adds no BOS by itself, so plain has none (tokenizer_image_token keeps what the tokenizer adds)
    assert ids == [proc.image_token_id] * 16 + caption and labels == [IGNORE_INDEX] * 16 + caption
    bos_proc = copy.deepcopy(proc)  # a tokenizer that adds <s> itself (as Llama's does): plain starts with it
    bos_proc.tokenizer._tokenizer.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0", special_tokens=[("<s>", bos_proc.tokenizer.bos_token_id)])
    assert tokenize_conversation(turns, "plain", bos_proc) == ([1] + ids, [IGNORE_INDEX] + labels)


def test_official_names_are_accepted():
    """Every official conv_templates key of these six conversations (and our older names)."""
    official = {"v1": "vicuna_v1", "vicuna_v1": "vicuna_v1", "llama_3": "llama_3", "gemma": "gemma",
                "mistral_instruct": "mistral_instruct", "chatml_direct": "chatml_direct",
                "mistral_direct": "chatml_direct", "plain": "plain", "v0_plain": "plain"}
    for key, name in official.items():
        assert get_template(key).name == name
    assert set(OFFICIAL_TEMPLATES) == set(official.values())
    assert {old: get_template(old).name for old in ("chatml", "qwen2", "auto", "tokenizer", "llama3", "qwen")} == {
        "chatml": "chatml", "qwen2": "qwen2", "auto": "auto", "tokenizer": "auto", "llama3": "llama_3",
        "qwen": "qwen2"}
