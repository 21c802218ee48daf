"""Shared machinery of the `data_prep` scripts: lay downloaded public sets out as the MGM / LLaVA
recipes expect, merge their JSON files, and check that every referenced image exists.

A `Recipe` is data: the image folders of the layout (target subfolder -> what goes there), the
known JSON inputs (option -> image-path prefix inside the layout), and the merged JSON's name.
`run_recipe` links (or copies / moves) each given folder into place, merges the JSONs (image paths
rewritten relative to the layout root), checks every image, prints counts per folder, and writes
records whose images are missing to a rejects file only when asked (`--drop-missing`); otherwise
missing images make the exit code 1. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class Recipe:
    """One layout: `folders` target -> help; `jsons` option -> (image prefix, help)."""

    name: str  # folder created under --root (e.g. "MGM-Pretrain")
    json_name: str  # merged annotation file written into that folder
    folders: dict[str, str]
    jsons: dict[str, tuple[str, str]]
    notes: str = ""
    options: dict[str, str] = field(default_factory=dict)  # target folder -> option name, when not "<target>-images"


def _opt(name: str) -> str:
    return name.lower().replace("_", "-").replace("/", "-")


def build_parser(recipe: Recipe, description: str) -> argparse.ArgumentParser:
    """argparse options generated from the recipe (one per folder and per known JSON)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=recipe.notes)
    p.add_argument("--root", default="data", help="data root; the layout goes to ROOT/" + recipe.name)
    p.add_argument("--mode", choices=["symlink", "copy", "move"], default="symlink",
                   help="how image folders are put in place (default symlink: no copy of large sets)")
    folders = p.add_argument_group("image folders you downloaded (each becomes a subfolder of the layout)")
    for target, help_text in recipe.folders.items():
        option = recipe.options.get(target, f"{_opt(target)}-images")
        folders.add_argument(f"--{option}", dest=f"folder:{target}", metavar="DIR",
                             help=f"-> {target}/ : {help_text}")
    jsons = p.add_argument_group("annotation files (LLaVA JSON/JSONL) to merge")
    for option, (prefix, help_text) in recipe.jsons.items():
        jsons.add_argument(f"--{option}", dest=f"json:{option}", metavar="FILE",
                           help=f"{help_text} (image paths get prefix {prefix!r})" if prefix else help_text)
    jsons.add_argument("--extra-json", action="append", default=[], metavar="FILE[:PREFIX]",
                       help="any other LLaVA JSON; PREFIX is prepended to its image paths")
    p.add_argument("--rewrite", action="append", default=[], metavar="OLD=NEW",
                   help="replace a leading image-path part after prefixing (e.g. llava/llava_pretrain=llava/LLaVA-Pretrain)")
    p.add_argument("--drop-missing", action="store_true",
                   help="write records whose images are missing to <json>.rejects.jsonl instead of failing")
    p.add_argument("--out-json", default=None, help=f"merged file name (default {recipe.json_name})")
    return p


def place_folder(src: Path, dst: Path, mode: str) -> str:
    """Put `src` at `dst` (symlink / copy / move); an existing `dst` is left alone."""
    if not src.is_dir():
        raise SystemExit(f"error: {src} is not a folder")
    if dst.exists() or dst.is_symlink():
        if dst.resolve() == src.resolve():
            return f"{dst} already in place"
        return f"{dst} exists: left as is (remove it to re-link {src})"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        dst.symlink_to(src.resolve(), target_is_directory=True)
    elif mode == "copy":
        shutil.copytree(src, dst)
    else:
        shutil.move(str(src), str(dst))
    return f"{dst} <- {src} ({mode})"


def read_records(path: Path) -> list[dict]:
    """A LLaVA JSON list or JSONL file (a malformed line stops with its line number)."""
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"error: {path} line {lineno}: malformed JSON ({exc.msg})") from exc
    return out


def _rewrite_path(path: str, prefix: str, rewrites: Sequence[tuple[str, str]]) -> str:
    path = prefix + path
    for old, new in rewrites:
        if path.startswith(old):
            return new + path[len(old):]
    return path


def retarget(record: dict, prefix: str, rewrites: Sequence[tuple[str, str]]) -> dict:
    """Copy of `record` with its image path(s) made relative to the layout root."""
    rec = dict(record)
    image = rec.get("image")
    if isinstance(image, str) and image:
        rec["image"] = _rewrite_path(image, prefix, rewrites)
    elif isinstance(image, list):
        rec["image"] = [_rewrite_path(i, prefix, rewrites) for i in image]
    return rec


