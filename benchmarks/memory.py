"""Memory of a training step per variant of `benchmarks/train_step.py`, measured two comparable ways.

1. Peak RSS in a fresh process per variant (`train_step.py --memory`): a child builds the benchmark set-up,
   the kernel's peak counter (VmHWM) is reset (`/proc/self/clear_refs`), the variant runs 2 steps (the first
   creates the optimizer state), and the child reports VmHWM and the RSS before the steps. "Step peak" =
   peak - RSS before: what the step adds (activations, gradients, optimizer state, temporaries) on top of
   the same set-up in every variant. In one process RSS never shrinks back (the allocator keeps freed
   pages), so only fresh processes give numbers comparable between variants.
2. Saved-tensor bytes (`minigemini.train.activations.saved_tensor_bytes`): what autograd keeps for the
   backward pass during the forward (parameters excluded). With non-reentrant gradient checkpointing the
   checkpointed layers' inputs are held by the checkpoint, not as saved tensors: they are added
   (layers x tokens x hidden x element size), as `activations.ActivationModel` counts them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers.modeling_layers import GradientCheckpointingLayer

from minigemini.train.activations import saved_tensor_bytes

CHILD_TAG = "RSS_CHILD "


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status (Linux only)")


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def child_report(run_step: Callable[[], Any], steps: int = 2) -> None:
    """In the child: reset the peak, run `steps` steps, print the RSS figures (MiB) on one tagged line."""
    before = _status_kib("VmRSS")
    reset_peak_rss()
    for _ in range(steps):
        run_step()
    peak = _status_kib("VmHWM")
    print(CHILD_TAG + json.dumps({"rss_before_mib": round(before / 1024, 1), "peak_mib": round(peak / 1024, 1),
                                  "step_peak_mib": round((peak - before) / 1024, 1)}), flush=True)


def rss_in_fresh_process(script: Path, variant: str, threads: int, timeout: float = 1800) -> dict[str, float]:
    """Run `script --rss-child VARIANT` and return the child's figures."""
    cmd = [sys.executable, str(script), "--rss-child", variant, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    for line in out.stdout.splitlines():
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG):])
    raise RuntimeError(f"variant {variant!r}: child failed (exit {out.returncode}): {out.stderr[-2000:]}")


def activation_bytes(model: torch.nn.Module, forward: Callable[[], Any], tokens: int, dtype: torch.dtype) -> int:
    """Saved-tensor bytes of `forward()` + the layer inputs non-reentrant checkpointing holds (if enabled)."""
    saved = saved_tensor_bytes(forward, exclude=list(model.parameters()) + list(model.buffers()))
    llm = model.language_model
    checkpointed = sum(1 for m in llm.modules()
                       if isinstance(m, GradientCheckpointingLayer) and getattr(m, "gradient_checkpointing", False))
    if not checkpointed:
        return saved
    elem = torch.finfo(dtype).bits // 8
    return saved + checkpointed * tokens * llm.config.hidden_size * elem
