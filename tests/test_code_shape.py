"""The house rules of shared/DESIGN.md, checked on the source (`ast`, no import): files <= 400 lines, functions
<= 60 lines, public functions and methods typed, and one definition per decision (IGNORE_INDEX; the writer of
weight files). Over minigemini/, data_prep/ and benchmarks/ (tests/ may be longer and untyped)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("minigemini", "data_prep", "benchmarks")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60

WEIGHT_WRITER = "minigemini/model/weights.py"  # save_weight_subset: every safetensors file of model weights
DATA_WRITERS = {  # safetensors files that hold data, not weights: they keep their own save_file call
    "minigemini/data/feature_cache_build.py": "cached tower features (shards of a feature cache)",
    "minigemini/infer/attention.py": "patch-info-mining attention maps (--save-attention)",
}


@cache
def sources() -> dict[str, ast.Module]:
    files = sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))
    assert len(files) > 50, files  # the walk found the code
    return {p.relative_to(ROOT).as_posix(): ast.parse(p.read_text(encoding="utf-8"), filename=str(p)) for p in files}


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> list[ast.arg]:
    a = fn.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []),
              *([a.kwarg] if a.kwarg else [])]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    if is_method and not static and params and params[0].arg in ("self", "cls"):
        params = params[1:]
    return params


def untyped(fn: ast.FunctionDef | ast.AsyncFunctionDef, is_method: bool) -> list[str]:
    """What a public function lacks: the names of unannotated parameters and 'return'."""
    missing = [p.arg for p in _params(fn, is_method) if p.annotation is None]
    if fn.returns is None and fn.name != "__init__":
        missing.append("return")
    return missing


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """Module statements, looking into top-level `if` / `try` blocks (TYPE_CHECKING, optional imports)."""
    out: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            out += _top_level(ast.Module(body=[*node.body, *getattr(node, "orelse", []),
                                               *[s for h in getattr(node, "handlers", []) for s in h.body],
                                               *getattr(node, "finalbody", [])], type_ignores=[]))
        else:
            out.append(node)
    return out


def public_functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef, bool]]:
    """(qualified name, node, is_method) of public top-level functions and public methods (+ __init__) of
    public top-level classes."""
    funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
    out = []
    for node in _top_level(tree):
        if isinstance(node, funcs) and not node.name.startswith("_"):
            out.append((node.name, node, False))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            out += [(f"{node.name}.{m.name}", m, True) for m in node.body
                    if isinstance(m, funcs) and (not m.name.startswith("_") or m.name == "__init__")]
    return out


def shape_problems(path: str, source: str, tree: ast.Module) -> list[str]:
    """Every rule broken by one file, as 'path: name: problem' lines (allow-listed functions left out)."""
    problems = []
    lines = len(source.splitlines())
    if lines > MAX_FILE_LINES:
        problems.append(f"{path}: {lines} lines > {MAX_FILE_LINES}: split it by concept")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                problems.append(f"{path}:{node.lineno}: {node.name}: {length} lines > {MAX_FUNCTION_LINES}")
    for name, fn, is_method in public_functions(tree):
        missing = untyped(fn, is_method)
        if missing:
            problems.append(f"{path}:{fn.lineno}: {name}: no annotation for {', '.join(missing)}")
    return problems


def test_files_functions_and_public_signatures() -> None:
    problems = []
    for path, tree in sources().items():
        problems += shape_problems(path, (ROOT / path).read_text(encoding="utf-8"), tree)
    assert not problems, "\n".join(problems)


def test_the_checker_sees_violations() -> None:
    """The rules above are not vacuous: a long untyped function, an untyped method and a long file are caught."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = (f"def long(a, b: int):\n{body}\n\n"
              "class Public:\n    def __init__(self, n) -> None: ...\n    def get(self, key: str): ...\n"
              "    def _private(self, x): ...\n\nclass _Hidden:\n    def get(self, x): ...\n"
              "def typed(*args: int, **kw: str) -> None: ...\n" + "\n" * MAX_FILE_LINES)
    problems = shape_problems("minigemini/x.py", source, ast.parse(source))
    assert problems == [f"minigemini/x.py: {len(source.splitlines())} lines > {MAX_FILE_LINES}: split it by concept",
                        f"minigemini/x.py:1: long: {MAX_FUNCTION_LINES + 1} lines > {MAX_FUNCTION_LINES}",
                        "minigemini/x.py:1: long: no annotation for a, return",
                        "minigemini/x.py:64: Public.__init__: no annotation for n",
                        "minigemini/x.py:65: Public.get: no annotation for return"]


def test_ignore_index_is_defined_once() -> None:
    """IGNORE_INDEX is assigned in minigemini/model/constants.py only; everything else imports it."""
    where = []
    for path, tree in sources().items():
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            where += [f"{path}:{node.lineno}" for t in targets for n in ast.walk(t)
                      if isinstance(n, ast.Name) and n.id == "IGNORE_INDEX"]
    assert len(where) == 1 and where[0].startswith("minigemini/model/constants.py:"), where


def safetensors_writers(tree: ast.Module) -> bool:
    """Whether a module imports or calls safetensors' `save_file` / `save` (it writes safetensors files)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("safetensors"):
            if any(a.name in ("save_file", "save") for a in node.names):
                return True
        if isinstance(node, ast.Attribute) and node.attr == "save_file":
            return True
    return False


def test_weight_files_have_one_writer() -> None:
    """Only model/weights.py (`save_weight_subset`) writes weight subsets; the other safetensors writers write
    data (feature-cache shards, attention maps), each named in DATA_WRITERS with what it writes."""
    writers = {path for path, tree in sources().items() if safetensors_writers(tree)}
    assert writers == {WEIGHT_WRITER, *DATA_WRITERS}, sorted(writers)
    weights = sources()[WEIGHT_WRITER]
    assert [n.name for n in weights.body if isinstance(n, ast.FunctionDef)] == ["save_weight_subset"]


@pytest.mark.parametrize("path", ["minigemini/train/lora.py", "minigemini/train/saving.py", "minigemini/train/tiny_base.py"])
def test_weight_writers_use_save_weight_subset(path: str) -> None:
    calls = [n for n in ast.walk(sources()[path]) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
             and n.func.id == "save_weight_subset"]
    assert calls, f"{path} writes weights without save_weight_subset"


def test_tokenizers_are_trained_in_one_module() -> None:
    """Tokenizer training (the `tokenizers` library's trainers) lives in minigemini/data/tokenizer.py only."""
    users = sorted(path for path, tree in sources().items() for node in ast.walk(tree)
                   if isinstance(node, ast.Attribute) and node.attr.endswith("Trainer")
                   and isinstance(node.value, ast.Name) and node.value.id == "trainers")
    assert set(users) == {"minigemini/data/tokenizer.py"}, users
