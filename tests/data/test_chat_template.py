"""jinja_chat_template: the real `apply_chat_template` writes exactly what the template renderer writes."""

from __future__ import annotations

import copy

import pytest

from minigemini.data.chat_template import jinja_chat_template
from minigemini.data.templates import TEMPLATES, normalize_messages, render_prompt, render_segments
from minigemini.data.tokenizer import tiny_tokenizer

FAMILY = {"vicuna_v1": "vicuna", "llama_3": "llama3", "gemma": "gemma", "mistral_instruct": "mistral",
          "chatml_direct": "yi", "chatml": "chatml", "qwen2": "qwen2", "plain": "vicuna"}
IMG_Q = {"role": "user", "content": "<image>\nWhat is shown?"}
TURNS = [IMG_Q, {"role": "assistant", "content": "A red square."},
         {"role": "user", "content": "How many dots?"}, {"role": "assistant", "content": "There are three small dots."}]
CASES = {"single": TURNS[:2], "multi": TURNS, "system": [{"role": "system", "content": "Be brief."}] + TURNS}
_TOKENIZERS: dict = {}


def tokenizer_with(name: str):
    family = FAMILY[name]
    if family not in _TOKENIZERS:
        _TOKENIZERS[family] = tiny_tokenizer(family)
    tok = copy.deepcopy(_TOKENIZERS[family])
    tok.chat_template = jinja_chat_template(name)
    return tok


def test_every_named_template_is_covered():
    assert set(FAMILY) == {n for n, t in TEMPLATES.items() if not t.use_chat_template}


@pytest.mark.parametrize("name", sorted(FAMILY))
@pytest.mark.parametrize("case", sorted(CASES))
def test_apply_chat_template_equals_renderer(name, case):
    tok = tokenizer_with(name)
    messages = CASES[case]
    if name == "plain" and case != "single":
        with pytest.raises(Exception, match="one user turn"):
            tok.apply_chat_template(messages, tokenize=False)
        return
    full = "".join(s.text for s in render_segments(normalize_messages(messages), name, tok))
    assert tok.apply_chat_template(messages, tokenize=False) == full
    prompt = messages[:-1]
    assert tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False) == \
        render_prompt(name, prompt, tok)


def test_golden_generation_prompts():
    """Two typed from the official conversation.py (see test_templates_official.py for all)."""
    tok = tokenizer_with("mistral_instruct")
    assert tok.apply_chat_template(TURNS[:3], add_generation_prompt=True, tokenize=False) == \
        "[INST] <image>\nWhat is shown? [/INST] A red square. </s><s>[INST] How many dots? [/INST]"
    tok = tokenizer_with("plain")
    assert tok.apply_chat_template([IMG_Q], add_generation_prompt=True, tokenize=False) == "<image>\nWhat is shown?\n"
    assert tok.apply_chat_template(TURNS[:2], tokenize=False) == "<image>A red square.\n"


def test_auto_has_no_generated_template():
    with pytest.raises(ValueError, match="tokenizer's own chat_template"):
        jinja_chat_template("auto")
