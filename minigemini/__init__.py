"""minigemini: train, fine-tune and evaluate Mini-Gemini-style vision-language models.

`import minigemini` registers the model with the transformers Auto classes (AutoConfig,
AutoModelForCausalLM, AutoModelForImageTextToText, AutoModel, AutoProcessor, AutoImageProcessor), so a
saved folder loads with plain transformers calls and `pipeline("image-text-to-text")`. The one exception
is the `minigemini` console script: it builds its parser without torch (a fast `--help`), and each
command imports the model modules it uses, which register themselves.
"""

import os
import sys
from typing import Any

# Before torch loads OpenMP: idle threads sleep instead of spin-waiting. On a busy CPU, spinning threads
# of small ops stall each other (measured: a tiny-model training stage 68 s -> 3.5 s with 2 threads
# while another process ran). Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

__all__ = ["MiniGeminiConfig", "MiniGeminiForCausalLM", "MiniGeminiProcessor", "register_auto_classes",
           "__version__"]


def register_auto_classes() -> None:
    """Import the model modules; each registers its classes with the transformers Auto classes."""
    from .model import configuration, image_processing, modeling, processing  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in ("MiniGeminiConfig", "MiniGeminiForCausalLM", "MiniGeminiProcessor"):
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'minigemini' has no attribute {name!r}")


if os.path.basename(sys.argv[0] if sys.argv else "") != "minigemini":  # not the console script
    register_auto_classes()
