"""Every CLI option has help text, and every repository path named in `--help` texts and the docs exists (issue 15)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

from minigemini.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "data_prep" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# a path under one of these folders, as docs and help texts write them (`configs/x.yaml`, ../configs/x, scripts/x.sh)
# (one preceded by a word and a slash, as `MGM/scripts/gemma`, is another repository's)
PATH_RE = re.compile(r"(?<![\w./-])(?:\.\./|\./)*((?:configs|scripts|benchmarks|docs)/[\w.{},/*-]*[\w}/*])")


def parsers(parser: argparse.ArgumentParser, name: str = "minigemini") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(command path, parser) for the parser and every subcommand below it (lazy subcommands loaded)."""
    if hasattr(parser, "_load"):
        parser._load()
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from parsers(sub, f"{name} {sub_name}")


def test_every_option_and_subcommand_has_help() -> None:
    missing = []
    for name, parser in parsers(build_parser()):
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction)) or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{name} {sub} (subcommand)" for sub in action.choices if sub not in helped]
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, "options without help text:\n" + "\n".join(missing)


def expand(path: str) -> list[str]:
    """`configs/tiny/{pretrain,finetune}.yaml` -> both paths (`*` is kept: a glob)."""
    brace = re.search(r"\{([^{}]*)\}", path)
    if not brace:
        return [path]
    return [q for part in brace.group(1).split(",") for q in expand(path[:brace.start()] + part + path[brace.end():])]


def named_paths() -> dict[str, set[str]]:
    """Every repository path named in the docs and in the `--help` text of every command: path -> where."""
    found: dict[str, set[str]] = {}
    texts = [(str(doc.relative_to(REPO)), doc.read_text()) for doc in DOCS]
    texts += [(f"`{name} --help`", parser.format_help()) for name, parser in parsers(build_parser())]
    for where, text in texts:
        for match in PATH_RE.finditer(text.replace("\n", " ")):
            for path in expand(match.group(1)):
                found.setdefault(path, set()).add(where)
    return found


def exists(path: str) -> bool:
    return any(REPO.glob(path)) if "*" in path else (REPO / path).exists()


def test_paths_named_in_docs_and_help_exist() -> None:
    found = named_paths()
    assert "configs/custom/finetune.yaml" in found and "scripts/train_slurm.sbatch" in found  # the regex works
    missing = [f"{path} (in {', '.join(sorted(where))})" for path, where in sorted(found.items()) if not exists(path)]
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces -> hyphens."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.DOTALL), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_in_docs_exist() -> None:
    """`[text](other.md#anchor)` links between the docs point to files (and headings) that exist."""
    missing = []
    for doc in DOCS:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", doc.read_text()):
            if "://" in target:
                continue
            path = doc.parent / target if target else doc
            if not path.exists():
                missing.append(f"{target} (in {doc.relative_to(REPO)})")
            elif anchor and path.suffix == ".md" and anchor not in github_anchors(path.read_text()):
                missing.append(f"{target}#{anchor}: no such heading (in {doc.relative_to(REPO)})")
    assert not missing, "links to files or headings that do not exist:\n" + "\n".join(missing)
