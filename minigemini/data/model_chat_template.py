"""The chat template a saved model carries: its conversation template (`config.template`) as Jinja.

Every writer of a model folder (training export, `merge-lora`, `minigemini convert`) calls
`set_chat_template(processor)` before saving, so `processor.apply_chat_template(messages,
add_generation_prompt=True)` renders what training used and the processor adds BOS (as an id) exactly
when the template does. `minigemini.model` never imports this module (a model loads without data/);
both travel in the saved folder (`chat_template.jinja`, `processor_config.json`).
"""

from __future__ import annotations

import json
from typing import Any

from .chat_template import jinja_chat_template
from .templates import get_template, needs_bos


def content_parts_jinja(image_token: str) -> str:
    """Jinja that turns list contents (transformers' `{"type": "image"}` / `{"type": "text", "text": ...}` parts)
    into our text form, as the OpenAI server does: an image part writes `<image>\\n`, a text part its text."""
    image = json.dumps(image_token + "\n")
    return (
        "{% set ns = namespace(messages=[]) %}{% for m in messages %}{% if m['content'] is string %}"
        "{% set ns.messages = ns.messages + [m] %}{% else %}{% set part_text = namespace(value='') %}"
        "{% for part in m['content'] %}{% if part['type'] == 'image' %}"
        "{% set part_text.value = part_text.value ~ " + image + " %}"
        "{% elif part['type'] == 'text' %}{% set part_text.value = part_text.value ~ part['text'] %}"
        "{% else %}{{ raise_exception('unsupported content part type ' ~ part['type'] ~ ' (use image or text)') }}"
        "{% endif %}{% endfor %}{% set ns.messages = ns.messages + [{'role': m['role'], 'content': part_text.value}] %}"
        "{% endif %}{% endfor %}{% set messages = ns.messages %}")


def chat_template_for(config: Any, tokenizer: Any = None) -> str:
    """Jinja chat template for `config.template` (a `MiniGeminiConfig` or anything with `.template` and
    `.image_token`); template `auto` is the tokenizer's own chat template, as training renders it."""
    if get_template(config.template).use_chat_template:
        own = getattr(tokenizer, "chat_template", None)
        if not isinstance(own, str):
            raise ValueError(f"template {config.template!r} renders with the tokenizer's chat_template, but the "
                             "tokenizer has none; set the model's template (config.json \"template\") to a named one")
        body = own
    else:
        body = jinja_chat_template(config.template)
    return content_parts_jinja(getattr(config, "image_token", "<image>")) + body


def set_chat_template(processor: Any) -> None:
    """Give `processor` (a `MiniGeminiProcessor`) the model's chat template and BOS rule, before it is saved."""
    processor.chat_template = chat_template_for(processor.config, processor.tokenizer)
    processor.add_bos = needs_bos(processor.config.template, processor.tokenizer)
