"""`minigemini eval`: answer a benchmark with a model and score it, or score an existing answers file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` command."""
    p = subparsers.add_parser(
        "eval", help="evaluate a model on a benchmark (resumable), or score an answers file",
        description="With --model: answer every question of the benchmark (answers appended to a JSONL file; a "
                    "rerun skips the questions already answered), then score. Without --model: score the answers "
                    "file given by --predictions. Writes results.json and results.md into --out and prints the "
                    "table.")
    p.add_argument("--model", default=None, help="minigemini model folder (omit to only score --predictions)")
    p.add_argument("--benchmark", required=True,
                   help="benchmark name: textvqa, vqav2, gqa, pope, mme, mmbench, scienceqa, mmmu, mathvista, mmvet, "
                        "or custom (your own JSONL/CSV)")
    p.add_argument("--data-dir", required=True,
                   help="folder holding the benchmark's official files (custom: the .jsonl/.csv file)")
    p.add_argument("--out", default=None,
                   help="output folder (default: eval_results/<model folder name>/<benchmark>, or the folder of "
                        "--predictions when only scoring)")
    p.add_argument("--predictions", default=None,
                   help="answers file: scored as is without --model (the answers JSONL, or an answer file the "
                        "official MGM/LLaVA eval scripts write, auto-detected); with --model, where answers are "
                        "written (default <out>/predictions.jsonl)")
    p.add_argument("--prompt-suffix", default=None, metavar="TEXT",
                   help="instruction put on its own line after each question (default: the benchmark's, as in "
                        "MGM's eval scripts, e.g. 'Answer the question using a single word or phrase.'; '' for none; "
                        "\\n is a line break)")
    p.add_argument("--metric", default=None, choices=("exact_match", "vqa_accuracy", "anls", "multiple_choice"),
                   help="--benchmark custom only: how answers are scored (default exact_match)")
    p.add_argument("--limit", type=int, default=None,
                   help="answer and score only the first N questions (smoke runs): the score covers those N")
    p.add_argument("--subset", choices=("all", "answered"), default=None,
                   help="questions scored: 'answered' (default with --limit) or 'all' (default otherwise; a "
                        "missing answer counts as wrong)")
    p.add_argument("--batch-size", type=int, default=8, help="questions per generate() call (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's own setting")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="benchmark option (repeatable; JSON values allowed), e.g. ocr=false")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16, float16 (default: auto)")
    p.add_argument("--template", default=None, help="override the conversation template named in the model config")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def benchmark_options(args: argparse.Namespace, options: dict) -> dict:
    """`--option` values plus `--prompt-suffix` and `--metric` (the latter for the custom benchmark only)."""
    if args.prompt_suffix is not None:
        options["prompt_suffix"] = args.prompt_suffix.replace("\\n", "\n")
    if args.metric is not None:
        if args.benchmark.strip().lower() != "custom":
            raise ValueError("--metric applies to --benchmark custom only (the other benchmarks use their official "
                             "scoring)")
        options["metric"] = args.metric
    return options


def run(args: argparse.Namespace) -> int:
    """Run `minigemini eval` from parsed arguments."""
    import logging

    from minigemini.eval.benchmarks import get_benchmark
    from minigemini.eval.results import results_table
    from minigemini.eval.runner import evaluate
    from minigemini.eval.score import parse_options

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.model is None and args.predictions is None:
        raise SystemExit("minigemini eval: give --model (to generate answers) or --predictions (to score a file)")
    options = benchmark_options(args, parse_options(args.option))
    get_benchmark(args.benchmark)(args.data_dir, **options).check()  # bad data: reported before the model loads
    generator, model_id = None, None
    if args.model is not None:
        from minigemini.infer.generate import Generator

        generator = Generator.from_pretrained(args.model, device=args.device, dtype=args.dtype,
                                              template=args.template)
        model_id = Path(args.model).resolve().name
    out = args.out
    if out is None:
        out = (Path("eval_results") / model_id / args.benchmark) if model_id else Path(args.predictions).parent
    try:
        results = evaluate(generator, args.benchmark, args.data_dir, out, predictions=args.predictions,
                           batch_size=args.batch_size, limit=args.limit, max_new_tokens=args.max_new_tokens,
                           model_id=model_id, progress=not args.no_progress, subset=args.subset, **options)
    except KeyboardInterrupt:
        from minigemini.eval.runner import PREDICTIONS_FILE

        saved = Path(args.predictions) if args.predictions else Path(out) / PREDICTIONS_FILE
        print(f"\ninterrupted: the answers so far are in {saved}; run the same command again to resume",
              file=sys.stderr)
        return 130
    meta = results["meta"]
    print(results_table(results, title=meta["benchmark"]))
    gen = meta.get("generation")
    if gen:
        print(f"answers: {gen['predictions']} ({gen['num_generated']} generated now, "
              f"{gen['num_already_answered']} already there, {gen['seconds']} s)")
    if meta.get("note"):
        print(f"note: {meta['note']}")
    print(f"results: {', '.join(meta.get('results_files', []))}")
    return 0
