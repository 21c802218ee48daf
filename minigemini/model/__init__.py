"""Model side of minigemini; importable without the training stack."""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration import MiniGeminiConfig
from .modeling import MiniGeminiForCausalLM

AutoConfig.register("minigemini", MiniGeminiConfig, exist_ok=True)
AutoModelForCausalLM.register(MiniGeminiConfig, MiniGeminiForCausalLM, exist_ok=True)

__all__ = ["MiniGeminiConfig", "MiniGeminiForCausalLM"]
