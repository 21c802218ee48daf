"""Model-driven evaluation: answer a benchmark's questions in batches, then score the answers.

Answers go to a JSON-lines file, one `{"question_id", "text", "prompt", "model_id"}` per line,
appended batch by batch. A rerun reads that file first and only generates the questions that
are not answered yet, so an interrupted run resumes where it stopped (a line torn by the
interruption is removed). Scoring is `minigemini.eval.score.score_predictions`, which writes
`results.json` and `results.md` into the output folder. A `limit` run scores the questions it
answered (the first `limit`), not the whole benchmark; the results say "N of M questions".
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence, TypeVar

from tqdm import tqdm

from minigemini.eval.answers import append_answer, read_answers
from minigemini.eval.benchmarks import Benchmark, EvalItem, get_benchmark

if TYPE_CHECKING:
    from minigemini.infer.generate import Generator

logger = logging.getLogger(__name__)
PREDICTIONS_FILE = "predictions.jsonl"
T = TypeVar("T")


@dataclass
class GenerationReport:
    """What one generation pass did."""

    benchmark: str
    predictions: str
    num_items: int  # questions in scope (after --limit)
    num_already_answered: int  # found in the answers file and skipped
    num_generated: int
    torn_line_removed: bool
    seconds: float


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of `items` of length `size` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def answered_question_ids(path: Path) -> tuple[set[str], bool]:
    """String ids already answered in `path`; a torn last line (interrupted write) is cut off the file."""
    if not path.is_file():
        return set(), False
    answers = read_answers(path)
    if answers.truncated_last_line:
        raw = path.read_bytes()
        path.write_bytes(raw[: raw.rfind(b"\n") + 1])
        logger.warning("%s: removed a torn last line left by an interrupted run; that question is redone", path)
    return set(answers.answers), answers.truncated_last_line


def generate_answers(generator: "Generator", benchmark: Benchmark, predictions: str | Path, batch_size: int = 8,
                     limit: int | None = None, max_new_tokens: int | None = None, model_id: str | None = None,
                     progress: bool = True) -> GenerationReport:
    """Answer every not-yet-answered question of `benchmark` (the first `limit` only if set) into `predictions`."""
    from minigemini.infer.generate import GenerationOptions

    start = time.perf_counter()
    path = Path(predictions)
    path.parent.mkdir(parents=True, exist_ok=True)
    items: list[EvalItem] = benchmark.items()
    if limit is not None:
        items = items[:limit]
    done, torn = answered_question_ids(path)
    todo = [it for it in items if str(it.question_id) not in done]
    options = GenerationOptions(max_new_tokens=max_new_tokens or benchmark.default_max_new_tokens)
    if done:
        logger.info("%s: %d of %d questions already answered in %s; generating %d", benchmark.name,
                    len(items) - len(todo), len(items), path, len(todo))
    with tqdm(total=len(items), initial=len(items) - len(todo), desc=f"{benchmark.name}", unit="q",
              disable=not progress) as bar:
        for batch in chunks(todo, batch_size):
            prompts = [generator.question_prompt(it.prompt) for it in batch]
            try:
                texts = generator.generate(prompts, [it.image_paths for it in batch], options)
            except (OSError, ValueError) as exc:
                ids = [it.question_id for it in batch]
                raise RuntimeError(f"{benchmark.name}: generation failed for question ids {ids} "
                                   f"(images {[it.image_paths for it in batch]}): {exc}") from exc
            for item, text in zip(batch, texts):
                append_answer(path, item.question_id, text, prompt=item.prompt, model_id=model_id)
            bar.update(len(batch))
    return GenerationReport(benchmark=benchmark.name, predictions=str(path), num_items=len(items),
                            num_already_answered=len(items) - len(todo), num_generated=len(todo),
                            torn_line_removed=torn, seconds=round(time.perf_counter() - start, 3))


def evaluate(generator: "Generator | None", benchmark: str, data_dir: str | Path, out_dir: str | Path,
             predictions: str | Path | None = None, batch_size: int = 8, limit: int | None = None,
             max_new_tokens: int | None = None, model_id: str | None = None, progress: bool = True,
             subset: str | None = None, **options: Any) -> dict[str, Any]:
    """Generate the missing answers (unless `generator` is None) and score them; results written to `out_dir`.

    With `limit`, only the first `limit` questions are answered and scored (`subset` defaults to
    "answered"; "all" would count the unanswered ones in scope as wrong); without it every
    question is scored and a missing answer counts as wrong. Returns the scorer's results dict;
    `results["meta"]` has the scope (`num_scored` of `num_total`) and `generation` (the generation pass).
    """
    from minigemini.eval.results import write_results
    from minigemini.eval.score import default_subset, score_predictions

    out = Path(out_dir)
    path = Path(predictions) if predictions is not None else out / PREDICTIONS_FILE
    bench = get_benchmark(benchmark)(data_dir, **options)
    report = None
    if generator is not None:
        report = generate_answers(generator, bench, path, batch_size=batch_size, limit=limit,
                                  max_new_tokens=max_new_tokens, model_id=model_id, progress=progress)
    elif not path.is_file():
        raise FileNotFoundError(f"answers file {path} does not exist; pass --model to generate it, "
                                "or --predictions with an existing answers JSONL")
    results = score_predictions(benchmark, data_dir, path, out, subset=default_subset(subset, limit), limit=limit,
                                **options)
    if report is not None:
        results["meta"]["generation"] = asdict(report)
        write_results(results, out, title=bench.name)
    return results
