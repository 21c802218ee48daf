"""A Jinja `chat_template` for each named conversation template, so `apply_chat_template` writes our text.

`jinja_chat_template(name)` is generated from the `Template` fields (no second hand-written copy):
`tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)` gives exactly
`render_prompt(name, messages, ...)`, and without `add_generation_prompt` the full conversation as
training writes it. Messages are `{"role": "system"|"user"|"assistant", "content": str}`; an image
is the `<image>` placeholder in the text. BOS is never part of the text (as in `render_prompt`): the
processor adds it as an id when `needs_bos(name, tokenizer)` says so.
"""

from __future__ import annotations

import json
from string import Formatter

from .templates import Template, get_template

_FIELDS = {"system": "system", "eos": "eos_token", "bos": "bos_token"}


def _expr(fmt: str, content: str = "''") -> str:
    """A Jinja expression writing the `str.format` pattern `fmt` (`{content}` = the expression `content`)."""
    parts: list[str] = []
    for literal, field, _, _ in Formatter().parse(fmt):
        if literal:
            parts.append(json.dumps(literal))
        if field is not None:
            parts.append(content if field == "content" else _FIELDS[field])
    return "(" + " ~ ".join(parts) + ")" if parts else "''"


def _user_block(t: Template) -> str:
    """The Jinja that writes one user turn (`message`), as `templates._user_text` does."""
    text = "{% set c = message['content'] %}"
    if t.images_only_user:
        text += "{% set c = '<image>' * (c.count('<image>')) %}"
    if t.system_in_user:
        text += "{% if loop.first %}{% set c = system_text ~ c %}{% endif %}"
    text += "{{ " + _expr(t.user_format, "c") + " }}"
    if t.generation_user_format is not None:
        text = ("{% if add_generation_prompt %}{{ " + _expr(t.generation_user_format, "message['content']")
                + " }}{% else %}" + text + "{% endif %}")
    if t.turn_separator:
        text = "{% if not loop.first %}{{ " + _expr(t.turn_separator) + " }}{% endif %}" + text
    return text


def jinja_chat_template(template_name: str) -> str:
    """The Jinja chat template that renders like the named conversation template (see module doc)."""
    t = get_template(template_name)
    if t.use_chat_template:
        raise ValueError(f"template {template_name!r} renders with the tokenizer's own chat_template; "
                         "name a conversation template (e.g. vicuna_v1, llama_3, gemma) to generate one")
    answer = _expr(t.assistant_prefix) + " ~ " + _expr(t.assistant_format, "message['content']") + " ~ " \
        + _expr(t.end_of_turn) + " ~ " + _expr(t.assistant_suffix)
    limit = ("{% if loop_messages | length > (1 if add_generation_prompt else 2) %}{{ raise_exception("
             + json.dumps(f"template {t.name!r} takes one user turn and one answer") + ") }}{% endif %}"
             if t.single_turn else "")
    return (
        "{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
        "{% set loop_messages = messages[1:] %}{% else %}{% set system = " + json.dumps(t.system) + " %}"
        "{% set loop_messages = messages %}{% endif %}" + limit
        + "{% set system_text = " + _expr(t.system_format) + " if system else '' %}"
        + ("" if t.system_in_user else "{{ system_text }}")
        + "{% for message in loop_messages %}{% if message['role'] == 'user' %}" + _user_block(t)
        + "{% else %}{{ " + answer + " }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ " + _expr(t.assistant_prefix) + " }}{% endif %}")
