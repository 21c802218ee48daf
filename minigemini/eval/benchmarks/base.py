"""Common interface of every benchmark scorer.

A `Benchmark` reads a benchmark's *officially released* files from `data_dir` and offers:

* `items()`: the questions to answer, as `EvalItem`s (id, prompt containing one `<image>`
  placeholder per image, absolute image paths, free-form `meta`). A generation runner feeds
  each prompt (after applying the model's chat template) plus the images to the model and
  writes one `{"question_id": ..., "text": ...}` line per item (see `minigemini.eval.answers`).
* `question_ids()`: the ids `items()` would return, without materialising images.
* `score(answers, scope=None)`: metrics from `{question_id: raw model text}`, computed the way
  the upstream evaluator computes them, over all questions or only those in `scope`. Questions
  in scope but absent from `answers` are scored as wrong.
* `question_groups()`: for metrics that judge several questions together (MME's two questions
  per image, MMBench's circular copies), each question's group; a `scope` must hold whole
  groups (`minigemini.eval.score` keeps complete groups only). None when questions are
  scored independently.
* `write_submission(answers, out_dir)`: optional official-submission files.

Options are keyword arguments declared in the subclass' `OPTIONS` mapping (name -> default);
an unknown option raises `TypeError` naming the valid ones. Every benchmark also takes
`prompt_suffix`: the answer-format instruction put on its own line after each question
(default `DEFAULT_PROMPT_SUFFIX`, the one MGM's / LLaVA's eval scripts use; "" for none).

`load_answers(path)` reads an answers file: the native JSONL or any official format the
benchmark lists in `ANSWER_FORMATS` (auto-detected; see `minigemini.eval.answer_files`).
All accuracy-like metrics are percentages in [0, 100] (MME scores use MME's own scale).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Collection

from minigemini.eval.answer_files import RawAnswers, native_answer_set, read_raw_answers, unrecognised

if TYPE_CHECKING:
    from minigemini.eval.answers import AnswerSet

IMAGE_TOKEN = "<image>"
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
MC_LETTER_PROMPT = "Answer with the option's letter from the given choices directly."

QuestionId = Any  # int or str, as the benchmark's official files spell it
Metrics = dict[str, Any]
Scope = Collection[Any] | None  # question ids to score; None = all


class BenchmarkDataError(FileNotFoundError):
    """An official benchmark file is missing or malformed."""


class UnknownOptionError(TypeError, ValueError):
    """A benchmark option that does not exist (a ValueError too, so the CLI prints it in one line)."""


@dataclass
class EvalItem:
    """One question to put to the model."""

    question_id: QuestionId
    prompt: str
    image_paths: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


class Benchmark:
    """Base class; subclasses set `name`, `LAYOUT`, `OPTIONS` and implement `items`/`score`."""

    name: ClassVar[str] = ""
    LAYOUT: ClassVar[str] = ""  # human-readable description of the expected data_dir layout
    OPTIONS: ClassVar[dict[str, Any]] = {}
    default_max_new_tokens: ClassVar[int] = 128
    DEFAULT_PROMPT_SUFFIX: ClassVar[str] = ""  # as in the official eval scripts
    ANSWER_FORMATS: ClassVar[tuple[str, ...]] = ()  # official answer files accepted besides the native JSONL

    def __init__(self, data_dir: str | Path, prompt_suffix: str | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            valid = ", ".join(sorted([*self.OPTIONS, "prompt_suffix"]))
            raise UnknownOptionError(f"{self.name}: unknown option(s) {unknown}; valid options: {valid}")
        self.prompt_suffix = self.DEFAULT_PROMPT_SUFFIX if prompt_suffix is None else str(prompt_suffix)
        self.suffix_given = prompt_suffix is not None  # for benchmarks with several default instructions
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.options: dict[str, Any] = {**self.OPTIONS, **options}
        self.answer_extras: dict[str, dict[str, Any]] = {}  # set by load_answers for formats that carry more
        if not self.data_dir.is_dir():
            raise BenchmarkDataError(
                f"{self.name}: data directory {self.data_dir} does not exist.\n"
                f"Expected layout:\n{self.LAYOUT}")

    # ---- interface -------------------------------------------------------------------
    def items(self) -> list[EvalItem]:
        """All questions of the benchmark, in the official order."""
        raise NotImplementedError

    def question_ids(self) -> list[QuestionId]:
        """Ids of `items()`; subclasses override it when items() is costly (image extraction)."""
        return [item.question_id for item in self.items()]

    def score(self, answers: dict[QuestionId, str], scope: Scope = None) -> Metrics:
        """Metrics for `answers` (question_id -> raw model output) over the questions in `scope`
        (default: all); a question in scope without an answer counts as wrong."""
        raise NotImplementedError

    def question_groups(self) -> dict[QuestionId, Any] | None:
        """Question id -> group key for metrics judging a group as a whole; None if there are no groups."""
        return None

    def write_submission(self, answers: dict[QuestionId, str], out_dir: Path) -> list[Path]:
        """Write official submission files into `out_dir`; returns their paths (none by default)."""
        return []

    def check(self) -> None:
        """Read the benchmark's files once, so bad data is reported before a model is loaded."""
        self.question_ids()

    def load_answers(self, path: str | Path) -> "AnswerSet":
        """Read an answers file in any accepted format (auto-detected); AnswerFileError names the formats."""
        raw = read_raw_answers(path)
        found = self.read_official_answers(raw)
        if found is None:
            found = native_answer_set(raw)
        if found is None:
            raise unrecognised(self.name, raw, self.ANSWER_FORMATS)
        self.answer_extras = found.extras
        return found

    def read_official_answers(self, raw: RawAnswers) -> "AnswerSet | None":
        """An AnswerSet if `raw` is one of this benchmark's official formats, else None (subclasses)."""
        return None

    # ---- helpers for subclasses --------------------------------------------------------
    def ask(self, text: str) -> str:
        """`text` with the prompt suffix on its own line (unchanged when the suffix is empty)."""
        return f"{text}\n{self.prompt_suffix}" if self.prompt_suffix else text

    def ask_file_text(self, text: str) -> str:
        """An official question file's text (ending with the default instruction) with the configured suffix."""
        lines = text.split("\n")
        if len(lines) > 1 and self.DEFAULT_PROMPT_SUFFIX and lines[-1] == self.DEFAULT_PROMPT_SUFFIX:
            lines.pop()
        return self.ask("\n".join(lines))

    def find_file(self, *candidates: str, required: bool = True) -> Path | None:
        """First existing `data_dir/<candidate>`; raise a layout-explaining error if none exists."""
        for cand in candidates:
            path = self.data_dir / cand
            if path.exists():
                return path
        if not required:
            return None
        tried = "\n".join(f"  {self.data_dir / c}" for c in candidates)
        raise BenchmarkDataError(
            f"{self.name}: missing official file; looked for:\n{tried}\n"
            f"Expected layout under --data-dir:\n{self.LAYOUT}")

    def image_cache_dir(self) -> Path:
        """Writable directory for images the benchmark ships embedded (base64/parquet bytes)."""
        opt = self.options.get("image_cache_dir")
        candidates = [Path(opt)] if opt else [
            self.data_dir / "_minigemini_images",
            Path(tempfile.gettempdir()) / "minigemini_eval_images" / self.name]
        for cand in candidates:
            try:
                cand.mkdir(parents=True, exist_ok=True)
                return cand.resolve()
            except OSError:
                continue
        raise OSError(f"{self.name}: no writable image cache directory among {candidates}")


