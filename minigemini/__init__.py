"""minigemini: train, fine-tune and evaluate Mini-Gemini-style vision-language models.

Importing the package registers the model with the transformers Auto classes (AutoConfig,
AutoModelForCausalLM, AutoModelForImageTextToText, AutoModel, AutoProcessor, AutoImageProcessor), so a
saved folder loads with plain transformers calls and `pipeline("image-text-to-text")`.
"""

import os

# Before torch loads OpenMP (the import below loads it): idle threads sleep instead of spin-waiting. On a
# busy CPU, spinning threads of small ops stall each other (measured: a tiny-model training stage 68 s ->
# 3.5 s with 2 threads while another process ran). Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .model import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor  # noqa: E402  (registers)

__version__ = "0.1.0"

__all__ = ["MiniGeminiConfig", "MiniGeminiForCausalLM", "MiniGeminiProcessor", "__version__"]
