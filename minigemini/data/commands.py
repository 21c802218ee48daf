"""`minigemini prep ...`: validate | convert | synthetic (| cache-features, render: added by their own modules).

Hook for more `prep` subcommands: add `name: ("module.path", "one-line help")` to `EXTRA_PREP_COMMANDS`;
the module exposes `add_arguments(parser)` and `run(args) -> int` (exit code). It is imported only
when its subcommand is used (so `minigemini --help` and the other `prep` commands never load torch).
A listed module that does not exist yet is simply not offered.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from typing import Sequence

EXTRA_PREP_COMMANDS = {  # name -> (module, help)
    "cache-features": ("minigemini.data.feature_cache_build",
                       "precompute frozen LR/HR tower features for a data set (faster stage-1 training)"),
    "render": ("minigemini.data.render",
               "print the first record of a LLaVA JSON/JSONL file as the template renders it (--show-labels: "
               "trained spans)"),
}


class LazyModuleParser(argparse.ArgumentParser):
    """A subcommand parser whose module (`lazy_module`: add_arguments + run) is imported on first use."""

    def __init__(self, *args: object, lazy_module: str | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_module = lazy_module

    def _load(self) -> None:
        if self.lazy_module:
            module = importlib.import_module(self.lazy_module)
            self.lazy_module = None
            self.description = self.description or module.__doc__
            module.add_arguments(self)
            self.set_defaults(func=module.run)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        """Import the subcommand's module (its options) first, then parse as argparse does."""
        self._load()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        """The help text, with the subcommand's options (imported on first use)."""
        self._load()
        return super().format_help()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `prep` and its subcommands to the `minigemini` parser."""
    prep = subparsers.add_parser("prep", help="prepare data: validate, convert, synthetic, ...",
                                 description="Data preparation tools (see data_prep/README.md).")
    sub = prep.add_subparsers(dest="prep_command", metavar="PREP_COMMAND", parser_class=LazyModuleParser)
    prep.set_defaults(func=lambda args: (prep.print_help(), 2)[1])

    v = sub.add_parser("validate", help="check every record of a training set; summary + located problems",
                       description="Checks JSON syntax, keys, roles, turn order, empty answers, <image> count, image "
                                   "files (missing, unreadable, too small), and with --tokenizer the template and the "
                                   "length with image tokens. Exit code 1 when any problem is found.")
    v.add_argument("data", help="LLaVA JSON/JSONL file, parquet file or save_to_disk folder")
    v.add_argument("--image-folder", default=None, help="folder the records' image paths are relative to (default: "
                                                         "the data file's folder, as in training); printed")
    v.add_argument("--template", default=None, help="conversation template (default: the model's, else vicuna_v1)")
    v.add_argument("--tokenizer", default=None, help="model folder saved by minigemini, or a plain tokenizer folder")
    v.add_argument("--num-image-tokens", type=int, default=None, help="image tokens per <image> (plain tokenizer)")
    v.add_argument("--model-config", default=None, help="folder with a minigemini config.json (plain tokenizer)")
    v.add_argument("--max-length", type=int, default=None, help="max tokens per sample (default: tokenizer's)")
    v.add_argument("--min-image-size", type=int, default=10, help="smallest accepted image side in pixels")
    v.add_argument("--no-decode", action="store_true", help="read image headers only (faster, misses truncation)")
    v.add_argument("--workers", type=int, default=4, help="threads for image checks")
    v.add_argument("--show", type=int, default=3, help="problems printed per kind")
    v.add_argument("--write-clean", default=None, metavar="OUT",
                   help="write good records to OUT (JSON) and the rest to OUT-stem.rejects.jsonl with reasons")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    v.set_defaults(func=run_validate)

    c = sub.add_parser("convert", help="CSV/JSONL table, caption folder or HF dataset -> LLaVA JSON",
                       description="Converts image + question/answer (or image + caption) data into LLaVA JSON. "
                                   "A column option naming a column the data lacks is an error listing the columns; "
                                   "rows without text or with a missing image file are listed and not written. "
                                   "Embedded images (bytes/PIL) are written to --images-out. Image paths in OUT are "
                                   "relative to OUT's folder (where validate and training look by default).")
    c.add_argument("src", help=".csv/.tsv/.jsonl/.json table, .parquet, save_to_disk folder, or image folder "
                               "with .txt captions")
    c.add_argument("out", help="output LLaVA JSON file")
    c.add_argument("--images-out", default=None, help="where embedded images go (default: OUT's folder/images)")
    c.add_argument("--image-folder", default=None,
                   help="folder the table's relative image paths are relative to (default: the table's folder)")
    c.add_argument("--text-only", action="store_true", help="the data has no image column (text-only records)")
    for col in ("image", "question", "answer", "caption", "id"):
        c.add_argument(f"--{col}-column", default=col, help=f"column holding the {col} (default {col!r})")
    c.add_argument("--prompt", default=None, help="user prompt for caption data (default: 'Describe the image "
                                                 "briefly.')")
    c.add_argument("--split", default="train", help="split of a DatasetDict folder")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=run_convert)

    sub.add_parser("synthetic", help="write the synthetic detail-VQA set (demo / tests)",
                   lazy_module="minigemini.data.synthetic")  # numpy + PIL load only when it runs

    for name, (module_name, help_text) in EXTRA_PREP_COMMANDS.items():  # the hook (e.g. cache-features)
        if importlib.util.find_spec(module_name) is not None:
            sub.add_parser(name, help=help_text, lazy_module=module_name)


def run_validate(args: argparse.Namespace) -> int:
    """`prep validate`: print the report; exit 1 on any problem."""
    from .validate import load_processor, validate_records, write_clean

    processor = None
    if args.tokenizer:
        processor = load_processor(args.tokenizer, args.num_image_tokens, args.model_config)
    max_length = args.max_length
    if max_length is None and processor is not None:
        limit = getattr(processor.tokenizer, "model_max_length", None)
        max_length = limit if isinstance(limit, int) and limit < 10**7 else None
    template = args.template
    if template is None and processor is not None and getattr(processor, "config", None) is None:
        template = "auto" if getattr(processor.tokenizer, "chat_template", None) else "vicuna_v1"
    report = validate_records(args.data, image_folder=args.image_folder, processor=processor, template=template,
                              max_length=max_length, min_image_size=args.min_image_size,
                              decode_images=not args.no_decode, workers=args.workers, progress=not args.no_progress)
    print(report.table(show=args.show))
    if args.write_clean and report.fatal is None:
        try:
            good, rejects = write_clean(report, args.write_clean)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        n_bad = len(report.bad_indices)
        print(f"\nwrote {report.total - n_bad} good records to {good} and {n_bad} rejects to {rejects}")
    if processor is None:
        print("\n(note: template and length were not checked; pass --tokenizer to check them)")
    return 0 if report.ok else 1


def run_convert(args: argparse.Namespace) -> int:
    """`prep convert`: write the LLaVA JSON; exit 1 if some rows could not be converted."""
    from .convert import DEFAULT_CAPTION_PROMPT, Columns, convert

    cols = Columns(image=None if args.text_only else args.image_column, question=args.question_column, answer=args.answer_column,
                   caption=args.caption_column, id=args.id_column)
    result = convert(args.src, args.out, cols, images_out=args.images_out, prompt=args.prompt or DEFAULT_CAPTION_PROMPT,
                     split=args.split, progress=not args.no_progress, image_folder=args.image_folder)
    print(f"wrote {result.written} records to {result.out} ({result.images_written} embedded images saved, "
          f"{result.text_only} records without an image)")
    print(f"image paths are relative to {result.image_root.resolve()} (the default image folder of prep validate "
          "and training for this file)")
    if result.unused_columns:
        print(f"columns not used: {', '.join(result.unused_columns)}")
    if result.problems:
        print(f"{len(result.problems)} rows NOT converted:", file=sys.stderr)
        for where, why in result.problems[:20]:
            print(f"  {where}: {why}", file=sys.stderr)
        return 1
    return 0
