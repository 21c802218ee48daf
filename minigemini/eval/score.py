"""Score an answers file against a benchmark's official files (no model involved).

CLI shape (wired by `minigemini.cli`, or run `python -m minigemini.eval.score`):

    minigemini eval --benchmark NAME --data-dir DIR --predictions FILE [--out DIR]
                    [--option key=value ...]

Option values are parsed as JSON when possible (`ocr=false`, `splits=["random"]`), else
kept as strings (`tsv=mmbench_dev_20230712.tsv`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from minigemini.eval.answers import match_answers, read_answers
from minigemini.eval.benchmarks import BENCHMARKS, get_benchmark
from minigemini.eval.results import results_table, write_results

logger = logging.getLogger(__name__)


def score_predictions(benchmark: str, data_dir: str | Path, predictions: str | Path,
                      out_dir: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """Score `predictions` (answers JSONL) on `benchmark`; write results into `out_dir` if set.

    Returns the metrics plus a `meta` entry (counts, missing/unknown/duplicate ids, files).
    """
    bench = get_benchmark(benchmark)(data_dir, **options)
    answer_set = read_answers(predictions)
    match = match_answers(bench.question_ids(), answer_set)
    if match.missing_ids:
        logger.warning("%s: %d of %d questions have no answer; they are scored as wrong",
                       bench.name, len(match.missing_ids), len(match.missing_ids)
                       + len(match.answers))
    if match.unknown_ids:
        logger.warning("%s: %d answers have ids that are not in the benchmark (ignored)",
                       bench.name, len(match.unknown_ids))
    if answer_set.conflicting_duplicate_ids:
        logger.warning("%s: %d ids answered several times with different texts (last kept)",
                       bench.name, len(answer_set.conflicting_duplicate_ids))
    results: dict[str, Any] = dict(bench.score(match.answers))
    num_questions = len(match.answers) + len(match.missing_ids)
    results["meta"] = {
        "benchmark": bench.name, "data_dir": str(bench.data_dir),
        "predictions": str(Path(predictions).resolve()),
        "options": {k: v for k, v in options.items() if k != "judge"},
        "judge": type(options["judge"]).__name__ if options.get("judge") is not None else None,
        "num_questions": num_questions, "num_answered": len(match.answers),
        "num_missing": len(match.missing_ids), "missing_ids": match.missing_ids,
        "num_unknown_ids": len(match.unknown_ids), "unknown_ids": match.unknown_ids,
        "num_duplicate_ids": len(match.duplicate_ids), "duplicate_ids": match.duplicate_ids,
        "conflicting_duplicate_ids": answer_set.conflicting_duplicate_ids,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        extra = bench.write_submission(match.answers, out)
        results["meta"]["submission_files"] = [str(p) for p in extra]
        json_path, md_path = write_results(results, out, title=bench.name)
        results["meta"]["results_files"] = [str(json_path), str(md_path)]
    return results


def parse_options(pairs: Sequence[str] | None) -> dict[str, Any]:
    """['k=v', ...] -> {k: json-or-string value}."""
    options: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--option expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def add_eval_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `eval` command's arguments to `parser` (e.g. a cli.py subparser)."""
    parser.add_argument("--benchmark", required=True,
                        help=f"benchmark name: {', '.join(sorted(BENCHMARKS))}")
    parser.add_argument("--data-dir", required=True, help="folder with the official files")
    parser.add_argument("--predictions", required=True, help="answers JSONL file")
    parser.add_argument("--out", default=None,
                        help="write results.json, results.md and submission files here")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="benchmark option (repeatable), e.g. ocr=false")
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """Run the `eval` command from parsed arguments; prints the table; returns an exit code."""
    results = score_predictions(args.benchmark, args.data_dir, args.predictions, args.out,
                                **parse_options(args.option))
    print(results_table(results, title=results["meta"]["benchmark"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: `python -m minigemini.eval.score --benchmark ...`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = add_eval_arguments(argparse.ArgumentParser(
        prog="minigemini eval", description="Score an answers file on a benchmark."))
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
