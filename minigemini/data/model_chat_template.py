"""The chat template a saved model carries: its conversation template (`config.template`) as Jinja.

Every writer of a model folder (training export, `merge-lora`, `minigemini convert`) sets
`processor.chat_template = chat_template_for(model.config)`, so `processor.apply_chat_template(messages,
add_generation_prompt=True)` renders what training used. `minigemini.model` never imports this module
(a model loads without data/); the string travels in the saved `chat_template.jinja`.
"""

from __future__ import annotations

from typing import Any


def chat_template_for(config: Any) -> str | None:
    """Jinja chat template for `config.template` (a `MiniGeminiConfig` or anything with `.template`).

    HOOK: returns None (no chat template is saved) until `minigemini.data.chat_template.jinja_chat_template`
    exists; then it returns `jinja_chat_template(config.template)`.
    """
    return None
