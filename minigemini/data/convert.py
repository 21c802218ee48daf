"""`prep convert`: your data -> LLaVA JSON (`[{"id", "image", "conversations"}]`) that the dataset reads.

Inputs: a CSV/TSV/JSONL/JSON table with image + question/answer (or image + caption) columns; a
folder of images with same-name `.txt` caption files; a Hugging Face dataset (`save_to_disk`
folder or parquet file) with an image column (path, PIL or bytes) and text columns. Images that
come embedded (bytes / PIL) are written to `images_out`; paths are kept as given (relative to the
folder you will pass as `--image-folder`). Rows that cannot be converted are listed, never dropped
silently.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from PIL import Image
from tqdm.auto import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
DEFAULT_CAPTION_PROMPT = "Describe the image briefly."


@dataclass
class Columns:
    """Column names of the input table / dataset."""

    image: str = "image"
    question: str = "question"
    answer: str = "answer"
    caption: str = "caption"
    id: str = "id"


@dataclass
class ConvertResult:
    """What `convert` wrote and what it could not convert (row, reason)."""

    out: Path
    written: int = 0
    images_written: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)


def _rows_from_table(path: Path) -> Iterator[dict]:
    if path.suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            yield from csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        return
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        yield from json.loads(text)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                yield {"__error__": f"line {lineno}: malformed JSON ({exc.msg})"}


def _rows_from_caption_folder(folder: Path, problems: list) -> Iterator[dict]:
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        side = image.with_suffix(".txt")
        if not side.exists():
            problems.append((str(image), "no caption file " + side.name))
            continue
        yield {"id": str(image.relative_to(folder).with_suffix("")), "image": str(image.relative_to(folder)),
               "caption": side.read_text(encoding="utf-8").strip()}


def _rows_from_hf(path: Path, split: str) -> Iterable[dict]:
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        ds = datasets.Dataset.from_parquet(str(path))
    return ds


def _save_image(value: Any, images_out: Path, stem: str) -> str:
    """Write an embedded image (PIL / bytes / {"bytes"}) as a file; returns its name inside images_out."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        with Image.open(io.BytesIO(value)) as im:
            ext = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif"}.get(im.format or "", ".png")
        name = stem + ext
        (images_out / name).write_bytes(value)
        return name
    if isinstance(value, Image.Image):
        name = stem + ".png"
        value.save(images_out / name)
        return name
    raise TypeError(f"unsupported image value {type(value).__name__}")


def _safe_stem(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:120] or "image"


def row_to_record(row: dict, index: int, cols: Columns, images_out: Path | None, prompt: str) -> dict:
    """One input row -> one LLaVA record (writes an embedded image to `images_out`)."""
    if "__error__" in row:
        raise ValueError(row["__error__"])
    rid = str(row.get(cols.id) if row.get(cols.id) not in (None, "") else index)
    image = row.get(cols.image)
    if isinstance(image, str) and not image.strip():
        image = None
    if image is not None and not isinstance(image, (str, list)):
        if images_out is None:
            raise ValueError("the image is embedded (bytes/PIL); pass images_out to write it")
        image = _save_image(image, images_out, f"{index:08d}_{_safe_stem(rid)}")
    question, answer = row.get(cols.question), row.get(cols.answer)
    caption = row.get(cols.caption)
    if answer not in (None, ""):
        human, gpt = str(question or "").strip(), str(answer).strip()
        if not human:
            raise ValueError(f"column {cols.question!r} is empty")
    elif caption not in (None, ""):
        human, gpt = prompt, str(caption).strip()
    else:
        raise ValueError(f"no text: needs {cols.question!r} + {cols.answer!r} or {cols.caption!r} columns "
                         f"(row keys: {sorted(k for k in row if not k.startswith('__'))})")
    if image is not None and "<image>" not in human:
        n = len(image) if isinstance(image, list) else 1
        human = "<image>\n" * n + human
    rec: dict[str, Any] = {"id": rid}
    if image is not None:
        rec["image"] = image
    rec["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return rec


def convert(src: str | Path, out: str | Path, columns: Columns | None = None, images_out: str | Path | None = None,
            prompt: str = DEFAULT_CAPTION_PROMPT, split: str = "train", progress: bool = True) -> ConvertResult:
    """Convert `src` (table file, caption folder, or HF dataset) into the LLaVA JSON file `out`."""
    src, out = Path(src), Path(out)
    cols = columns or Columns()
    result = ConvertResult(out)
    if src.is_dir() and not ((src / "dataset_info.json").exists() or (src / "dataset_dict.json").exists()):
        rows: Iterable[dict] = _rows_from_caption_folder(src, result.problems)
    elif src.is_dir() or src.suffix in (".parquet", ".arrow"):
        rows = _rows_from_hf(src, split)
    elif src.suffix in (".csv", ".tsv", ".jsonl", ".json"):
        rows = _rows_from_table(src)
    else:
        raise ValueError(f"cannot convert {src}: expected .csv/.tsv/.jsonl/.json, .parquet, a save_to_disk folder "
                         "or a folder of images with .txt captions")
    img_dir = Path(images_out) if images_out else out.parent / "images"
    records = []
    for i, row in enumerate(tqdm(rows, desc="convert", unit="row", disable=not progress)):
        try:
            needs_dir = not isinstance(row.get(cols.image), (str, list, type(None)))
            if needs_dir:
                img_dir.mkdir(parents=True, exist_ok=True)
            records.append(row_to_record(dict(row), i, cols, img_dir, prompt))
            result.images_written += int(needs_dir)
        except (ValueError, TypeError, OSError) as exc:
            result.problems.append((f"{src} row {i}", str(exc)))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    result.written = len(records)
    return result
