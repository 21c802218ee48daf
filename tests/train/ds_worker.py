"""Launched by `deepspeed` (see test_train_deepspeed.py): train, then write losses and the gathered engine weights.

Usage: deepspeed --no_local_rank --num_gpus 2 ds_worker.py CONFIG.yaml [key=value ...]
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path


def main() -> int:
    import deepspeed
    from safetensors.torch import save_file

    from minigemini.config import load_config
    from minigemini.train.run import finish_distributed, run_training

    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    cfg = load_config(argv[0], argv[1:])
    result = run_training(cfg)
    model, args = result.trainer.model, result.trainer.args
    params = list(model.parameters())
    zero3 = any(hasattr(p, "ds_id") for p in params)
    gather = deepspeed.zero.GatheredParameters(params) if zero3 else contextlib.nullcontext()
    with gather:  # collective under ZeRO-3: every rank enters
        state = {n: p.detach().cpu().clone() for n, p in model.named_parameters()} if args.should_save else {}
    if args.should_save:
        out = Path(cfg.training.output_dir)
        save_file(state, str(out / "engine_state.safetensors"))
        padding = [h["padding_fraction"] for h in result.trainer.state.log_history if "padding_fraction" in h]
        (out / "losses.json").write_text(json.dumps({"losses": result.losses, "zero3": zero3,
                                                     "world_size": args.world_size, "padding_fraction": padding}))
    finish_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
