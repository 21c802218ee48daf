"""`prep convert`: your data -> LLaVA JSON (`[{"id", "image", "conversations"}]`) that the dataset reads.

Inputs: a CSV/TSV/JSONL/JSON table with image + question/answer (or image + caption) columns; a
folder of images with same-name `.txt` caption files; a Hugging Face dataset (`save_to_disk`
folder or parquet file) with an image column (path, PIL or bytes) and text columns.

Nothing is lost silently: a column option naming a column the data does not have is an error that
lists the available columns (before anything is written); a row that lacks its text or whose image
file does not exist is listed as a problem and not written. Image paths: a table's relative paths
are read relative to `image_folder` (default: the table's folder); embedded images (bytes / PIL)
are written to `images_out`; every path written is relative to the OUTPUT file's folder, which is
where `prep validate` and training look when no image folder is given.
"""

from __future__ import annotations

import csv
import io
import json
import os
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

    image: str | None = "image"  # None: text-only data
    question: str = "question"
    answer: str = "answer"
    caption: str = "caption"
    id: str = "id"


@dataclass
class ConvertResult:
    """What `convert` wrote and what it could not convert (row, reason)."""

    out: Path
    image_root: Path  # the folder the written image paths are relative to (out's folder)
    written: int = 0
    images_written: int = 0
    text_only: int = 0  # records written without an image (empty image cell, or --text-only)
    unused_columns: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _rows_from_table(path: Path) -> tuple[list[str], Iterable[dict]]:
    """(column names, rows) of a CSV/TSV/JSON/JSONL table; a malformed JSONL line is a row with `__error__`."""
    if path.suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
            return list(reader.fieldnames or []), list(reader)
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    rows.append({"__error__": f"line {lineno}: malformed JSON ({exc.msg})"})
    names = dict.fromkeys(k for r in rows if isinstance(r, dict) and "__error__" not in r for k in r)
    return list(names), rows


def _rows_from_caption_folder(folder: Path, problems: list) -> Iterator[dict]:
    for image in sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        side = image.with_suffix(".txt")
        if not side.exists():
            problems.append((str(image), "no caption file " + side.name))
            continue
        yield {"id": image.relative_to(folder).with_suffix("").as_posix(), "image": str(image),
               "caption": side.read_text(encoding="utf-8").strip()}


def _rows_from_hf(path: Path, split: str) -> tuple[list[str], Iterable[dict]]:
    import datasets

    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        ds = datasets.Dataset.from_parquet(str(path))
    return list(ds.column_names), ds


def check_columns(available: list[str], cols: Columns, src: Path) -> None:
    """Refuse (ValueError naming the available columns) a column option the data does not have, and data
    without an image column (unless `cols.image` is None: text-only) or without text columns."""
    have = set(available)
    hint = f"{src} has columns {available}"
    defaults = Columns()
    for name in ("image", "question", "answer", "caption", "id"):
        chosen = getattr(cols, name)
        if chosen is not None and chosen != getattr(defaults, name) and chosen not in have:
            raise ValueError(f"no column {chosen!r} (--{name}-column) in {hint}; name one of these")
    if cols.image is not None and cols.image not in have:
        raise ValueError(f"no image column {cols.image!r} in {hint}: pass --image-column NAME, or --text-only "
                         "for data without images")
    qa = [c for c in (cols.question, cols.answer) if c in have]
    if len(qa) == 1 and cols.caption not in have:
        missing = cols.answer if qa[0] == cols.question else cols.question
        raise ValueError(f"no column {missing!r} in {hint}: pass --question-column and --answer-column")
    if not qa and cols.caption not in have:
        raise ValueError(f"no text columns in {hint}: pass --question-column and --answer-column (questions and "
                         "answers) or --caption-column (captions)")


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


@dataclass
class ImagePlacer:
    """Turns a row's image value into a path relative to `out_dir`: a path is read relative to `source`
    (and must exist), an embedded image is written to `images_out`."""

    source: Path
    images_out: Path
    out_dir: Path
    embedded: int = 0

    def place(self, value: Any, stem: str) -> str:
        """The record's path for one image value (FileNotFoundError if a path names no file)."""
        if isinstance(value, dict) and not value.get("bytes"):
            value = value.get("path")
        if isinstance(value, (str, Path)):
            path = Path(value) if Path(value).is_absolute() else self.source / value
            if not path.is_file():
                raise FileNotFoundError(f"image file not found: {path} (relative paths are read from "
                                        f"{self.source}; pass --image-folder DIR if they are relative to DIR)")
        else:
            self.images_out.mkdir(parents=True, exist_ok=True)
            path = self.images_out / _save_image(value, self.images_out, stem)
            self.embedded += 1
        return Path(os.path.relpath(path.resolve(), self.out_dir.resolve())).as_posix()


