"""Saving by role: a checkpoint (to resume a run) and an export (a model folder), two named writers.

The trainer picks the writer by what it is doing (`CHECKPOINT` inside `_save_checkpoint`, `EXPORT`
otherwise), never by the folder's name:

- `write_checkpoint`: the trained weights only (frozen parts are rebuilt from the run config on resume)
  + the connector; optimizer, scheduler, RNG and trainer state are written by the Trainer beside them.
- `write_export`: every weight `from_pretrained` needs (a `save_pretrained` folder), or the LoRA adapter +
  non-LoRA trainables; + the connector. A state that lacks weights of the model is an error.

Checkpoints are committed atomically: written into `.tmp-checkpoint-N/` and renamed into place, so a run
killed mid-save leaves the previous complete checkpoint as the latest one. The fault report (skipped
samples, non-finite steps) is stored in every checkpoint so that it survives a resume.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..model.builder import save_connector
from ..model.weights import save_weight_subset

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
EXPORT = "export"
STAGING_PREFIX = ".tmp-"
INCOMPLETE_PREFIX = ".incomplete-"
COMPLETE_MARKER = "trainer_state.json"  # the Trainer writes it last in every checkpoint
FAULT_REPORT_FILE = "fault_report.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def write_checkpoint(model: nn.Module, folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Trained weights (requires_grad) + connector into a checkpoint folder."""
    save_connector(model, folder, state)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    save_weight_subset(state, folder / "model.safetensors", trained)


def write_export(model: nn.Module, folder: Path, state: dict[str, torch.Tensor]) -> None:
    """A complete model folder (or adapter + non-LoRA trainables) + connector; refuses an incomplete state."""
    from .lora import is_lora_model, save_lora_export

    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise ValueError(f"export to {folder}: {len(missing)} weights are missing from the state to save "
                         f"(e.g. {missing[:3]}); under ZeRO-3 set stage3_gather_16bit_weights_on_model_save=true")
    save_connector(model, folder, state)
    if is_lora_model(model):
        save_lora_export(model, folder, dict(state))
    else:
        model.save_pretrained(folder, state_dict=dict(state))  # save_pretrained consumes the dict it is given


WRITERS: dict[str, Callable[[nn.Module, Path, dict[str, torch.Tensor]], None]] = {
    CHECKPOINT: write_checkpoint, EXPORT: write_export}


def staging_folder(final: Path) -> Path:
    """Where a checkpoint is written before it is renamed to `final` (same parent: an atomic rename)."""
    return final.parent / f"{STAGING_PREFIX}{final.name}"


def commit_folder(staging: Path, final: Path) -> None:
    """Move a completely written checkpoint into place (replacing an older folder of the same name)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)


def checkpoint_folders(output_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, folder) of every `checkpoint-N` in `output_dir`, by step."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def latest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest checkpoint that was written completely; leftovers of an interrupted save (staging folders,
    checkpoints without trainer state) are moved aside as `.incomplete-*` and named in the log."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    for leftover in sorted(root.glob(f"{STAGING_PREFIX}checkpoint-*")):
        _set_aside(leftover, leftover.name[len(STAGING_PREFIX):])
    latest = None
    for _, folder in checkpoint_folders(root):
        if (folder / COMPLETE_MARKER).is_file():
            latest = folder
        else:
            _set_aside(folder, folder.name)
    return latest


def _set_aside(folder: Path, name: str) -> None:
    target = folder.parent / f"{INCOMPLETE_PREFIX}{name}"
    if target.exists():
        shutil.rmtree(target)
    os.replace(folder, target)
    logger.warning("%s was not written completely (the run died while saving it): moved to %s, not resumed from",
                   folder, target)


def save_fault_report(folder: Path, report: dict[str, Any]) -> None:
    """Store the skipped-sample / non-finite-step report in a checkpoint."""
    (folder / FAULT_REPORT_FILE).write_text(json.dumps(report, indent=2, default=str))


def load_fault_report(folder: str | Path) -> dict[str, Any]:
    """The report stored by `save_fault_report` (empty lists for a checkpoint without one)."""
    path = Path(folder) / FAULT_REPORT_FILE
    report = json.loads(path.read_text()) if path.is_file() else {}
    return {"samples": list(report.get("samples", [])), "nonfinite_steps": list(report.get("nonfinite_steps", []))}
