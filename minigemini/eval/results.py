"""Writing scores: `results.json` (metric name -> value) and a markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

META_KEY = "meta"


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metric dicts as (dotted.name, value) pairs, in insertion order."""
    rows: list[tuple[str, Any]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flatten_metrics(value, prefix=f"{name}."))
        else:
            rows.append((name, value))
    return rows


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value[:20])) + (" ..." if len(value) > 20 else "")
    return str(value).replace("|", "\\|").replace("\n", " ")


def scope_line(meta: dict[str, Any]) -> str:
    """'scored: N of M questions (subset ...)' from a results `meta`."""
    detail = f"subset: {meta.get('subset', 'all')}"
    if meta.get("limit") is not None:
        detail += f", first {meta['limit']} only"
    if meta.get("num_incomplete_groups_dropped"):
        detail += f", {meta['num_incomplete_groups_dropped']} incomplete groups left out"
    return f"scored: {meta['num_scored']} of {meta['num_total']} questions ({detail})"


def results_table(results: dict[str, Any], title: str | None = None) -> str:
    """Markdown table of the metrics in `results` (the `meta` entry summarised below it)."""
    meta = results.get(META_KEY, {})
    lines = [f"## {title}", ""] if title else []
    lines += ["| metric | value |", "| --- | --- |"]
    metrics = {k: v for k, v in results.items() if k != META_KEY}
    lines += [f"| {name} | {_fmt(value)} |" for name, value in flatten_metrics(metrics)]
    if meta:
        lines.append("")
        for key in ("benchmark", "predictions", "num_questions", "num_answered", "num_missing",
                    "num_unknown_ids", "num_duplicate_ids"):
            if key in meta:
                lines.append(f"- {key}: {meta[key]}")
        if "num_scored" in meta:
            lines.append(f"- {scope_line(meta)}")
        if meta.get("missing_ids"):
            wrong = meta.get("num_missing_scored_as_wrong", len(meta["missing_ids"]))
            how = ("scored as wrong" if wrong == len(meta["missing_ids"]) else "not scored" if wrong == 0
                   else f"{wrong} of them, among the scored questions, scored as wrong")
            lines.append(f"- missing ids ({how}): {_fmt(meta['missing_ids'])}")
    return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out_dir: str | Path,
                  stem: str = "results", title: str | None = None) -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` into `out_dir`; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n",
                         encoding="utf-8")
    md_path.write_text(results_table(results, title=title), encoding="utf-8")
    return json_path, md_path