def row_to_record(row: dict, index: int, cols: Columns, images: ImagePlacer, prompt: str) -> dict:
    """One input row -> one LLaVA record; ValueError/OSError when a field it needs is missing."""
    if "__error__" in row:
        raise ValueError(row["__error__"])
    rid = str(row.get(cols.id) if row.get(cols.id) not in (None, "") else index)
    image = row.get(cols.image) if cols.image is not None else None
    if isinstance(image, str) and not image.strip():
        image = None
    question, answer = row.get(cols.question), row.get(cols.answer)
    caption = row.get(cols.caption)
    if answer not in (None, ""):
        human, gpt = str(question or "").strip(), str(answer).strip()
        if not human:
            raise ValueError(f"column {cols.question!r} is empty")
    elif caption not in (None, ""):
        human, gpt = prompt, str(caption).strip()
    else:
        raise ValueError(f"no text: needs {cols.question!r} + {cols.answer!r} or {cols.caption!r} "
                         f"(this row has {sorted(k for k in row if row[k] not in (None, '') and not k.startswith('__'))})")
    if image is not None:
        stem = f"{index:08d}_{_safe_stem(rid)}"
        many = isinstance(image, (list, tuple))
        image = [images.place(v, f"{stem}_{k}") for k, v in enumerate(image)] if many else images.place(image, stem)
        if "<image>" not in human:
            human = "<image>\n" * (len(image) if many else 1) + human
    rec: dict[str, Any] = {"id": rid}
    if image is not None:
        rec["image"] = image
    rec["conversations"] = [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]
    return rec


def _open_source(src: Path, cols: Columns, split: str, problems: list) -> tuple[list[str], Iterable[dict], Path]:
    """(column names, rows, folder relative image paths are read from) for any supported input."""
    if src.is_dir() and not ((src / "dataset_info.json").exists() or (src / "dataset_dict.json").exists()):
        if cols != Columns():
            raise ValueError(f"{src} is a folder of images with .txt captions: column options do not apply")
        return ["id", "image", "caption"], _rows_from_caption_folder(src, problems), src
    if src.is_dir() or src.suffix in (".parquet", ".arrow"):
        return (*_rows_from_hf(src, split), src if src.is_dir() else src.parent)
    if src.suffix in (".csv", ".tsv", ".jsonl", ".json"):
        return (*_rows_from_table(src), src.parent)
    raise ValueError(f"cannot convert {src}: expected .csv/.tsv/.jsonl/.json, .parquet, a save_to_disk folder "
                     "or a folder of images with .txt captions")


def convert(src: str | Path, out: str | Path, columns: Columns | None = None, images_out: str | Path | None = None,
            prompt: str = DEFAULT_CAPTION_PROMPT, split: str = "train", progress: bool = True,
            image_folder: str | Path | None = None) -> ConvertResult:
    """Convert `src` (table file, caption folder, or HF dataset) into the LLaVA JSON file `out`.

    Raises ValueError (nothing written) for a missing column or when no row converts; rows that cannot be
    converted are in `result.problems`. Image paths in `out` are relative to `out`'s folder."""
    src, out = Path(src), Path(out)
    cols = columns or Columns()
    result = ConvertResult(out, image_root=out.parent)
    available, rows, source_folder = _open_source(src, cols, split, result.problems)
    check_columns(available, cols, src)
    used = {cols.image, cols.question, cols.answer, cols.caption, cols.id}
    result.unused_columns = [c for c in available if c not in used]
    placer = ImagePlacer(Path(image_folder) if image_folder else source_folder,
                         Path(images_out) if images_out else out.parent / "images", out.parent)
    records = []
    for i, row in enumerate(tqdm(rows, desc="convert", unit="row", disable=not progress)):
        try:
            records.append(row_to_record(dict(row), i, cols, placer, prompt))
        except (ValueError, TypeError, OSError) as exc:
            result.problems.append((f"{src} row {i}", str(exc)))
    if not records:
        first = "; ".join(f"{where}: {why}" for where, why in result.problems[:3])
        raise ValueError(f"no row of {src} could be converted ({len(result.problems)} problems; first: {first})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    result.written, result.images_written = len(records), placer.embedded
    result.text_only = sum("image" not in r for r in records)
    return result
