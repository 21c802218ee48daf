"""Model side of minigemini; importable without the training stack.

Importing it registers the Auto classes (configuration, models, image processors, processor), so
`AutoConfig`/`AutoModelForCausalLM`/`AutoModelForImageTextToText`/`AutoModel`/`AutoProcessor` and
`pipeline("image-text-to-text")` load a minigemini folder with `trust_remote_code=False`.
`AutoModel` gives the full `MiniGeminiForCausalLM` (there is no separate headless model).
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
)

from .configuration import MiniGeminiConfig
from .image_processing import MiniGeminiImageProcessor, MiniGeminiLRImageProcessor
from .modeling import MiniGeminiForCausalLM
from .processing import MiniGeminiProcessor

AutoConfig.register("minigemini", MiniGeminiConfig, exist_ok=True)
for _auto in (AutoModelForCausalLM, AutoModelForImageTextToText, AutoModel):
    _auto.register(MiniGeminiConfig, MiniGeminiForCausalLM, exist_ok=True)
AutoImageProcessor.register(MiniGeminiConfig, image_processor_classes={"torchvision": MiniGeminiImageProcessor,
                                                                        "pil": MiniGeminiImageProcessor}, exist_ok=True)
AutoProcessor.register(MiniGeminiConfig, MiniGeminiProcessor, exist_ok=True)

__all__ = ["MiniGeminiConfig", "MiniGeminiForCausalLM", "MiniGeminiImageProcessor", "MiniGeminiLRImageProcessor",
           "MiniGeminiProcessor"]
