"""minigemini: train, fine-tune and evaluate Mini-Gemini-style vision-language models."""

__version__ = "0.1.0"

from .model import MiniGeminiConfig, MiniGeminiForCausalLM  # noqa: E402
from .model.processing import MiniGeminiProcessor  # noqa: E402

__all__ = ["MiniGeminiConfig", "MiniGeminiForCausalLM", "MiniGeminiProcessor", "__version__"]
