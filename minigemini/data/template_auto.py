"""Template "auto": render with the tokenizer's own `chat_template`, find the answers by rendering prefixes.

Used by `minigemini.data.templates.render_segments` for templates with `use_chat_template=True`.
"""

from __future__ import annotations

import re
from typing import Any

from .templates import Segment, TemplateError


def _render(tokenizer: Any, messages: list[dict], gen: bool) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(f"template 'auto' needs a tokenizer with a chat_template; "
                            f"{type(tokenizer).__name__} has none: pick a named template instead")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)


def chat_template_segments(messages: list[dict], tokenizer: Any, add_generation_prompt: bool) -> list[Segment]:
    """Render with the tokenizer's chat_template; assistant spans come from rendering prefixes."""
    if messages and messages[0]["role"] == "system":
        try:
            shown = messages[0]["content"].strip() in _render(tokenizer, messages[:2], False)
        except TemplateError:
            raise
        except Exception:  # noqa: BLE001 (jinja raise_exception: the template has no system role)
            shown = False
        if not shown:  # no system role (Gemma, Mistral): the system text opens the first user turn
            system, first = messages[0]["content"], messages[1]
            messages = [{"role": "user", "content": f"{system}\n\n{first['content']}"}] + messages[2:]
    full = _render(tokenizer, messages, add_generation_prompt)
    markers = sorted({str(s) for s in getattr(tokenizer, "all_special_tokens", []) if s}, key=len, reverse=True)
    eot = re.compile(r"\s*(?:" + "|".join(map(re.escape, markers)) + ")") if markers else None
    segs: list[Segment] = []
    pos, answer = 0, 0
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, upto = _render(tokenizer, messages[:k], True), _render(tokenizer, messages[:k + 1], False)
        if not (full.startswith(before) and full.startswith(upto) and len(upto) > len(before)):
            raise TemplateError("the tokenizer's chat_template does not render conversations prefix by prefix; "
                                "template 'auto' cannot find the answers: pick a named template")
        content = m["content"].strip()
        at = full.find(content, len(before), len(upto))
        if at < 0:
            raise TemplateError(f"answer {answer} is not found verbatim in the chat_template rendering")
        end = at + len(content)
        match = eot.match(full, end, len(upto)) if eot else None
        end = match.end() if match else end
        segs += [Segment(full[pos:len(before)]), Segment(full[len(before):end], supervised=True, turn=answer)]
        pos, answer = end, answer + 1
    segs.append(Segment(full[pos:]))
    return [s for s in segs if s.text]
