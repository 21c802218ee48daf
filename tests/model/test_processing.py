"""Processor: image-token expansion, MGM-equivalent ids and pixels, image modes, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from minigemini import MiniGeminiConfig, MiniGeminiProcessor
from minigemini.model.convert import convert_mgm_config
from minigemini.model.processing import load_image

from .mgm_inputs import expand_mgm_inputs

MGM_TINY_A = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "mgm_reference" / "tiny_a"

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")


def _fixture_processor(sp_tokenizer) -> MiniGeminiProcessor:
    cfg = convert_mgm_config(json.loads((MGM_TINY_A / "config.json").read_text()))
    return MiniGeminiProcessor(sp_tokenizer, cfg)


def test_image_placeholder_expands_to_n_ids(tiny_processor) -> None:
    ids = tiny_processor.tokenize("look <image> and <image> now", add_bos=True)
    n = tiny_processor.num_image_tokens
    assert ids[0] == tiny_processor.tokenizer.bos_token_id
    assert ids.count(tiny_processor.image_token_id) == 2 * n == 32
    first = ids.index(tiny_processor.image_token_id)
    assert ids[first:first + n] == [tiny_processor.image_token_id] * n


def test_prompt_ids_match_official_mgm_tokenization(sp_tokenizer) -> None:
    proc = _fixture_processor(sp_tokenizer)
    inputs = load_file(str(MGM_TINY_A / "inputs.safetensors"))
    ids, _, _ = expand_mgm_inputs(inputs["input_ids"], inputs["attention_mask"], inputs["labels"],
                                  proc.image_token_id, proc.num_image_tokens)
    prompt = f"{SYSTEM} USER: <image>\nWhat is shown in this image? ASSISTANT:"
    ours = proc.tokenize(prompt, add_bos=True)
    assert ours == ids[0, : len(ours)].tolist()


def test_pixels_match_official_mgm_preprocessing(sp_tokenizer) -> None:
    proc = _fixture_processor(sp_tokenizer)
    inputs = load_file(str(MGM_TINY_A / "inputs.safetensors"))
    out = proc.preprocess_images([MGM_TINY_A / "images" / "img0.png", MGM_TINY_A / "images" / "img1.png"])
    assert (out["images_aux"] - inputs["images_aux"]).abs().max() < 1e-5  # img0 96x72 is padded to square
    assert (out["images"] - inputs["images"]).abs().max() < 1e-5  # LR = bilinear downsample of HR


def test_hd_views_are_crops_then_global(sp_tokenizer) -> None:
    proc = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny(hd=True))
    img = Image.new("RGB", (90, 60), (200, 10, 10))
    out = proc.preprocess_image(img)
    assert out["images"].shape == (5, 3, 56, 56) and out["images_aux"].shape == (3, 256, 256)
    lr_full = torch.nn.functional.interpolate(out["images_aux"][None], size=112, mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out["images"][1], lr_full[:, :56, 56:])  # crop 2 = top-right
    glob = torch.nn.functional.interpolate(lr_full[None], size=56, mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out["images"][4], glob)


def test_image_modes_and_exif(tmp_path) -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent -> white
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("L", (4, 4), 128)).getpixel((1, 1)) == (128, 128, 128)
    assert load_image(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).mode == "RGB"
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


def test_call_checks_placeholder_count_and_pads_left(tiny_processor) -> None:
    img = Image.new("RGB", (30, 30))
    batch = tiny_processor(["<image>\nhi", "a longer text prompt here"], images=[img])
    assert batch["input_ids"].shape[0] == 2 and batch["images"].shape == (1, 3, 56, 56)
    assert batch["attention_mask"][0, 0] == 0 or batch["attention_mask"][1, 0] == 0  # left padding
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]
    with pytest.raises(ValueError, match="1 <image> placeholders but 0 images"):
        tiny_processor("<image> hi", images=None)


def test_processor_roundtrip(tmp_path, tiny_processor) -> None:
    tiny_processor.save_pretrained(tmp_path)
    again = MiniGeminiProcessor.from_pretrained(tmp_path)
    assert again.image_token_id == tiny_processor.image_token_id == 512
    text = "USER: <image>\nWhat color? ASSISTANT:"
    assert again.tokenize(text) == tiny_processor.tokenize(text)


def test_tokenizer_model_mismatch_is_an_error(sp_tokenizer) -> None:
    with pytest.raises(ValueError, match="image_token_id=7"):
        MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny(image_token_id=7))
