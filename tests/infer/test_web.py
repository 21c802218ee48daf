"""`minigemini web`: the page's handlers called directly (the browser test drives the real page)."""

from __future__ import annotations

import os

import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio", reason="gradio (optional extra 'web') is not installed")

from minigemini.infer.generate import GenerationOptions, Generator  # noqa: E402
from minigemini.infer.web import WebApp, WebChat, build_page, load_image_generator  # noqa: E402

SETTINGS = (0.0, 1.0, 6)  # greedy, top-p off, 6 new tokens
STATE, CHATBOT, STATUS, MESSAGE, UPLOADS, CHOICE, TOKEN, OVERLAY, CAPTION = range(9)


def last(outputs):
    return list(outputs)[-1]


@pytest.fixture()
def app(generator, tmp_path):
    return WebApp(generator, "tiny", files_dir=tmp_path / "files")


def test_info_names_template_and_variant(app, tiny_processor):
    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor

    assert "template `vicuna_v1`" in app.info() and "variant **normal**" in app.info()
    assert "16 visual tokens per image" in app.info()
    cfg = MiniGeminiConfig.tiny(hd=True)
    hd = WebApp(Generator(MiniGeminiForCausalLM(cfg), MiniGeminiProcessor(tiny_processor.tokenizer, cfg)))
    assert "variant **HD (2x2 crops + global view)**" in hd.info() and "80 visual tokens" in hd.info()
    build_page(app)  # the page builds (no server started)


def test_answer_streams_and_equals_the_chat_answer(app, generator, image_files):
    outputs = list(app.send(None, "What is it?", [str(image_files[0])], *SETTINGS))
    assert len(outputs) >= 2 and outputs[0][STATUS] == "Generating…"
    final = outputs[-1]
    chat = final[STATE]
    prompt = generator.question_prompt("<image>\nWhat is it?")
    expected = generator.generate([prompt], [[image_files[0]]], GenerationOptions(max_new_tokens=6))[0]
    assert final[CHATBOT] == [{"role": "user", "content": {"path": str(image_files[0])}},
                              {"role": "user", "content": "What is it?"},
                              {"role": "assistant", "content": expected}]
    assert final[STATUS] == "Done." and final[MESSAGE] == "" and final[UPLOADS] is None
    assert final[CHOICE]["choices"] == ["image 1 · main"] and final[CHOICE]["value"] == "image 1 · main"
    assert final[TOKEN]["maximum"] == 15
    assert isinstance(final[OVERLAY], Image.Image) and "every LR token" in final[CAPTION]
    image, caption = app.attention_view(chat, "image 1 · main", 5)
    assert image.size == (2 * 384 + 8, 384) and "LR token 5 (row 1, column 1)" in caption
    assert app.attention_view(chat, "image 1 · main", 16)[1].startswith("⚠️ This view has 16 LR tokens")

    again = last(app.regenerate(chat, *SETTINGS))
    assert again[CHATBOT] == final[CHATBOT] and chat.session.turn == 1  # greedy: the same turn again
    second = last(app.send(chat, "And now?", None, *SETTINGS))
    assert len(second[CHATBOT]) == 5 and chat.session.images == [str(image_files[0])]
    cleared = app.clear(chat)
    assert cleared[CHATBOT] == [] and chat.session.messages == [] and cleared[STATUS] == "Conversation cleared."


def test_bad_input_gets_a_message_not_a_traceback(app, image_files, tmp_path):
    empty = last(app.send(None, "   ", [str(image_files[0])], *SETTINGS))
    assert empty[STATUS] == "⚠️ Type a question first (the message box is empty)."
    assert empty[STATE].session.pending == [] and empty[CHATBOT] == []

    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image at all")
    out = last(app.send(None, "What is it?", [str(image_files[0]), str(text_file)], *SETTINGS))
    assert out[STATUS].startswith("⚠️ Cannot use notes.png: it is not an image this model can read "
                                  "(UnidentifiedImageError")
    assert out[STATE].session.pending == [] and out[CHATBOT] == []  # nothing attached, nothing asked

    truncated = tmp_path / "cut.png"
    truncated.write_bytes(image_files[1].read_bytes()[:60])  # a PNG header, then nothing
    out = last(app.send(None, "What is it?", [str(truncated)], *SETTINGS))
    assert out[STATUS].startswith("⚠️ Cannot use cut.png: it is not an image this model can read (")
    assert "Traceback" not in out[STATUS]

    assert last(app.regenerate(None, *SETTINGS))[STATUS] == "⚠️ Nothing to regenerate yet: ask a question first."
    assert app.attention_view(None, None, -1)[0] is None


