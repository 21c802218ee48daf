"""Model side of minigemini; importable without the training stack.

The classes load lazily, so importing a light submodule (e.g. `minigemini.model.commands` while the
CLI builds its parser) never loads torch or transformers. Importing `configuration` registers the
config with `AutoConfig`, importing `modeling` registers the model with `AutoModelForCausalLM`.
"""

from typing import Any

__all__ = ["MiniGeminiConfig", "MiniGeminiForCausalLM"]


def __getattr__(name: str) -> Any:
    if name == "MiniGeminiConfig":
        from .configuration import MiniGeminiConfig

        return MiniGeminiConfig
    if name == "MiniGeminiForCausalLM":
        from .modeling import MiniGeminiForCausalLM

        return MiniGeminiForCausalLM
    raise AttributeError(f"module 'minigemini.model' has no attribute {name!r}")
