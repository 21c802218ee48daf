"""The one writer of weight subsets (a safetensors file holding some of a model's tensors).

Connector files (`mm_projector.safetensors`), checkpoint weights (the trained parameters only) and
LoRA adapters (LoRA weights + the non-LoRA trainables) all go through `save_weight_subset`, so every
such file is written the same way (CPU, contiguous, `format: pt` metadata) and an empty selection is an
error, never an empty file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping

import torch


def save_weight_subset(state: Mapping[str, torch.Tensor], path: str | Path,
                       keep: Callable[[str], bool] | Iterable[str] | None = None, allow_empty: bool = False) -> Path:
    """Write the tensors of `state` whose names `keep` selects (a predicate or a set of names; None: all)
    to the safetensors file `path`; returns `path`. An empty selection raises (a file without weights would
    load as "nothing to load") unless `allow_empty`."""
    from safetensors.torch import save_file

    if keep is None:
        chosen = dict(state)
    elif callable(keep):
        chosen = {k: v for k, v in state.items() if keep(k)}
    else:
        names = set(keep)
        chosen = {k: v for k, v in state.items() if k in names}
    empty = [k for k, v in chosen.items() if v.numel() == 0]
    if empty:
        raise ValueError(f"{path}: {len(empty)} weights are empty (e.g. {empty[:3]}): partitioned under ZeRO-3 and "
                         "not gathered; set stage3_gather_16bit_weights_on_model_save=true in the DeepSpeed config")
    if not chosen and not allow_empty:
        raise ValueError(f"{path}: no weights selected to write (the model has none of the requested tensors)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in sorted(chosen.items())}, str(path),
              metadata={"format": "pt"})
    return path