def test_a_pipeline_that_does_not_load_is_reported_in_the_page(generator, tmp_path):
    image_generator, error = load_image_generator(str(tmp_path / "no-such-pipeline"), "cpu", "float32")
    assert image_generator is None
    assert error.startswith(f"the pipeline {str(tmp_path / 'no-such-pipeline')!r} could not be loaded (")
    app = WebApp(generator, "tiny", imagegen_error=error)
    assert f"⚠️ Image generation is off: {error}" in app.info()
    assert load_image_generator(None, "cpu", "float32") == (None, None)


def test_generated_image_and_its_prompt_appear_in_the_chat(generator, tiny_pipeline_dir, tmp_path):
    from minigemini.infer.imagegen import ImageGenerator

    draw = ImageGenerator.from_pretrained(tiny_pipeline_dir, device="cpu", dtype="float32", height=24, width=40,
                                          num_inference_steps=2)
    app = WebApp(generator, "tiny", image_generator=draw, files_dir=tmp_path)
    assert "Image generation is on" in app.info()
    chat = WebChat(app)
    out = last(app.send(chat, "Draw a red fox.", None, *SETTINGS))
    assert chat.session.messages[0]["content"] == "Draw a red fox. <GEN>"  # the generation trigger is sent
    assert out[STATUS] == "Done (the answer holds no image prompt, so nothing was drawn)."  # random model
    chat.session.messages[-1]["content"] = "Here. <h>a red fox in snow</h>"  # as a trained model answers
    status = app._draw(chat)
    assert status == "Done: drew 1 image(s)."
    assert chat.display[-2] == {"role": "assistant", "content": "Image prompt: a red fox in snow"}
    path = chat.display[-1]["content"]["path"]
    assert path.startswith(str(tmp_path)) and Image.open(path).size == (40, 24)


def test_lr_only_model_chats_and_says_why_there_is_no_map(tiny_processor, image_files, tmp_path):
    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor

    cfg = MiniGeminiConfig.tiny(use_hr=False)
    torch_model = MiniGeminiForCausalLM(cfg).eval()
    app = WebApp(Generator(torch_model, MiniGeminiProcessor(tiny_processor.tokenizer, cfg)), files_dir=tmp_path)
    assert "LR only (no HR branch)" in app.info()
    out = last(app.send(None, "What is it?", [str(image_files[0])], *SETTINGS))
    assert out[STATUS] == "Done." and out[CHOICE]["choices"] == [] and out[OVERLAY] is None
    assert out[CAPTION] == "This model has no HR branch (LR only), so there is no patch-info-mining attention."


def test_hd_model_with_two_images_offers_grid_and_global_views(tiny_processor, image_files, tmp_path):
    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor

    cfg = MiniGeminiConfig.tiny(hd=True)
    torch_model = MiniGeminiForCausalLM(cfg).eval()
    app = WebApp(Generator(torch_model, MiniGeminiProcessor(tiny_processor.tokenizer, cfg)), files_dir=tmp_path)
    out = last(app.send(None, "Which is brighter?", [str(p) for p in image_files], *SETTINGS))
    assert out[STATUS] == "Done."
    assert out[CHOICE]["choices"] == ["image 1 · grid", "image 1 · global", "image 2 · grid", "image 2 · global"]
    assert out[CHOICE]["value"] == "image 2 · grid" and out[TOKEN]["maximum"] == 63  # 2x2 crops of 4x4 tokens
    image, caption = app.attention_view(out[STATE], "image 1 · global", 15)
    assert image.size == (2 * 384 + 8, 384) and "Image 1, global view" in caption and "8x8 HR cells" in caption
