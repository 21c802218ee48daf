"""`minigemini train CONFIG [k=v ...]` and `minigemini merge-lora RUN_DIR OUT`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` and `merge-lora` subcommands."""
    p = subparsers.add_parser(
        "train", help="train a stage (pretrain / finetune / LoRA) from a YAML config",
        description="Loads CONFIG.yaml (typed sections model, data, training, lora, deepspeed; `include:` pulls in "
                    "presets), applies section.key=value overrides, and trains. Launch on several GPUs/CPU ranks "
                    "with the scripts in scripts/ (deepspeed, torchrun, Slurm).")
    p.add_argument("config", help="run config YAML, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. training.learning_rate=1e-3 training.output_dir=runs/x")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_train)

    m = subparsers.add_parser(
        "merge-lora", help="fold a LoRA run's adapter into a plain model folder",
        description="Rebuilds the base model from RUN_DIR/run_config.yaml, applies the adapter and the saved "
                    "mining/projector weights, merges, and writes a save_pretrained folder (+ processor).")
    m.add_argument("run_dir", help="output folder of a LoRA training run")
    m.add_argument("out", help="folder for the merged model")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    m.set_defaults(func=run_merge)


def run_train(args: argparse.Namespace) -> int:
    import logging

    import yaml

    from ..config import load_config

    cfg = load_config(args.config, args.overrides)  # a ConfigError (ValueError) ends with exit code 2
    if args.print_config:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from .run import exit_code, finish_distributed, run_training

    result = run_training(cfg)
    finish_distributed()
    if not result.stopped_by:
        print(f"done: {result.global_step} steps, output in {result.output_dir}")
    return exit_code(result)  # 128 + signal after a pre-emption stop (checkpoint written)


def run_merge(args: argparse.Namespace) -> int:
    import torch

    from .lora import merge_lora

    out = merge_lora(args.run_dir, args.out, dtype=getattr(torch, args.dtype))
    print(f"merged model written to {out}")
    return 0
