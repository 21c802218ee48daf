"""Preflight for a training set: every record checked, problems counted by kind and located.

`validate_records` runs the same steps the dataset runs (record shape, roles, `<image>` count,
image files, template tokenization + label check, the length rule `fit_length` with image tokens)
and returns a `Report`: problems, plus notes that are not problems (records that get their
`<image>` placed automatically, by id) and the folder searched for images; `Report.table()` prints the summary, `write_clean` splits the input into good records
and a rejects file with reasons (good + rejects = input).
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from .collate import TruncationError, fit_length
from .dataset import IMAGE, place_image_tokens
from .records import RecordError, RecordSource, default_image_folder, image_refs, resolve_image
from .templates import TemplateError, get_template, normalize_messages, tokenize_conversation

KINDS = ("malformed_json", "missing_keys", "unknown_role", "not_alternating", "empty_answer", "image_count_mismatch",
         "missing_image", "corrupt_image", "image_too_small", "too_long", "template_mismatch")
WHAT_TO_DO = {
    "malformed_json": "fix the JSON syntax at that line",
    "missing_keys": "each record needs a 'conversations' list of {'from', 'value'} turns",
    "unknown_role": "roles are human/gpt (or user/assistant, system)",
    "not_alternating": "turns must alternate human/gpt, starting with human and ending with gpt",
    "empty_answer": "remove the empty answer or the record",
    "image_count_mismatch": "put one <image> per image in the text",
    "missing_image": "check --image-folder and the 'image' paths",
    "corrupt_image": "re-download or remove the image",
    "image_too_small": "remove the record or lower --min-image-size",
    "too_long": "raise --max-length (the model's context) or shorten the record; training skips it",
    "template_mismatch": "use the template that belongs to the model's tokenizer (or 'auto')",
}
NOTES = {  # not problems: what training will do with these records
    "image_placed": f"have images but no {IMAGE} in the text: training puts one {IMAGE} per image at the start of "
                    "the first user turn",
}
_TOKENIZER_LOCK = threading.Lock()  # fast tokenizers are not safe to call from several threads at once


@dataclass
class Problem:
    """One problem of one record."""

    kind: str
    index: int
    location: str
    sample_id: str
    message: str


@dataclass
class Report:
    """Result of `validate_records`."""

    source: RecordSource | None
    total: int
    problems: list[Problem] = field(default_factory=list)
    fatal: str | None = None  # the file could not be read at all
    image_folder: Path | None = None  # where relative image paths were looked up (None: the current folder)
    notes: list[Problem] = field(default_factory=list)  # kinds from NOTES; not problems

    @property
    def bad_indices(self) -> set[int]:
        return {p.index for p in self.problems}

    @property
    def ok(self) -> bool:
        return self.fatal is None and not self.problems

    def table(self, show: int = 3) -> str:
        """Summary table (count per problem kind) plus the first `show` problems of each kind."""
        if self.fatal:
            return f"cannot read the data: {self.fatal}"
        bad = len(self.bad_indices)
        lines = [f"checked {self.total} records: {self.total - bad} good, {bad} with problems", "",
                 f"{'problem':<22}{'records':>8}  what to do", f"{'-' * 22}{'-' * 8}  {'-' * 40}"]
        counts = Counter(p.kind for p in self.problems)
        kinds = list(KINDS) + sorted(set(counts) - set(KINDS))  # e.g. image_in_answer, template_error
        for kind in kinds:
            hint = WHAT_TO_DO.get(kind, "see the messages below") if counts.get(kind) else ""
            lines.append(f"{kind:<22}{counts.get(kind, 0):>8}  {hint}")
        for kind in kinds:
            first = [p for p in self.problems if p.kind == kind][:show]
            if first:
                lines += ["", f"{kind} (first {len(first)} of {counts[kind]}):"]
                lines += [f"  {p.location} (id {p.sample_id!r}): {p.message}" for p in first]
        return "\n".join(lines + self.note_lines())

    def note_lines(self, show: int = 20) -> list[str]:
        """Where images were searched, and each note kind with its count and the first record ids."""
        folder = self.image_folder.resolve() if self.image_folder is not None else Path.cwd()
        lines = ["", f"images searched in: {folder}" + ("" if self.image_folder else " (the current folder)")]
        for kind, text in NOTES.items():
            ids = [p.sample_id for p in self.notes if p.kind == kind]
            if ids:
                more = f" (+{len(ids) - show} more)" if len(ids) > show else ""
                lines.append(f"note: {len(ids)} record(s) {text}: ids {', '.join(ids[:show])}{more}")
        return lines


def _check_image(ref: Any, image_folder: Any, min_size: int, decode: bool) -> tuple[str, str] | None:
    try:
        image = resolve_image(ref, image_folder)
    except RecordError as exc:
        return exc.kind, str(exc)
    if isinstance(image, Path) and not image.is_file():
        return "missing_image", f"image file not found: {image}"
    try:
        if isinstance(image, Image.Image):
            size = image.size
            if decode:
                image.load()
        else:
            with Image.open(image) as im:
                size = im.size
                if decode:
                    im.load()
    except Exception as exc:  # noqa: BLE001 (PIL raises many types for broken files)
        return "corrupt_image", f"cannot read image {image}: {type(exc).__name__}: {exc}"
    if min(size) < min_size:
        return "image_too_small", f"image {image} is {size[0]}x{size[1]} px (< {min_size})"
    return None


def check_record(source: RecordSource, index: int, image_folder: Any = None, processor: Any = None,
                 template: Any = None, max_length: int | None = None, min_image_size: int = 10,
                 image_key: str = "image", decode_images: bool = True) -> list[Problem]:
    """All problems of record `index` (empty list = good)."""
    location, sid = source.location(index), str(index)
    out: list[Problem] = []

    def add(kind: str, message: str) -> None:
        out.append(Problem(kind, index, location, sid, message))

    try:
        rec = source[index]
    except RecordError as exc:
        add(exc.kind, str(exc).split(": ", 1)[-1])
        return out
    sid = str(rec.get("id", index))
    conv = rec.get("conversations", rec.get("messages"))
    if not isinstance(conv, list) or not conv:
        add("missing_keys", f"no 'conversations' list (keys: {sorted(rec)})")
        return out
    refs = image_refs(rec, image_key)
    turns_ok = True
    try:
        normalize_messages(conv)
        if refs and not any(IMAGE in str(t.get("value", t.get("content", ""))) for t in conv if isinstance(t, dict)):
            add("image_placed", f"{len(refs)} {IMAGE} placed automatically")
        conv = place_image_tokens(conv, len(refs), sid)
    except (TemplateError, RecordError) as exc:
        add(exc.kind, str(exc).replace(f"sample {sid!r}: ", "").replace(f"sample {sid!r} ", ""))
        turns_ok = False
    for ref in refs:
        found = _check_image(ref, image_folder, min_image_size, decode_images)
        if found:
            add(*found)
    if turns_ok and processor is not None:
        system = rec.get("system") if isinstance(rec.get("system"), str) else None
        try:
            with _TOKENIZER_LOCK:
                ids, labels = tokenize_conversation(conv, template, processor, sample_id=sid, system=system)
        except TemplateError as exc:
            add(exc.kind, str(exc))
        else:
            if max_length is not None:
                try:
                    fit_length(ids, labels, max_length, processor.image_token_id)
                except TruncationError as exc:
                    add("too_long", f"{exc} ({len(refs)} image(s) x {processor.num_image_tokens} tokens included)")
    return out


def validate_records(data: Any, image_folder: Any = None, processor: Any = None, template: Any = None,
                     max_length: int | None = None, min_image_size: int = 10, image_key: str = "image",
                     decode_images: bool = True, workers: int = 4, progress: bool = True) -> Report:
    """Check every record of `data` (path or `RecordSource`); see `check_record` for the checks. Relative
    image paths are looked up in `image_folder`, by default the data file's folder (as training does)."""
    from .records import open_records

    try:
        source = open_records(data)
    except RecordError as exc:
        return Report(None, 0, [Problem(exc.kind, 0, str(data), "-", str(exc))], fatal=str(exc))
    if image_folder is None:
        image_folder = default_image_folder(data)
    tmpl = get_template(template or getattr(getattr(processor, "config", None), "template", "vicuna_v1"))
    args = dict(image_folder=image_folder, processor=processor, template=tmpl, max_length=max_length,
                min_image_size=min_image_size, image_key=image_key, decode_images=decode_images)
    report = Report(source, len(source), image_folder=Path(image_folder) if image_folder is not None else None)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(lambda i: check_record(source, i, **args), range(len(source)), chunksize=64)
        for problems in tqdm(results, total=len(source), desc="validate", unit="rec", disable=not progress):
            report.problems.extend(p for p in problems if p.kind not in NOTES)
            report.notes.extend(p for p in problems if p.kind in NOTES)
    return report