def image_list(record: dict) -> list[str]:
    image = record.get("image")
    if isinstance(image, str) and image:
        return [image]
    return list(image) if isinstance(image, list) else []


@dataclass
class ImageCheck:
    """Referenced / missing image counts per top-level folder, and which records miss images."""

    referenced: Counter = field(default_factory=Counter)
    missing: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    bad_records: set[int] = field(default_factory=set)

    def table(self) -> str:
        lines = [f"{'folder':<24}{'images':>10}{'missing':>10}", "-" * 44]
        for top in sorted(self.referenced):
            lines.append(f"{top:<24}{self.referenced[top]:>10}{self.missing[top]:>10}")
        lines.append(f"{'total':<24}{sum(self.referenced.values()):>10}{sum(self.missing.values()):>10}")
        for top, paths in sorted(self.examples.items()):
            lines.append(f"  missing in {top}/ e.g. " + ", ".join(paths))
        return "\n".join(lines)


def check_images(records: Sequence[dict], root: Path) -> ImageCheck:
    """Check that every image path (relative to `root`) is a file."""
    from tqdm.auto import tqdm

    result = ImageCheck()
    seen: dict[str, bool] = {}
    for i, rec in enumerate(tqdm(records, desc="check images", unit="rec", mininterval=2)):
        for path in image_list(rec):
            top = path.split("/", 1)[0] if "/" in path else "."
            result.referenced[top] += 1
            if path not in seen:
                seen[path] = (root / path).is_file()
            if not seen[path]:
                result.missing[top] += 1
                result.bad_records.add(i)
                examples = result.examples.setdefault(top, [])
                if len(examples) < 3:
                    examples.append(path)
    return result


def run_recipe(recipe: Recipe, args: argparse.Namespace) -> int:
    """Lay out folders, merge JSONs, check images, write the merged file; returns an exit code."""
    layout = Path(args.root) / recipe.name
    layout.mkdir(parents=True, exist_ok=True)
    for target in recipe.folders:
        src = getattr(args, f"folder:{target}")
        if src:
            print(place_folder(Path(src), layout / target, args.mode))
    inputs: list[tuple[Path, str]] = []
    for option, (prefix, _) in recipe.jsons.items():
        if getattr(args, f"json:{option}"):
            inputs.append((Path(getattr(args, f"json:{option}")), prefix))
    for spec in args.extra_json:
        file, sep, prefix = spec.rpartition(":")
        if not sep or Path(spec).exists():
            file, prefix = spec, ""
        inputs.append((Path(file), prefix))
    if not inputs:
        print("error: no annotation file given; pass at least one of the JSON options (see --help)", file=sys.stderr)
        return 2
    rewrites = [tuple(r.split("=", 1)) for r in args.rewrite]
    merged: list[dict] = []
    for path, prefix in inputs:
        records = read_records(path)
        merged += [retarget(r, prefix, rewrites) for r in records]
        print(f"read {len(records):>9} records from {path}" + (f" (image prefix {prefix!r})" if prefix else ""))
    ids = Counter(str(r.get("id")) for r in merged if "id" in r)
    duplicates = sum(n - 1 for n in ids.values() if n > 1)
    if duplicates:
        print(f"note: {duplicates} records share an id with another record (kept; ids are only used in messages)")
    check = check_images(merged, layout)
    print(check.table())
    out = layout / (args.out_json or recipe.json_name)
    keep = merged
    if check.bad_records and args.drop_missing:
        keep = [r for i, r in enumerate(merged) if i not in check.bad_records]
        rejects = out.with_name(out.stem + ".rejects.jsonl")
        with rejects.open("w", encoding="utf-8") as f:
            for i in sorted(check.bad_records):
                f.write(json.dumps({"reason": "missing image", "record": merged[i]}, ensure_ascii=False) + "\n")
        print(f"{len(check.bad_records)} records with missing images written to {rejects}")
    out.write_text(json.dumps(keep, ensure_ascii=False), encoding="utf-8")
    print(f"wrote {len(keep)} records to {out}")
    print(f"next: minigemini prep validate {out} --image-folder {layout} --tokenizer MODEL_DIR")
    if check.bad_records and not args.drop_missing:
        print(f"error: {len(check.bad_records)} records reference missing images (see the table); fix the folders "
              "or pass --drop-missing", file=sys.stderr)
        return 1
    return 0


def main_for(recipe: Recipe, description: str, argv: Sequence[str] | None = None) -> int:
    """Entry point shared by the scripts."""
    args = build_parser(recipe, description).parse_args(argv)
    return run_recipe(recipe, args)
