"""The CLI starts fast: building the parser (`minigemini --help`, any `prep` command) loads no torch,
transformers or numpy; lazily registered subcommands still parse and document their options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from minigemini.cli import build_parser, main

HEAVY = ("torch", "transformers", "numpy", "datasets", "PIL")
PROBE = """
import sys
sys.argv[0] = "/venv/bin/minigemini"  # as the console script runs (a plain `import minigemini` registers the
from minigemini.cli import build_parser  # Auto classes, which loads torch: tested in tests/model/test_hf_integration.py)
parser = build_parser()
{extra}
print(sorted(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded_after(extra: str = "") -> str:
    code = PROBE.format(extra=extra, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_parser_imports_no_heavy_module():
    assert _loaded_after() == "[]"
    # parsing a prep command line (before it runs) stays light too
    assert _loaded_after("parser.parse_args(['prep', 'convert', 'a.csv', 'b.json'])") == "[]"


def test_lazy_prep_subcommands_parse_and_document(capsys):
    assert _loaded_after("parser.parse_args(['prep', 'synthetic', 'out'])") == "['PIL', 'numpy']"
    with pytest.raises(SystemExit):
        main(["prep", "cache-features", "--help"])
    out = capsys.readouterr().out
    assert "usage: " in out and "--model MODEL" in out and "--image-folder" in out
    args = build_parser().parse_args(["prep", "synthetic", "out", "--num-train", "3"])
    assert args.num_train == 3 and args.func.__module__ == "minigemini.data.synthetic"


def test_auto_classes_registered_by_the_model_modules():
    code = ("from transformers import AutoConfig, AutoModelForCausalLM\n"
            "import minigemini.model.modeling as m\n"
            "from minigemini import MiniGeminiConfig\n"
            "cfg = AutoConfig.for_model('minigemini')\n"
            "print(type(cfg) is MiniGeminiConfig, AutoModelForCausalLM._model_mapping[MiniGeminiConfig] is "
            "m.MiniGeminiForCausalLM)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "True True", proc.stderr[-2000:]
