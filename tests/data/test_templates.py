"""Templates: one masking routine, checked; MGM's vicuna_v1 layout reproduced id for id.

The official templates' exact text is in test_templates_official.py.
"""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from minigemini.data.templates import (IGNORE_INDEX, TEMPLATES, Template, TemplateError, TemplateMismatchError,
                                       get_template, normalize_messages, render_prompt, stop_strings,
                                       stop_token_ids, tokenize_conversation)
from minigemini.data.tokenizer import FAMILY_TEMPLATE

MGM = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "mgm_reference" / "tiny_a"

CONV = [{"from": "system", "value": "Be brief."},
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A red square."},
        {"from": "human", "value": "How many dots?"}, {"from": "gpt", "value": "There are three small dots."}]
EOT = {"vicuna": "</s>", "llama3": "<|eot_id|>", "gemma": "<end_of_turn>\n<eos>", "mistral": " </s>",
       "qwen2": "<|im_end|>", "chatml": "<|im_end|>", "yi": "<|im_end|>"}  # as trained (official MGM for the first 5)
STOP = {"gemma": ["<end_of_turn>", "<eos>"], "mistral": ["</s>"]}


@pytest.mark.skipif(not (MGM / "inputs.safetensors").exists(), reason="MGM fixture missing")
def test_vicuna_v1_reproduces_mgm_preprocess_v1(tiny_processor):
    ref = load_file(str(MGM / "inputs.safetensors"))
    records = json.loads((MGM / "data.json").read_text())
    supervised = 0
    for row, rec in enumerate(records):
        turns = [dict(t) for t in rec["conversations"]]  # MGM moves <image> to the front of its turn
        turns[0]["value"] = "<image>\n" + turns[0]["value"].replace("<image>", "").strip()
        ids, labels = tokenize_conversation(turns, "vicuna_v1", tiny_processor, sample_id=rec["id"])
        mask = ref["attention_mask"][row]
        mgm_ids, mgm_labels = ref["input_ids"][row][mask].tolist(), ref["labels"][row][mask].tolist()
        at = mgm_ids.index(-200)
        assert ids == mgm_ids[:at] + [512] * 16 + mgm_ids[at + 1:]
        assert labels == mgm_labels[:at] + [IGNORE_INDEX] * 16 + mgm_labels[at + 1:]
        supervised += sum(lab != IGNORE_INDEX for lab in labels)
    assert supervised == 57  # as the fixture README says (answers + each </s>)


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_multi_turn_supervises_exactly_the_answers(family, make_processor, supervised_runs):
    proc = make_processor(family)
    tok = proc.tokenizer
    template = FAMILY_TEMPLATE[family]
    ids, labels = tokenize_conversation(CONV, template, proc, sample_id="s1")
    runs = [tok.decode(r, skip_special_tokens=False).strip() for r in supervised_runs(ids, labels)]
    assert runs == ["A red square." + EOT[family], "There are three small dots." + EOT[family]]
    assert ids.count(proc.image_token_id) == 16 and labels[ids.index(proc.image_token_id)] == IGNORE_INDEX
    assert (ids[0] == tok.bos_token_id) == get_template(template).add_bos
    text = tok.decode(ids, skip_special_tokens=False)
    assert "Be brief." in text and "How many dots?" in text
    if template in ("qwen2", "chatml"):  # these render exactly like the model's own chat_template
        assert tokenize_conversation(CONV, "auto", proc, sample_id="s1") == (ids, labels)


def test_plain_supervises_caption_and_newline_only(tiny_processor):
    turns = [{"from": "human", "value": "Describe it.\n<image>"}, {"from": "gpt", "value": "A red square."}]
    ids, labels = tokenize_conversation(turns, "plain", tiny_processor, sample_id="p")
    bos = ids[:ids.index(512)]  # plain keeps a BOS only if the tokenizer adds one (see test_templates_official)
    assert bos in ([], [1]) and ids[len(bos):len(bos) + 16] == [512] * 16  # the human text is dropped (LLaVA plain)
    caption = tiny_processor.tokenizer("A red square.\n", add_special_tokens=False)["input_ids"]
    n = len(bos) + 16
    assert ids[n:] == caption and labels == [IGNORE_INDEX] * n + caption
    with pytest.raises(TemplateError, match="one user turn"):
        tokenize_conversation(turns * 2, "plain", tiny_processor)