def load_json(path: Path) -> Any:
    """Read a JSON file (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines file, skipping blank lines."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pct(num: float, den: float) -> float:
    """100 * num / den, or 0.0 when den == 0."""
    return 100.0 * num / den if den else 0.0


def in_scope(question_id: QuestionId, scope: Collection[QuestionId] | None) -> bool:
    """True when `scope` is None (everything is scored) or holds `question_id`."""
    return scope is None or question_id in scope


def split_groups(groups: dict[QuestionId, Any], scope: Collection[QuestionId]) -> list[Any]:
    """Keys of the groups that `scope` covers only in part (in first-seen order)."""
    inside: dict[Any, set[bool]] = {}
    for qid, key in groups.items():
        inside.setdefault(key, set()).add(qid in scope)
    return [key for key, seen in inside.items() if len(seen) == 2]


def check_whole_groups(name: str, groups: dict[QuestionId, Any], scope: Collection[QuestionId] | None) -> None:
    """Raise ValueError if `scope` splits a group (its metric needs every member of a group)."""
    if scope is None:
        return
    split = split_groups(groups, scope)
    if split:
        raise ValueError(f"{name}: the questions to score split {len(split)} groups (e.g. {split[:3]}); the "
                         "metric needs whole groups: score complete groups only (score_predictions does)")


def group_accuracy(correct: list[bool], keys: list[Any]) -> dict[str, float]:
    """Per-key accuracy (percent) of parallel lists `correct`/`keys`, keys sorted."""
    tot: dict[str, list[int]] = {}
    for ok, key in zip(correct, keys):
        slot = tot.setdefault(str(key), [0, 0])
        slot[0] += int(ok)
        slot[1] += 1
    return {k: pct(v[0], v[1]) for k, v in sorted(tot.items())}
