"""Score an answers file against a benchmark's official files (no model involved).

CLI shape (wired by `minigemini.cli`, or run `python -m minigemini.eval.score`):

    minigemini eval --benchmark NAME --data-dir DIR --predictions FILE [--out DIR]
                    [--limit N] [--subset all|answered] [--option key=value ...]

Which questions are scored: all of them by default, a missing answer counting as wrong (a full
run never shrinks silently). `limit=N` keeps the first N questions (the ones `eval --limit N`
answers) and `subset="answered"` only the answered ones; for benchmarks whose metric judges a
group of questions together (MME's image pairs, MMBench's circular copies) a subset keeps
complete groups only, and says how many it dropped. `results["meta"]` states the scope:
`subset`, `limit`, `num_scored` of `num_total` questions.

Option values are parsed as JSON when possible (`ocr=false`, `splits=["random"]`), else
kept as strings (`tsv=mmbench_dev_20230712.tsv`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from minigemini.eval.answer_files import AnswerFileError
from minigemini.eval.answers import AnswerMatch, AnswerSet, match_answers
from minigemini.eval.benchmarks import BENCHMARKS, Benchmark, get_benchmark
from minigemini.eval.benchmarks.base import split_groups
from minigemini.eval.results import results_table, write_results

logger = logging.getLogger(__name__)
SUBSETS = ("all", "answered")


@dataclass
class ScoringScope:
    """The questions a score covers, out of the whole benchmark."""

    ids: list[Any]  # in benchmark order
    num_total: int
    dropped_groups: list[Any] = field(default_factory=list)  # partly covered groups left out
    grouped: bool = False  # the benchmark's metric judges groups of questions

    @property
    def is_everything(self) -> bool:
        return len(self.ids) == self.num_total


def scoring_scope(bench: Benchmark, all_ids: list[Any], answered: set[Any], subset: str = "all",
                  limit: int | None = None) -> ScoringScope:
    """Of `all_ids` (`bench.question_ids()`): the first `limit` (all if None), only the `answered` ones if
    `subset="answered"`, then only complete groups for a grouped metric (unless nothing was left out)."""
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, got {subset!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    ids = all_ids[:limit] if limit is not None else all_ids
    if subset == "answered":
        ids = [q for q in ids if q in answered]
    scope = ScoringScope(ids=ids, num_total=len(all_ids))
    if scope.is_everything:
        return scope
    groups = bench.question_groups()
    if groups is not None:
        scope.grouped = True
        scope.dropped_groups = split_groups(groups, set(ids))
        dropped = set(scope.dropped_groups)
        scope.ids = [q for q in ids if groups[q] not in dropped]
    return scope


def _scope_note(scope: ScoringScope, subset: str, limit: int | None, num_answered_out: int) -> str:
    what = {"all": "all questions", "answered": "the answered questions"}[subset]
    if limit is not None:
        what += f" among the first {limit}"
    note = f"score over {len(scope.ids)} of {scope.num_total} questions ({what})"
    if scope.dropped_groups:
        note += (f"; {len(scope.dropped_groups)} partly answered question group(s) left out (the metric judges "
                 "a group as a whole)")
    if num_answered_out:
        note += f"; {num_answered_out} answered question(s) not scored"
    return note


def check_ids_match(bench: Benchmark, predictions: str | Path, answer_set: AnswerSet, match: AnswerMatch) -> None:
    """A file none of whose ids is a question of the benchmark is an error, not a score of 0."""
    if answer_set.answers and not match.answers:
        raise AnswerFileError(
            f"{predictions}: none of its {len(answer_set.answers)} question ids (e.g. "
            f"{match.unknown_ids[:3]}) is a {bench.name} question in {bench.data_dir}; read as: {answer_set.format}; "
            f"other accepted formats: {'; '.join(bench.ANSWER_FORMATS) or 'none'}")


def _warn_about_answers(bench: Benchmark, scope: ScoringScope, match: AnswerMatch, answer_set: AnswerSet,
                        missing_scored: list[Any], note: str) -> None:
    """Log what the score does not show: unanswered, unknown and conflicting ids; a partial scope."""
    if missing_scored:
        logger.warning("%s: %d of %d scored questions have no answer; they are scored as wrong",
                       bench.name, len(missing_scored), len(scope.ids))
    if not scope.is_everything:
        logger.info("%s: %s", bench.name, note)
    if match.unknown_ids:
        logger.warning("%s: %d answers have ids that are not in the benchmark (ignored)",
                       bench.name, len(match.unknown_ids))
    if answer_set.conflicting_duplicate_ids:
        logger.warning("%s: %d ids answered several times with different texts (last kept)",
                       bench.name, len(answer_set.conflicting_duplicate_ids))


def _score_meta(bench: Benchmark, predictions: str | Path, answer_set: AnswerSet, match: AnswerMatch,
                scope: ScoringScope, options: dict[str, Any], subset: str, limit: int | None,
                missing_scored: list[Any], answered_out: int, note: str) -> dict[str, Any]:
    """The `meta` entry of the results: where the answers came from, the scope and every id count."""
    meta = {
        "benchmark": bench.name, "data_dir": str(bench.data_dir),
        "predictions": str(Path(predictions).resolve()), "answers_format": answer_set.format,
        "options": {k: v for k, v in options.items() if k != "judge"},
        "judge": type(options["judge"]).__name__ if options.get("judge") is not None else None,
        "subset": subset, "limit": limit, "num_scored": len(scope.ids), "num_total": scope.num_total,
        "num_questions": scope.num_total, "num_answered": len(match.answers),
        "num_missing": len(match.missing_ids), "missing_ids": match.missing_ids,
        "num_missing_scored_as_wrong": len(missing_scored), "num_answered_not_scored": answered_out,
        "num_unknown_ids": len(match.unknown_ids), "unknown_ids": match.unknown_ids,
        "num_duplicate_ids": len(match.duplicate_ids), "duplicate_ids": match.duplicate_ids,
        "conflicting_duplicate_ids": answer_set.conflicting_duplicate_ids,
    }
    if scope.grouped:
        meta["num_incomplete_groups_dropped"] = len(scope.dropped_groups)
    if not scope.is_everything:
        meta["note"] = note + "; not comparable with a full-benchmark score"
    return meta


def _write_outputs(bench: Benchmark, results: dict[str, Any], match: AnswerMatch, out_dir: str | Path) -> None:
    """Write the benchmark's submission files and the results (JSON + Markdown); list them in `meta`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = bench.write_submission(match.answers, out)
    results["meta"]["submission_files"] = [str(p) for p in extra]
    json_path, md_path = write_results(results, out, title=bench.name)
    results["meta"]["results_files"] = [str(json_path), str(md_path)]


