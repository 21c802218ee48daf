"""Which conversation template a run uses: ONE option, `data.template`, decided here.

`data.template` is the template the training texts are rendered with; in a stage other than pretrain it is
also written into the model's config, so the export chats in it. null = the model's own: the `init_from`
folder's template, or for a model built from `llm` + towers its family's, picked as `minigemini convert`
picks it (`minigemini.model.builder.llm_template`; a family it cannot tell is an error asking for data.template).
"""

from __future__ import annotations

from typing import Any

from ..config import RunConfig


def config_template(cfg: RunConfig, spec: Any = None, tokenizer: Any = None) -> str | None:
    """The template written into the model's config, or None to keep the model's own. In stage pretrain (rendered
    with `plain`) that is the model's own; only for an LLM family minigemini cannot tell (needs `spec` and
    `tokenizer`) it is data.template, the template the model was trained in."""
    template = cfg.data.template or None
    if cfg.training.stage != "pretrain":
        return template
    if template is None or spec is None or spec.init_from:
        return None
    from ..model.builder import llm_family_template

    return None if llm_family_template(spec.llm, tokenizer) is not None else template


def data_template(cfg: RunConfig, spec: Any, tokenizer: Any) -> str | None:
    """The template the texts are rendered with; None = the init_from folder's own (read with the model)."""
    if cfg.data.template:
        return cfg.data.template
    if spec.init_from:
        return None
    from ..model.builder import llm_template

    return llm_template(spec.llm, tokenizer)
