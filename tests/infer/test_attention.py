"""`minigemini.infer.attention`: mining maps from the answering pass, overlays, `chat --save-attention`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from minigemini.infer.attention import answer_with_attention, record
from minigemini.infer.chat import ChatSession
from minigemini.infer.generate import GenerationOptions, Generator

OPTIONS = GenerationOptions(max_new_tokens=6)


def direct_weights(generator: Generator, images) -> np.ndarray:
    """Independent computation: the mining module called on the towers' outputs for these images."""
    model = generator.model
    batch = generator.processor.preprocess_images(images)
    with torch.no_grad():
        lr = model.encode_lr(batch["images"])
        hr = model.hr_windows(model.vision_hr(batch["images_aux"]))
        b, c, h, w = hr.shape
        grid = int(lr.shape[1] ** 0.5)
        cells = hr.reshape(b, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 3, 5, 1)
        k = model.mining.key(cells.reshape(b, grid * grid, -1, c))  # LN + Linear on every HR cell
        q = model.mining.query(lr)
        scores = (k @ q.unsqueeze(-1)).squeeze(-1) / k.shape[-1] ** 0.5
    return scores.softmax(-1).numpy()


def test_answer_with_attention_returns_the_answer_and_that_pass_maps(generator, image_files):
    answer, maps = answer_with_attention(generator, "What is it?", image_files, OPTIONS)
    plain = generator.generate([generator.question_prompt("<image>\n<image>\nWhat is it?")], [image_files], OPTIONS)[0]
    assert answer == plain
    assert len(maps) == 2 and all(list(m.views) == ["main"] for m in maps)
    expected = direct_weights(generator, image_files)
    for k, entry in enumerate(maps):
        view = entry.views["main"]
        assert view.weights.shape == (16, 64) and (view.grid, view.cells) == (4, 8)
        np.testing.assert_allclose(view.weights, expected[k], rtol=0, atol=1e-5)
        np.testing.assert_allclose(view.weights.sum(-1), 1.0, atol=1e-5)
        full = view.hr_map()
        assert full.shape == (32, 32)
        np.testing.assert_allclose(full[8:16, 16:24].ravel(), view.weights[6], rtol=0, atol=0)  # token 6 = (1, 2)
        one = view.hr_map(token=6)
        assert one.sum() == pytest.approx(1.0, abs=1e-5) and one[8:16, 16:24].sum() == pytest.approx(1.0, abs=1e-5)
        assert view.hr_image.size == (128, 128) and view.lr_image.size == (56, 56)
        assert view.overlay().size == view.overlay(token=3).size == (2 * 128 + 8, 128)
        assert view.overlay(side=200).size == (2 * 200 + 8, 200)
        with pytest.raises(ValueError, match="out of range"):
            view.hr_map(token=16)


def test_hd_crops_are_joined_into_one_map_over_the_image(tiny_processor, image_files):
    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor

    cfg = MiniGeminiConfig.tiny(hd=True)
    processor = MiniGeminiProcessor(tiny_processor.tokenizer, cfg)
    torch.manual_seed(0)
    generator = Generator(MiniGeminiForCausalLM(cfg).eval(), processor)
    with record(generator.model) as recorder:
        generator.generate([generator.question_prompt("<image>\nHi")], [[image_files[1]]], OPTIONS)
    raw = recorder.weights.numpy()  # [4 crops + 1 global, 16, 64]
    _, maps = answer_with_attention(generator, "Hi", [image_files[1]], OPTIONS)
    grid, glob = maps[0].views["grid"], maps[0].views["global"]
    assert grid.weights.shape == (64, 64) and grid.hr_map().shape == (64, 64)
    crop_maps = [raw[c].reshape(4, 4, 8, 8).transpose(0, 2, 1, 3).reshape(32, 32) for c in range(4)]
    np.testing.assert_allclose(grid.hr_map(), np.block([crop_maps[:2], crop_maps[2:]]), rtol=0, atol=0)
    np.testing.assert_allclose(glob.weights, raw[4], rtol=0, atol=0)
    assert grid.lr_image.size == (112, 112) and glob.lr_image.size == (56, 56) and grid.hr_image.size == (256, 256)


def test_session_keeps_maps_and_redo_gives_the_same_greedy_turn(generator, image_files):
    session = ChatSession(generator, [image_files[0]], OPTIONS, keep_attention=True)
    first = session.ask("What is it?")
    maps = session.attention
    assert len(maps) == 1
    np.testing.assert_allclose(maps[0].views["main"].weights, direct_weights(generator, image_files[:1])[0], atol=1e-5)
    assert session.undo() == "What is it?"
    assert session.messages == [] and session.pending == [image_files[0]] and session.images == []
    assert "".join(session.ask_stream("What is it?")) == first == session.messages[-1]["content"]
    assert session.attention is not None and session.turn == 1
    with pytest.raises(ValueError, match="no answer to redo"):
        ChatSession(generator).undo()


def test_chat_cli_saves_attention(tiny_model_dir, image_files, tmp_path, capsys):
    from minigemini.cli import main

    out = tmp_path / "att"
    assert main(["chat", "--model", str(tiny_model_dir), "--image", str(image_files[0]), "--prompt", "Hi?",
                 "--max-new-tokens", "4", "--device", "cpu", "--save-attention", str(out)]) == 0
    assert "attention maps saved" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["turn1.safetensors", "turn1_img0_main.npy",
                                                     "turn1_img0_main.png"]
    weights = np.load(out / "turn1_img0_main.npy")
    assert weights.shape == (16, 8, 8)
    np.testing.assert_array_equal(load_file(str(out / "turn1.safetensors"))["img0_main"], weights)
    np.testing.assert_allclose(weights.sum((1, 2)), 1.0, atol=1e-5)
