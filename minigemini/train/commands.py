"""`minigemini train CONFIG [k=v ...]` and `minigemini merge-lora RUN_DIR OUT`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train`, `merge-lora` and `plan` subcommands."""
    register_plan(subparsers)
    p = subparsers.add_parser(
        "train", help="train a stage (pretrain / finetune / LoRA) from a YAML config",
        description="Loads CONFIG.yaml (typed sections model, data, training, lora, deepspeed; `include:` pulls in "
                    "presets), applies section.key=value overrides, and trains. Launch on several GPUs/CPU ranks "
                    "with the scripts in scripts/ (deepspeed, torchrun, Slurm).")
    p.add_argument("config", help="run config YAML, e.g. configs/tiny/finetune.yaml or configs/custom/finetune.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="dotted overrides, e.g. training.learning_rate=1e-3 training.output_dir=runs/x")
    p.add_argument("--print-config", action="store_true", help="print the config as the run resolves it (includes, overrides, defaults; "
                                                            "model fields from model.init_from or model.tiny) and exit")
    p.add_argument("--verbose", action="store_true", help="show the Trainer's log dicts, the trainable-parts table, "
                                                          "info logs and dependency warnings")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run_train)

    m = subparsers.add_parser(
        "merge-lora", help="fold a LoRA run's adapter into a plain model folder",
        description="Rebuilds the base model from RUN_DIR/run_config.yaml, applies the adapter and the saved "
                    "mining/projector weights, merges, and writes a save_pretrained folder (+ processor).")
    m.add_argument("run_dir", help="output folder of a LoRA training run")
    m.add_argument("out", help="folder for the merged model")
    m.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the merged weights (default float32)")
    m.set_defaults(func=run_merge)


def run_train(args: argparse.Namespace) -> int:
    import logging

    from ..config import load_config

    cfg = load_config(args.config, args.overrides)  # a ConfigError (ValueError) ends with exit code 2
    if args.print_config:
        from .config_view import resolved_config_text

        print(resolved_config_text(cfg, args.config + "".join(f" {o}" for o in args.overrides)), end="")
        return 0
    import time

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    from .progress import print_run_summary
    from .run import exit_code, finish_distributed, run_training

    start = time.perf_counter()
    result = run_training(cfg)
    finish_distributed()
    if not result.stopped_by:
        print_run_summary(result, cfg, time.perf_counter() - start)  # one line, rank 0
    return exit_code(result)  # 128 + signal after a pre-emption stop (checkpoint written)


def run_merge(args: argparse.Namespace) -> int:
    import torch

    from .lora import merge_lora

    out = merge_lora(args.run_dir, args.out, dtype=getattr(torch, args.dtype))
    print(f"merged model written to {out}")
    return 0


def register_plan(subparsers: argparse._SubParsersAction) -> None:
    """Add `minigemini plan` (minigemini/train/plan.py loads when it runs)."""
    p = subparsers.add_parser(
        "plan", help="memory per GPU of a training run under ZeRO-0/2/3 (+ offload), and which config fits",
        description="Counts the run's trained and frozen parameters without loading weights, applies DeepSpeed's "
                    "model-state estimators, measures activations on 1-2-layer proxies of the model (CPU, random "
                    "weights), and says which configs/deepspeed file fits --gpu-mem.")
    p.add_argument("config", help="run config YAML, e.g. configs/recipes/vicuna-7b-finetune.yaml")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, as for `minigemini train`")
    p.add_argument("--gpus", type=int, required=True, help="GPUs per node")
    p.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    p.add_argument("--gpu-mem", default=None, help="memory of one GPU, e.g. 80GB: adds the 'fits' column")
    p.add_argument("--supervised-fraction", type=float, default=1.0,
                   help="share of a row's tokens that carry labels (default 1.0: an upper bound)")
    p.set_defaults(func=run_plan)


def run_plan(args: argparse.Namespace) -> int:
    from .plan import run_plan as run

    return run(args)
