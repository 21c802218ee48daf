"""docs/training.md "Fine-tune on your own data", run line by line through the real CLI (issue 15).

The commands are read from the doc's bash block, not copied here, so the doc cannot drift from what is
tested. They run in a temporary folder laid out as the doc says (my_data/ with a CSV and PNGs, models/base
= a tiny random-init minigemini model folder, configs/ = the repository's); the `train` lines get only the
overrides the doc lists for a tiny, fast run.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from minigemini.cli import main

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "training.md"
SECTION = "## Fine-tune on your own data"
COLOURS = {"red": (220, 30, 30), "blue": (30, 40, 220), "green": (30, 190, 40), "yellow": (230, 220, 40)}
QUESTION = "What colour is this picture?"
VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")


def doc_section() -> str:
    text = DOC.read_text()
    assert text.count(SECTION) == 1, f"{DOC}: expected one '{SECTION}' heading"
    return text.split(SECTION, 1)[1].split("\n## ", 1)[0]


def walkthrough_commands() -> list[list[str]]:
    """Every `minigemini ...` line of the section's bash block (backslash continuations joined)."""
    block = re.search(r"```bash\n(.*?)```", doc_section(), re.DOTALL).group(1).replace("\\\n", " ")
    return [shlex.split(line) for line in block.splitlines() if line.startswith("minigemini ")]


def fast_overrides() -> list[str]:
    """The tiny-run overrides the doc lists (after 'adding to each `train` line'), as they are written there."""
    text = doc_section().split("adding to each `train` line", 1)[1]
    return shlex.split(re.search(r"`(deepspeed\.config=null[^`]*)`", text, re.DOTALL).group(1))


def make_user_files(root: Path) -> None:
    """my_data/{train,test}.csv + images (test images differ in size and shade), models/base, configs/."""
    from PIL import Image

    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor
    from minigemini.data.tokenizer import tiny_tokenizer

    for sub in ("images", "held_out"):
        (root / "my_data" / sub).mkdir(parents=True)
    for name, rgb in COLOURS.items():
        Image.new("RGB", (64, 48), rgb).save(root / "my_data" / "images" / f"{name}.png")
        Image.new("RGB", (40, 72), tuple(max(0, c - 25) for c in rgb)).save(root / "my_data" / "held_out" / f"{name}.png")
    with open(root / "my_data" / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image", "question", "answer"],
                                 *[[f"images/{n}.png", QUESTION, n] for n in COLOURS]])
    with open(root / "my_data" / "test.csv", "w", newline="") as f:
        csv.writer(f).writerows([["id", "image", "question", "answer"],
                                 *[[f"q{i}", f"held_out/{n}.png", QUESTION, n] for i, n in enumerate(COLOURS, 1)]])
    tokenizer = tiny_tokenizer("vicuna", texts=[QUESTION, *COLOURS])
    processor = MiniGeminiProcessor(tokenizer, MiniGeminiConfig.tiny(vocab_size=len(tokenizer)))
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(processor.config)
    model.save_pretrained(root / "models" / "base")
    processor.save_pretrained(root / "models" / "base")
    (root / "configs").symlink_to(REPO / "configs")


