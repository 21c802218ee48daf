"""Model side of minigemini; importable without the training stack.

The classes load lazily, so importing a light submodule (e.g. while the CLI builds its parser) never
loads torch or transformers. Each class registers itself with the transformers Auto classes in the
module that defines it (configuration: AutoConfig; modeling: AutoModelForCausalLM,
AutoModelForImageTextToText, AutoModel; image_processing: AutoImageProcessor; processing: AutoProcessor);
`minigemini.register_auto_classes()` imports them all. `AutoModel` gives the full
`MiniGeminiForCausalLM` (there is no separate headless model).
"""

from importlib import import_module
from typing import Any

_WHERE = {"MiniGeminiConfig": "configuration", "MiniGeminiForCausalLM": "modeling",
          "MiniGeminiProcessor": "processing", "MiniGeminiImageProcessor": "image_processing",
          "MiniGeminiLRImageProcessor": "image_processing"}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'minigemini.model' has no attribute {name!r}")
