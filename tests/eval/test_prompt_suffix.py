"""Every benchmark's prompt suffix: MGM's eval-script default, and `prompt_suffix` replacing it."""

from __future__ import annotations

import pytest

from minigemini.eval.benchmarks import BENCHMARKS
from minigemini.eval.benchmarks.gqa import GQA
from minigemini.eval.benchmarks.mathvista import MathVista
from minigemini.eval.benchmarks.mmbench import MMBench
from minigemini.eval.benchmarks.mme import MME
from minigemini.eval.benchmarks.mmmu import MMMU
from minigemini.eval.benchmarks.mmvet import MMVet
from minigemini.eval.benchmarks.pope import POPE
from minigemini.eval.benchmarks.scienceqa import ScienceQA
from minigemini.eval.benchmarks.textvqa import TextVQA
from minigemini.eval.benchmarks.vqav2 import VQAv2

from .conftest import write_json
from .test_mathvista import mv_dir  # noqa: F401  (fixture)
from .test_mme import mme_dir  # noqa: F401  (fixture)
from .test_mmbench import make_mmbench
from .test_mmmu import SAMPLES as MMMU_SAMPLES
from .test_mmvet import mmvet_dir  # noqa: F401  (fixture)
from .test_pope import make_pope
from .test_scienceqa import sqa_dir  # noqa: F401  (fixture)
from .test_textvqa import make_textvqa
from .test_vqav2 import vqa_dir  # noqa: F401  (fixture)

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."


def test_defaults_are_mgm_eval_script_suffixes():
    expected = {"textvqa": SHORT, "vqav2": SHORT, "gqa": SHORT, "pope": SHORT, "mme": SHORT,
                "scienceqa": LETTER, "mmbench": LETTER, "mathvista": "", "mmvet": "", "mmmu": ""}
    assert {k: BENCHMARKS[k].DEFAULT_PROMPT_SUFFIX for k in expected} == expected  # mmmu: two, in its config


def check(bench_cls, root, default: str, **kw) -> None:
    first = bench_cls(root, **kw).items()[0].prompt
    assert first.endswith(f"\n{default}") if default else not first.endswith("\n")
    custom = bench_cls(root, prompt_suffix="Reply briefly.", **kw).items()[0].prompt
    stem = first[: -len(default) - 1] if default else first
    assert custom == f"{stem}\nReply briefly."
    assert bench_cls(root, prompt_suffix="", **kw).items()[0].prompt == stem


def test_question_file_benchmarks(tmp_path, vqa_dir, mme_dir, sqa_dir):  # noqa: F811
    check(TextVQA, make_textvqa(tmp_path), SHORT)  # the question file's own instruction line replaced
    check(TextVQA, make_textvqa(tmp_path / "b", with_llava_file=False), SHORT)
    check(POPE, make_pope(tmp_path / "p")[0], SHORT)
    check(POPE, make_pope(tmp_path / "q", with_llava=False)[0], SHORT)
    check(VQAv2, vqa_dir, SHORT)
    check(MME, mme_dir, SHORT)
    check(ScienceQA, sqa_dir, LETTER)
    check(MMBench, make_mmbench(tmp_path), LETTER, image_cache_dir=str(tmp_path / "cache"))
    root = tmp_path / "gqa"
    write_json(root / "testdev_balanced_questions.json",
               {"q1": {"imageId": "n1", "question": "Is it red?", "answer": "yes", "isBalanced": True}})
    check(GQA, root, SHORT)


def test_benchmarks_without_default_suffix(mv_dir, mmvet_dir):  # noqa: F811
    check(MathVista, mv_dir, "")
    check(MMVet, mmvet_dir, "")


def test_mmmu_suffix_replaces_both_instructions(tmp_path):
    root = tmp_path / "mmmu"
    write_json(root / "validation.json", MMMU_SAMPLES)
    mc, open_q = MMMU(root).items()[:2]
    assert mc.prompt.endswith(f"(D) 6\n\n{LETTER}") and open_q.prompt.endswith(f"Q?\n{SHORT}")
    mc, open_q = MMMU(root, prompt_suffix="Think.").items()[:2]
    assert mc.prompt.endswith("(D) 6\n\nThink.") and open_q.prompt.endswith("Q?\nThink.")


def test_unknown_option_lists_prompt_suffix(tmp_path):
    with pytest.raises(TypeError, match="valid options: .*prompt_suffix"):
        TextVQA(make_textvqa(tmp_path), suffix="x")
