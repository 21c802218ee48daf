"""`minigemini.logs`: quiet mode drops only what a user cannot act on; verbose keeps everything."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

PROBE = """
import logging, sys, warnings
from minigemini import logs
logs.setup(verbose_output={verbose})
ds = logging.getLogger("DeepSpeed")  # as deepspeed.utils.logging builds it: own stdout handler
ds.setLevel(logging.WARNING); ds.propagate = False; ds.addHandler(logging.StreamHandler(sys.stdout))
ds.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.")
ds.warning("DeepSpeed: a real problem")
import torch.nn.modules.module as m
warnings.warn_explicit("`past_key_values` is deprecated and will be removed in version 5.40.0 for "
                       "`LlamaModel.forward`. Use `cache` instead.", FutureWarning, m.__file__, 1794,
                       module="torch.nn.modules.module")
warnings.warn("something in the user's config", UserWarning)
warnings.warn_explicit("old API", DeprecationWarning, "x.py", 1, module="transformers.utils.x")
logging.getLogger("minigemini.train").warning("sample 7 skipped")
print("HF bars off:", __import__("os").environ.get("HF_HUB_DISABLE_PROGRESS_BARS"))
"""


def _run(verbose: bool) -> str:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    proc = subprocess.run([sys.executable, "-W", "default", "-c", PROBE.format(verbose=verbose)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_quiet_drops_only_unactionable_messages():
    out = _run(verbose=False)
    assert "Setting accelerator to CPU" not in out and "past_key_values" not in out and "old API" not in out
    assert "DeepSpeed: a real problem" in out and "something in the user's config" in out
    assert "sample 7 skipped" in out and "HF bars off: 1" in out


def test_verbose_keeps_everything():
    out = _run(verbose=True)
    for text in ("Setting accelerator to CPU", "past_key_values", "old API", "something in the user's config"):
        assert text in out, text
    assert "HF bars off: None" in out


def test_logger_filter_survives_library_setup(monkeypatch):
    from minigemini import logs

    monkeypatch.setenv("MINIGEMINI_VERBOSE", "0")  # restored afterwards
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logs.setup(verbose_output=False)
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    assert not logger.filters[0].filter(logging.makeLogRecord({"msg": "Failed to load CPU gemm_4bit_forward ..."}))
    assert logger.filters[0].filter(logging.makeLogRecord({"msg": "a real bitsandbytes error"}))
    logs.setup(verbose_output=True)
    assert logs.verbose()
    logs.setup(verbose_output=False)
