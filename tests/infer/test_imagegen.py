"""Any-to-any: `<h>...</h>` extraction and a tiny random diffusers pipeline built from configs (no download)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from minigemini.infer.imagegen import (ImageGenerator, add_generation_request, extract_image_prompts,
                                       has_unclosed_marker, images_for_answer)

needs_diffusers = pytest.mark.skipif(importlib.util.find_spec("diffusers") is None,
                                     reason="diffusers (optional extra 'gen': pip install 'minigemini[gen]') "
                                            "is not installed")


@pytest.fixture(scope="module")
def image_generator(tiny_pipeline_dir: Path) -> ImageGenerator:
    return ImageGenerator.from_pretrained(tiny_pipeline_dir, device="cpu", dtype="float32", height=24, width=40,
                                          num_inference_steps=2)


def test_extract_image_prompts():
    assert extract_image_prompts("Sure! <h>a red cube on a table</h> Enjoy.") == ["a red cube on a table"]
    assert extract_image_prompts("no markers at all") == []
    assert extract_image_prompts("<h>one</h> and <h> two \n lines </h><h>  </h>") == ["one", "two \n lines"]
    assert extract_image_prompts("[img]a cat[/img]", markers=("[img]", "[/img]")) == ["a cat"]
    assert extract_image_prompts("<h>cut short by max_new_tokens") == []
    assert has_unclosed_marker("<h>cut short") and not has_unclosed_marker("<h>done</h>")
    with pytest.raises(ValueError, match="markers"):
        extract_image_prompts("x", markers=("<h>", ""))


def test_generation_request_trigger():
    assert add_generation_request("Draw a cat.") == "Draw a cat. <GEN>"
    assert add_generation_request("Draw a cat. <GEN>") == "Draw a cat. <GEN>"
    assert add_generation_request("Draw", trigger="") == "Draw"


@needs_diffusers
def test_tiny_pipeline_draws_image_of_requested_size(image_generator, tmp_path):
    images = image_generator(["a red cube"])
    assert len(images) == 1 and images[0].size == (40, 24)
    seen: list[str] = []

    def spy(prompt, **kwargs):
        seen.append(prompt)
        return image_generator.pipeline(prompt, **kwargs)

    drawing = ImageGenerator(spy, height=24, width=40, num_inference_steps=2)
    record = images_for_answer("Here it is: <h>a red cube</h> and <h>a blue ball</h>", drawing, tmp_path,
                               stem="answer")
    assert record["image_prompts"] == seen == ["a red cube", "a blue ball"]  # the pipeline got the extracted text
    assert [Path(p).name for p in record["images"]] == ["answer_0.png", "answer_1.png"]
    from PIL import Image

    assert Image.open(record["images"][0]).size == (40, 24)
    saved = json.loads((tmp_path / "answer.json").read_text())
    assert saved["answer"].startswith("Here it is") and saved["images"] == record["images"]
    none = images_for_answer("plain text answer", image_generator, tmp_path / "none")
    assert none["images"] == [] and none["image_prompts"] == []


@needs_diffusers
def test_chat_session_generates_images_beside_the_answer(image_generator, tmp_path):
    from minigemini.infer.chat import ChatSession

    class StubGenerator:  # stands in for the LLM: a random tiny LLM never writes <h>...</h>
        def __init__(self) -> None:
            from minigemini import MiniGeminiConfig

            self.processor = type("P", (), {"config": MiniGeminiConfig.tiny()})()
            self.prompts: list[list[dict]] = []

        def chat_prompt(self, messages):
            self.prompts.append(list(messages))
            return "prompt"

        def generate(self, prompts, images, options):
            return ["Of course. <h>a small green house under a blue sky</h>"]

    stub = StubGenerator()
    session = ChatSession(stub, image_generator=image_generator, image_out=tmp_path / "out")
    answer = session.ask("Draw me a house.")
    assert stub.prompts[0][-1]["content"] == "Draw me a house. <GEN>"  # MGM's generation trigger
    record = session.draw(answer)
    assert record["image_prompts"] == ["a small green house under a blue sky"]
    assert Path(record["images"][0]).is_file() and (tmp_path / "out" / "turn1.json").is_file()


@needs_diffusers
def test_missing_pipeline_reports_what_to_do(tmp_path):
    from minigemini.infer.imagegen import load_diffusion_pipeline

    with pytest.raises(OSError, match="--diffusion-model"):
        load_diffusion_pipeline(tmp_path / "nope", device="cpu")


@needs_diffusers
def test_chat_cli_with_generate_images(tiny_model_dir, tiny_pipeline_dir, tmp_path, capsys):
    from minigemini.cli import main

    out = tmp_path / "gen"
    assert main(["chat", "--model", str(tiny_model_dir), "--prompt", "Draw a cat.", "--max-new-tokens", "4",
                 "--device", "cpu", "--generate-images", "--diffusion-model", str(tiny_pipeline_dir),
                 "--image-out", str(out), "--gen-height", "24", "--gen-width", "40", "--gen-steps", "2"]) == 0
    captured = capsys.readouterr()
    record = json.loads((out / "turn1.json").read_text())
    assert record["answer"] + "\n" == captured.out  # the random LLM writes no <h>...</h>: answer kept, no image
    assert record["images"] == [] and "no image description" in captured.err


def test_generation_instruction_record_is_an_ordinary_conversation(tiny_processor):
    """Training side: a text -> `<h>prompt</h>` record goes through the normal template + masking."""
    from minigemini.data.templates import tokenize_conversation

    record = {"id": "gen-0", "conversations": [
        {"from": "human", "value": "Show me a cosy cabin in a snowy forest. <GEN>"},
        {"from": "gpt", "value": "Here you go. <h>a cosy wooden cabin in a snowy pine forest, warm light</h>"}]}
    ids, labels = tokenize_conversation(record["conversations"], "vicuna_v1", tiny_processor, sample_id="gen-0")
    answer = tiny_processor.decode([i for i, lab in zip(ids, labels) if lab != -100])
    assert extract_image_prompts(answer) == ["a cosy wooden cabin in a snowy pine forest, warm light"]