def write_clean(report: Report, out: str | Path) -> tuple[Path, Path]:
    """Write the good records to `out` (JSON list) and the rest to `<out stem>.rejects.jsonl` with reasons."""
    source = report.source
    if source is None or not isinstance(source.records, list):
        raise ValueError("--write-clean needs a JSON/JSONL input; convert Hugging Face datasets first "
                         "(minigemini prep convert)")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rejects = out.with_name(out.stem + ".rejects.jsonl")
    by_index: dict[int, list[Problem]] = {}
    for p in report.problems:
        by_index.setdefault(p.index, []).append(p)
    good = [source.raw(i) for i in range(report.total) if i not in by_index]
    out.write_text(json.dumps(good, ensure_ascii=False, indent=1), encoding="utf-8")
    with rejects.open("w", encoding="utf-8") as f:
        for i in sorted(by_index):
            probs = by_index[i]
            f.write(json.dumps({"index": i, "location": probs[0].location, "id": probs[0].sample_id,
                                "problems": [{"kind": p.kind, "message": p.message} for p in probs],
                                "record": source.raw(i)}, ensure_ascii=False) + "\n")
    return out, rejects


@dataclass
class TokenizerProcessor:
    """Stand-in for `MiniGeminiProcessor` when only a tokenizer is at hand (text side only)."""

    tokenizer: Any
    num_image_tokens: int
    image_token: str = "<image>"
    config: Any = None

    def __post_init__(self) -> None:
        if self.image_token not in self.tokenizer.get_vocab():
            self.tokenizer.add_special_tokens({"additional_special_tokens": [self.image_token]},
                                              replace_extra_special_tokens=False)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)


def load_processor(path: str | Path, num_image_tokens: int | None = None, model_config: str | None = None) -> Any:
    """A model folder saved by minigemini -> its processor; a plain tokenizer folder -> `TokenizerProcessor`
    (image token count from `num_image_tokens` or a minigemini `config.json` in `model_config`)."""
    from transformers import AutoTokenizer

    from minigemini.model.configuration import MiniGeminiConfig
    from minigemini.model.processing import PROCESSOR_FILE, MiniGeminiProcessor

    path = Path(path)
    config_file = path / "config.json"
    is_model = (path / PROCESSOR_FILE).exists() or (
        config_file.exists() and json.loads(config_file.read_text()).get("model_type") == "minigemini")
    if is_model:
        return MiniGeminiProcessor.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if num_image_tokens is None and model_config:
        num_image_tokens = MiniGeminiConfig.from_pretrained(model_config).num_image_tokens
    if num_image_tokens is None:
        raise ValueError(f"{path} is a plain tokenizer: pass --num-image-tokens N (e.g. 576 for CLIP ViT-L/14 at "
                         "336 px; 5x that for MGM-HD) or --model-config FOLDER holding a minigemini config.json")
    return TokenizerProcessor(tokenizer, num_image_tokens)