def test_wrong_template_raises_named_error(make_processor):
    proc = make_processor("llama3")
    with pytest.raises(TemplateMismatchError, match="<start_of_turn>"):
        tokenize_conversation(CONV, "gemma", proc, sample_id="s7")


def test_token_merging_across_turn_boundary_is_caught(make_processor):
    """A template whose unsupervised suffix merges with the answer: the check names sample + texts."""
    from minigemini.data.tokenizer import train_tokenizer
    from minigemini import MiniGeminiConfig, MiniGeminiProcessor

    tok = train_tokenizer(["yes!! no!! yes!! maybe!!"] * 50, vocab_size=300, kind="spm", unk_token="<unk>")
    assert len(tok("yes!!", add_special_tokens=False)["input_ids"]) == 1  # "▁yes!!" is one piece
    proc = MiniGeminiProcessor(tok, MiniGeminiConfig.tiny(vocab_size=len(tok) + 1, image_token_id=None))
    bad = Template("bad", user_format="Q: {content}", assistant_prefix=" A:", assistant_format=" {content}",
                   end_of_turn="", assistant_suffix="!! ")
    with pytest.raises(TemplateMismatchError) as err:
        tokenize_conversation([{"from": "human", "value": "no"}, {"from": "gpt", "value": "yes"}], bad, proc,
                              sample_id="merge-1")
    msg = str(err.value)
    assert "'merge-1'" in msg and "'bad'" in msg and "decode to ''" in msg and "answer is 'yes'" in msg


@pytest.mark.parametrize("turns, kind", [
    ([{"from": "human", "value": "q"}, {"from": "robot", "value": "a"}], "unknown_role"),
    ([{"from": "human", "value": "q"}, {"from": "human", "value": "a"}], "not_alternating"),
    ([{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}], "not_alternating"),
    ([{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}], "empty_answer"),
    ([{"from": "human"}, {"from": "gpt", "value": "a"}], "missing_keys"),
])
def test_bad_conversations_raise_with_kind(turns, kind):
    with pytest.raises(TemplateError) as err:
        normalize_messages(turns, sample_id="x9")
    assert err.value.kind == kind and "'x9'" in str(err.value)


def test_system_prompt_sources(tiny_processor):
    turns = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "ok"}]
    assert render_prompt("vicuna_v1", turns[:1], tiny_processor).startswith("A chat between")
    assert render_prompt("vicuna_v1", [{"role": "system", "content": "Be terse."}] + turns[:1],
                         tiny_processor) == "Be terse. USER: hi ASSISTANT:"
    assert render_prompt("vicuna_v1", turns[:1], tiny_processor, system="S.") == "S. USER: hi ASSISTANT:"


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATE))
def test_render_prompt_is_the_training_prefix(family, make_processor):
    proc = make_processor(family)
    template = FAMILY_TEMPLATE[family]
    ids, labels = tokenize_conversation(CONV[:3], template, proc)
    prompt_ids = render_prompt(template, CONV[:2], proc, return_ids=True)
    first = next(i for i, lab in enumerate(labels) if lab != IGNORE_INDEX)
    assert ids[:first] == prompt_ids
    text = render_prompt(template, CONV[:2], proc)
    assert proc.tokenize(text, add_bos=get_template(template).add_bos) == prompt_ids
    eot = STOP.get(family, [EOT[family]])
    assert stop_strings(template, proc.tokenizer) == eot
    assert proc.tokenizer.convert_tokens_to_ids(eot[0]) in stop_token_ids(template, proc.tokenizer)


def test_registry_and_aliases():
    assert set(TEMPLATES) >= {"plain", "vicuna_v1", "llama_3", "gemma", "mistral_instruct", "chatml", "qwen2", "auto"}
    assert get_template("tokenizer") is TEMPLATES["auto"] and get_template("v1").name == "vicuna_v1"
    with pytest.raises(KeyError, match="unknown conversation template"):
        get_template("nope")
