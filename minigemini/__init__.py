"""minigemini: train, fine-tune and evaluate Mini-Gemini-style vision-language models.

The public classes are imported lazily, so `import minigemini` (and `minigemini --help`) stays fast
and the CLI can set up the CPU threading environment before torch loads.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = ["MiniGeminiConfig", "MiniGeminiForCausalLM", "MiniGeminiProcessor", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("MiniGeminiConfig", "MiniGeminiForCausalLM"):
        from . import model

        return getattr(model, name)
    if name == "MiniGeminiProcessor":
        from .model.processing import MiniGeminiProcessor

        return MiniGeminiProcessor
    raise AttributeError(f"module 'minigemini' has no attribute {name!r}")