def score_predictions(benchmark: str, data_dir: str | Path, predictions: str | Path,
                      out_dir: str | Path | None = None, subset: str = "all", limit: int | None = None,
                      **options: Any) -> dict[str, Any]:
    """Score `predictions` (answers JSONL) on `benchmark`; write results into `out_dir` if set.

    `subset="all"` (default) scores every question (of the first `limit` if set), a missing
    answer counting as wrong; `subset="answered"` scores only the answered ones (complete
    groups only for grouped metrics). Returns the metrics plus a `meta` entry (scope:
    `subset`, `limit`, `num_scored` of `num_total`; counts, missing/unknown/duplicate ids, files).
    """
    bench = get_benchmark(benchmark)(data_dir, **options)
    answer_set = bench.load_answers(predictions)
    all_ids = bench.question_ids()
    match = match_answers(all_ids, answer_set)
    check_ids_match(bench, predictions, answer_set, match)
    scope = scoring_scope(bench, all_ids, set(match.answers), subset=subset, limit=limit)
    scored = set(scope.ids)
    missing_scored = [q for q in match.missing_ids if q in scored]
    answered_out = sum(q not in scored for q in match.answers)
    note = _scope_note(scope, subset, limit, answered_out)
    _warn_about_answers(bench, scope, match, answer_set, missing_scored, note)
    if not scope.ids:
        results: dict[str, Any] = {"status": f"nothing to score: {note}; answer more questions (a larger --limit)"}
    else:
        results = dict(bench.score(match.answers, scope=None if scope.is_everything else scored))
    results["meta"] = _score_meta(bench, predictions, answer_set, match, scope, options, subset, limit,
                                  missing_scored, answered_out, note)
    if out_dir is not None:
        _write_outputs(bench, results, match, out_dir)
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
    parser.add_argument("--predictions", required=True,
                        help="answers file: the answers JSONL or an official MGM/LLaVA answer file (auto-detected)")
    parser.add_argument("--out", default=None,
                        help="write results.json, results.md and submission files here")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="benchmark option (repeatable), e.g. ocr=false")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    parser.add_argument("--subset", choices=SUBSETS, default=None,
                        help="answered: score only the answered questions; all: a missing answer counts as "
                             "wrong (default: answered with --limit, else all)")
    return parser


def default_subset(subset: str | None, limit: int | None) -> str:
    """`subset` if given, else "answered" for a --limit run and "all" otherwise."""
    return subset or ("answered" if limit is not None else "all")


def run_eval(args: argparse.Namespace) -> int:
    """Run the `eval` command from parsed arguments; prints the table; returns an exit code."""
    results = score_predictions(args.benchmark, args.data_dir, args.predictions, args.out,
                                subset=default_subset(args.subset, args.limit), limit=args.limit,
                                **parse_options(args.option))
    print(results_table(results, title=results["meta"]["benchmark"]))
    if results["meta"].get("note"):
        print(f"note: {results['meta']['note']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: `python -m minigemini.eval.score --benchmark ...`."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = add_eval_arguments(argparse.ArgumentParser(
        prog="minigemini eval", description="Score an answers file on a benchmark."))
    return run_eval(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