def run(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """One walkthrough line through `minigemini.cli.main`; must exit 0; returns its stdout."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, f"`minigemini {shlex.join(argv)}` exited {code}:\n{out}\n{err}"
    return out


def hand_exact_match(test_csv: Path, predictions: Path) -> float:
    """Exact match in percent, computed here from the files (case, whitespace, final period ignored)."""
    with open(test_csv, newline="") as f:
        answers = {row["id"]: row["answer"] for row in csv.DictReader(f)}
    said = {str(r["question_id"]): r["text"] for r in map(json.loads, predictions.read_text().splitlines())}
    assert set(said) == set(answers)
    norm = lambda s: " ".join(s.lower().split()).rstrip(".").strip()
    return 100.0 * sum(norm(said[q]) == norm(a) for q, a in answers.items()) / len(answers)


@pytest.fixture()
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    make_user_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    torch.set_num_threads(before)


def test_doc_lists_the_whole_walkthrough() -> None:
    steps = [argv[1:3] if argv[1] == "prep" else argv[1:2] for argv in walkthrough_commands()]
    assert steps == [["prep", "convert"], ["prep", "validate"], ["prep", "render"], ["train"], ["train"],
                     ["merge-lora"], ["eval"], ["chat"]]
    assert "training.max_steps=20" in fast_overrides()


def test_walkthrough_runs_as_documented(user_dir: Path, capsys: pytest.CaptureFixture) -> None:
    convert, validate, render, train_full, train_lora, merge, evaluate, chat = (
        argv[1:] for argv in walkthrough_commands())  # the doc's lines without the program name

    out = run(capsys, convert)
    records = json.loads((user_dir / "data/mine/train.json").read_text())
    assert "wrote 4 records" in out and [r["conversations"][1]["value"] for r in records] == list(COLOURS)
    assert all((user_dir / "data/mine" / r["image"]).resolve().is_file() for r in records)

    assert "checked 4 records: 4 good, 0 with problems" in run(capsys, validate)
    assert run(capsys, render) == f"{VICUNA} USER: <image>\n{QUESTION} ASSISTANT: red</s>\n"  # the folder's template

    printed = yaml.safe_load(run(capsys, train_full + ["--print-config"]))  # what the doc says to check
    assert printed["model"]["init_from"] == "models/base" and printed["data"]["template"] == "vicuna_v1"
    assert printed["data"]["train"] == ["data/mine/train.json"] and "llm" not in printed["model"]
    for run_dir, argv in (("runs/mine", train_full), ("runs/mine-lora", train_lora)):
        run(capsys, argv + fast_overrides())
        saved = json.loads((user_dir / run_dir / "run_info.json").read_text())["model_sources"]
        assert Path(saved["init_from"]).resolve() == (user_dir / "models/base").resolve()  # recorded absolute
    base = load_file(user_dir / "models/base/model.safetensors")
    tuned = load_file(user_dir / "runs/mine/model.safetensors")
    changed = {k.split(".")[0] for k in base if not torch.equal(base[k], tuned[k])}
    assert changed == {"language_model", "mining", "projector"}  # stage 2: towers stay frozen
    adapter = json.loads((user_dir / "runs/mine-lora/adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == (user_dir / "models/base").resolve()
    assert main(["chat", "--model", "runs/mine-lora", "--prompt", QUESTION]) == 2  # an adapter is not a model
    assert "`minigemini merge-lora runs/mine-lora OUT_DIR`" in capsys.readouterr().err

    run(capsys, merge)
    assert (user_dir / "runs/mine-lora-merged/model.safetensors").is_file()

    run(capsys, evaluate)
    results = json.loads((user_dir / "results/mine/results.json").read_text())
    expected = hand_exact_match(user_dir / "my_data/test.csv", user_dir / "results/mine/predictions.jsonl")
    assert results["metric"] == "exact_match" and results["num_questions"] == 4
    assert results["exact_match"] == pytest.approx(expected)

    out = run(capsys, chat + ["--max-new-tokens", "8"]).strip()  # one answer, printed alone
    assert out and len(out.splitlines()) == 1


def test_render_without_template_needs_a_model_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from minigemini.data.tokenizer import tiny_tokenizer

    tiny_tokenizer("vicuna").save_pretrained(tmp_path / "tok")
    data = tmp_path / "train.json"
    data.write_text(json.dumps([{"id": "a", "conversations": [{"from": "human", "value": "Hi"},
                                                              {"from": "gpt", "value": "Hello"}]}]))
    assert main(["prep", "render", str(data), "--tokenizer", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert "plain tokenizer folder" in err and "--template NAME" in err


def test_qlora_with_init_from_is_an_error_not_an_unquantized_run(tmp_path: Path) -> None:
    """QLoRA quantizes the LLM while loading it from model.llm; an init_from folder would load unquantized."""
    from minigemini.config import ModelConfig
    from minigemini.model.builder import build_model_and_processor

    spec = ModelConfig(init_from=str(tmp_path / "base"))
    spec.llm_load_kwargs = {"quantization_config": "4-bit"}  # what train.lora.qlora_load_kwargs gives for lora.bits=4
    with pytest.raises(ValueError, match=r"init_from .* cannot be loaded quantized for QLoRA \(lora.bits=4/8\)"):
        build_model_and_processor(spec)
