"""Reading LLaVA-style records from JSON, JSONL or Hugging Face `datasets`, by index, without images.

A record is `{"id", "image": str | [str] (optional), "conversations": [{"from", "value"}], "system"?}`.
`open_records(path)` returns a `RecordSource`: `len()`, `source[i]` (the raw record; a malformed
JSONL line raises `RecordError` naming the file and line), `location(i)` for messages, and
`summary(i)` = (number of images, conversation text) read without decoding any image.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from PIL import Image


class RecordError(ValueError):
    """A record that cannot be used; `kind` names the problem class (as `prep validate` reports it)."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class _BadLine:
    line: int
    error: str
    raw: str = ""


class RecordSource:
    """Records held in memory (JSON list, JSONL lines, or a list of dicts)."""

    def __init__(self, records: Sequence[Any], path: str = "<records>", line_numbers: Sequence[int] | None = None):
        self.records = records
        self.path = path
        self.line_numbers = line_numbers

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        rec = self.records[i]
        if isinstance(rec, _BadLine):
            raise RecordError(f"{self.path} line {rec.line}: malformed JSON ({rec.error})", "malformed_json")
        if not isinstance(rec, dict):
            raise RecordError(f"{self.location(i)}: is {type(rec).__name__}, expected a JSON object", "missing_keys")
        return rec

    def raw(self, i: int) -> Any:
        """The record as stored (the line's text for a malformed JSONL line)."""
        rec = self.records[i]
        return rec.raw if isinstance(rec, _BadLine) else rec

    def location(self, i: int) -> str:
        """Where record `i` lives, for messages ("file.jsonl line 7" / "file.json record 3")."""
        if self.line_numbers is not None:
            return f"{self.path} line {self.line_numbers[i]}"
        return f"{self.path} record {i}"

    def summaries(self, image_key: str = "image") -> Iterator[tuple[int, str]]:
        """(number of images, conversation text) per record, in order, without decoding images."""
        for rec in self.records:
            if not isinstance(rec, dict):
                yield 0, ""
                continue
            yield count_images(rec.get(image_key)), conversation_text(rec)


class HFRecordSource(RecordSource):
    """Rows of a `datasets.Dataset`; the image column may hold paths, PIL images or {bytes, path}."""

    def __init__(self, dataset: Any, path: str = "<datasets.Dataset>"):
        super().__init__(dataset, path)

    def __getitem__(self, i: int) -> dict:
        return dict(self.records[int(i)])

    def summaries(self, image_key: str = "image") -> Iterator[tuple[int, str]]:
        ds = self.records
        conv_key = next((k for k in ("conversations", "messages") if k in ds.column_names), None)
        table_ds = ds.with_format("arrow")
        for start in range(0, len(ds), 4096):
            table = table_ds[start:start + 4096]
            n = table.num_rows
            convs = table.column(conv_key).to_pylist() if conv_key else [None] * n
            if image_key in ds.column_names:
                counts = _image_counts(table.column(image_key))
            else:
                counts = [0] * n
            for c, conv in zip(counts, convs):
                yield c, conversation_text({"conversations": conv})


def _image_counts(col: Any) -> list[int]:
    """Images per row of an arrow image column (path, struct or list of them), without reading bytes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return [v or 0 for v in pc.list_value_length(col).to_pylist()]
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return [count_images(v) for v in col.to_pylist()]
    return [int(ok) for ok in col.is_valid().to_pylist()]


def count_images(value: Any) -> int:
    """Images a record's image field refers to (None/"" = 0, a list = its length)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    return len(value) if isinstance(value, (list, tuple)) else 1


def conversation_text(record: dict) -> str:
    """All turn texts of a record joined by spaces (for length estimates)."""
    conv = record.get("conversations", record.get("messages")) or []
    parts = [str(t.get("value", t.get("content", ""))) for t in conv if isinstance(t, dict)]
    if isinstance(record.get("system"), str):
        parts.append(record["system"])
    return " ".join(parts)


def read_json_records(path: str | Path) -> RecordSource:
    """Read a LLaVA JSON list (or JSONL: one object per line; malformed lines are kept as errors)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    text = path.read_text(encoding="utf-8")
    head = text.lstrip()[:1]
    if path.suffix != ".jsonl" and head == "[":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{path} line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg}); "
                              "fix the file (a JSON list of records) or convert it to JSONL", "malformed_json") from exc
        if not isinstance(records, list):
            raise RecordError(f"{path}: expected a JSON list of records", "malformed_json")
        return RecordSource(records, str(path))
    records, lines = [], []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            records.append(_BadLine(lineno, exc.msg, line))
        lines.append(lineno)
    return RecordSource(records, str(path), lines)


def open_records(data: Any, split: str = "train") -> RecordSource:
    """A `RecordSource` for a JSON/JSONL file, a `save_to_disk` folder, a parquet/arrow file,
    a `datasets.Dataset`, or a list of record dicts."""
    if isinstance(data, RecordSource):
        return data
    if isinstance(data, list):
        return RecordSource(data)
    if not isinstance(data, (str, Path)):  # a datasets.Dataset (or DatasetDict)
        if hasattr(data, "keys") and not hasattr(data, "column_names"):
            data = data[split]
        return HFRecordSource(data)
    path = Path(data)
    if path.is_dir():
        import datasets

        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise KeyError(f"{path} holds splits {list(loaded)}; choose one with split=...")
            loaded = loaded[split]
        return HFRecordSource(loaded, str(path))
    if path.suffix in (".parquet", ".arrow"):
        import datasets

        reader = datasets.Dataset.from_parquet if path.suffix == ".parquet" else datasets.Dataset.from_file
        return HFRecordSource(reader(str(path)), str(path))
    return read_json_records(path)


def resolve_image(ref: Any, image_folder: str | Path | None) -> str | Path | Image.Image:
    """A path (joined to `image_folder` if relative) or an in-memory PIL image for one image reference."""
    if isinstance(ref, Image.Image):
        return ref
    if isinstance(ref, dict):  # datasets Image(decode=False) / parquet struct
        if ref.get("bytes"):
            return Image.open(io.BytesIO(ref["bytes"]))
        ref = ref.get("path")
    if not isinstance(ref, (str, Path)) or not str(ref).strip():
        raise RecordError(f"image reference {ref!r} is neither a path nor an image", "missing_image")
    path = Path(ref)
    if not path.is_absolute() and image_folder is not None:
        path = Path(image_folder) / path
    return path


def default_image_folder(data: Any) -> Path | None:
    """Where relative image paths point when no image folder is given: the data file's folder (a
    `save_to_disk` folder itself); None for in-memory data. Used by training and `prep validate` alike."""
    if not isinstance(data, (str, Path)):
        return None
    path = Path(data)
    return path if path.is_dir() else path.parent


def image_refs(record: dict, image_key: str = "image") -> list:
    """The record's image references as a list (empty for text-only records)."""
    value = record.get(image_key)
    if count_images(value) == 0:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


class SampleError(RuntimeError):
    """A sample could not be loaded (raised with on_error="raise"); names file, record and reason."""

    def __init__(self, message: str, kind: str = "error", index: int | None = None, sample_id: str | None = None,
                 reason: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.index = index
        self.sample_id = sample_id
        self.reason = reason or message
