"""`minigemini chat`: single-shot CLI (deterministic), multi-turn sessions, the interactive loop."""

from __future__ import annotations

import builtins
import subprocess
import sys
from pathlib import Path

import pytest

from minigemini.infer.chat import ChatSession
from minigemini.infer.generate import GenerationOptions, Generator

ROOT = Path(__file__).resolve().parents[2]
CLI = ROOT / ".venv" / "bin" / "minigemini"


def test_single_shot_cli_is_deterministic(tiny_model_dir, image_files, capsys):
    from minigemini.cli import main

    argv = ["chat", "--model", str(tiny_model_dir), "--image", str(image_files[0]), "--prompt",
            "What is in the picture?", "--max-new-tokens", "8", "--device", "cpu"]
    exe = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "minigemini.cli"]
    proc = subprocess.run(exe + argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert main(argv) == 0  # same command in this process: same greedy answer
    in_process = capsys.readouterr().out
    assert proc.stdout == in_process
    generator = Generator.from_pretrained(tiny_model_dir, device="cpu")
    prompt = generator.question_prompt("<image>\nWhat is in the picture?")
    expected = generator.generate([prompt], [[image_files[0]]], GenerationOptions(max_new_tokens=8))[0]
    assert proc.stdout == expected + "\n"


def test_template_comes_from_the_config_not_the_folder_name(tiny_model, tiny_processor, tmp_path):
    folder = tmp_path / "llava-vicuna-llama3-chatml"  # a misleading name must not matter
    tiny_processor.config.template = "mistral_instruct"
    tiny_model.config.template = "mistral_instruct"
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    generator = Generator.from_pretrained(folder, device="cpu")
    assert generator.template_name == "mistral_instruct"
    assert "[INST]" in generator.question_prompt("hi")


def test_multi_turn_session_keeps_history_and_images(generator, image_files):
    session = ChatSession(generator, [image_files[0]], GenerationOptions(max_new_tokens=5))
    first = session.ask("What is it?")
    assert session.images == [image_files[0]] and not session.pending
    assert session.messages[0]["content"].startswith("<image>\nWhat is it?")
    session.add_image(image_files[1])
    second = session.ask("And <image> this one?")
    assert [m["role"] for m in session.messages] == ["user", "assistant"] * 2
    assert session.messages[1]["content"] == first and session.messages[3]["content"] == second
    assert session.images == image_files
    prompt = generator.chat_prompt(session.messages[:3])
    assert prompt.count("<image>") == 2 and first in prompt
    with pytest.raises(ValueError, match="placeholders"):
        session.ask("<image> <image> two placeholders but no new image")
    with pytest.raises(FileNotFoundError):
        session.add_image(image_files[0].parent / "missing.png")
    session.reset()
    assert session.messages == [] and session.images == []


def test_interactive_loop_streams_answers(generator, image_files, monkeypatch, capsys):
    from minigemini.infer.chat import interactive

    lines = iter([f"/image {image_files[0]}", "Describe it.", "/bogus", "/reset", "Hello", "/quit"])
    monkeypatch.setattr(builtins, "input", lambda prompt="": next(lines))
    options = GenerationOptions(max_new_tokens=6)
    session = ChatSession(generator, options=options)
    assert interactive(session) == 0
    out = capsys.readouterr().out
    expected = generator.generate([generator.question_prompt("<image>\nDescribe it.")], [[image_files[0]]],
                                  options)[0]
    assert out.count("ASSISTANT: ") == 2
    assert f"ASSISTANT: {expected}" in out
    assert session.messages[0]["content"] == "Hello"  # /reset dropped the first exchange and its image
