"""`minigemini` command line: thin; each area registers its own subcommands.

Every area module exposes `register(subparsers)`, adding parsers whose `func(args)` runs the job.
Heavy imports happen inside those functions, so `minigemini --help` is fast. Bad input (a `ValueError`
or `OSError`: config, data, paths) ends with its message and exit code 2, without a traceback unless
MINIGEMINI_TRACEBACK=1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Before torch loads OpenMP: idle threads sleep instead of spin-waiting. On a busy CPU, spinning threads
# of small ops stall each other (measured here: a tiny-model training stage 68 s -> 3.5 s with 2 threads
# while another process ran). Set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

AREAS = [
    "minigemini.train.commands",  # train, merge-lora, plan
    "minigemini.eval.commands",  # eval
    "minigemini.infer.commands",  # chat, serve, web
    "minigemini.data.commands",  # prep validate|convert|synthetic|cache-features
    "minigemini.convert_command",  # convert (official MGM checkpoints)
    "minigemini.demo",  # demo
]


def build_parser() -> argparse.ArgumentParser:
    """The full parser; an area whose module is missing is simply not offered."""
    parser = argparse.ArgumentParser(
        prog="minigemini", description="Train, fine-tune and evaluate Mini-Gemini-style vision-language models.",
        epilog="`minigemini COMMAND --help` documents each command.")
    from minigemini import __version__

    parser.add_argument("--version", action="version", version=f"minigemini {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in AREAS:
        try:
            module = importlib.import_module(area)
        except ModuleNotFoundError as exc:
            if exc.name == area:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `minigemini` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from minigemini.logs import setup as setup_output

    setup_output(verbose_output=getattr(args, "verbose", False))  # quiet unless the command's --verbose
    try:
        result = args.func(args)
    except (ValueError, OSError) as exc:  # bad input (config, data, paths): the message says what to do
        if os.environ.get("MINIGEMINI_TRACEBACK"):
            raise
        print(f"minigemini {args.command}: error: {exc} (MINIGEMINI_TRACEBACK=1 shows the traceback)",
              file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
