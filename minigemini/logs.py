"""What the terminal shows: quiet by default, everything with `--verbose`. The one place that filters.

Quiet mode drops what a user cannot act on: deprecation notices that dependencies raise about each
other (e.g. transformers' `past_key_values` FutureWarning seen from torch, whose display also
printed a stray `return forward_call(...)` source line), DeepSpeed's "Setting accelerator to CPU",
bitsandbytes' optional-kernel notice, and the Hugging Face loading/saving progress bars. It never
hides errors, warnings about the user's own data or config, or anything under `minigemini.*`.
Light on purpose: imports nothing heavy, so the CLI calls `setup` before torch loads.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

DEPENDENCIES = ("transformers", "torch", "deepspeed", "accelerate", "peft", "timm", "datasets", "huggingface_hub",
                "bitsandbytes", "safetensors", "tokenizers")
UNACTIONABLE_WARNINGS = (  # (category, message regex) raised by a dependency but attributed to the caller's frame
    (FutureWarning, r"`past_key_values` is deprecated"),
    (FutureWarning, r"Both `past_key_values` and `cache` are set"),
)
UNACTIONABLE_LOGS = {  # logger name -> message starts a user cannot act on
    "DeepSpeed": ("Setting accelerator to CPU",),
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward",),
}
_STATE = {"verbose": os.environ.get("MINIGEMINI_VERBOSE") == "1"}


class _DropMessages(logging.Filter):
    """Drops records whose message starts with one of `prefixes`."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def verbose() -> bool:
    """True when the user asked for every detail (`--verbose`, or MINIGEMINI_VERBOSE=1 in launched ranks)."""
    return _STATE["verbose"]


def setup(verbose_output: bool = False) -> None:
    """Quiet (default) or verbose output for this process and the processes it launches."""
    _STATE["verbose"] = verbose_output
    os.environ["MINIGEMINI_VERBOSE"] = "1" if verbose_output else "0"
    if verbose_output:
        return
    dependency = r"(" + "|".join(DEPENDENCIES) + r")(\.|$)"
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=dependency)
    for category, message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, prefixes in UNACTIONABLE_LOGS.items():
        logger = logging.getLogger(name)  # the same object the library gets later, so the filter stays
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers / hub load
    if "transformers" in sys.modules:  # already loaded (e.g. called from Python): switch its bars off directly
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


__all__ = ["setup", "verbose", "UNACTIONABLE_WARNINGS", "UNACTIONABLE_LOGS"]
