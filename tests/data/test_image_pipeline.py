"""Fast image path: the same tensors as `MiniGeminiProcessor.preprocess_image` on real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from minigemini import MiniGeminiConfig, MiniGeminiProcessor
from minigemini.data.image_pipeline import FastImagePipeline, preprocess_image
from minigemini.model.processing import load_image

TOL = 1e-5  # as tests/model/test_processing.py for pixels (the fast path is bit-identical anyway)


def _texture(w: int, h: int, seed: int) -> np.ndarray:
    """Smooth random RGB content (so resampling differences would show), uint8 [h, w, 3]."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((max(h // 16, 2), max(w // 16, 2), 3)) * 255).astype(np.uint8))
    base = np.asarray(small.resize((w, h), Image.BICUBIC)).astype(np.int16)
    noise = rng.integers(-20, 21, size=base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """JPEGs of several sizes and modes (and one RGBA PNG), written here."""
    d = tmp_path_factory.mktemp("images")
    files: dict[str, Path] = {}
    for name, (w, h) in {"landscape": (640, 480), "portrait": (300, 500), "square": (768, 768),
                         "small": (97, 61), "large": (1700, 1100)}.items():
        files[name] = d / f"{name}.jpg"
        Image.fromarray(_texture(w, h, len(files))).save(files[name], quality=90)
    files["gray"] = d / "gray.jpg"
    Image.fromarray(_texture(400, 260, 7)[..., 0]).save(files["gray"], quality=90)
    files["cmyk"] = d / "cmyk.jpg"
    Image.fromarray(_texture(350, 420, 8)).convert("CMYK").save(files["cmyk"], quality=90)
    files["rgba"] = d / "rgba.png"
    rgba = np.dstack([_texture(320, 200, 9), (np.arange(320)[None, :].repeat(200, 0) * 255 // 319).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    files["exif"] = d / "exif.jpg"
    img = Image.fromarray(_texture(500, 300, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    img.save(files["exif"], quality=90, exif=exif.tobytes())
    return files


def _config(kind: str, aspect: str) -> MiniGeminiConfig:
    if kind == "normal":  # 336 LR / 768 HR, LR derived from HR (MGM)
        return MiniGeminiConfig.tiny(image_size=336, image_size_aux=768, image_aspect_ratio=aspect)
    if kind == "hd":  # 1536 HR, LR 672 = 2x2 crops of 336 + global view
        return MiniGeminiConfig.tiny(hd=True, image_size=336, image_size_aux=1536, image_aspect_ratio=aspect)
    return MiniGeminiConfig.tiny(image_size=336, image_size_aux=768, lr_from_hr=False, image_aspect_ratio=aspect)


@pytest.mark.parametrize("kind,aspect", [("normal", "pad"), ("normal", "resize"), ("normal", "crop"),
                                         ("hd", "pad"), ("hd", "resize"), ("hd", "crop"), ("lr_separate", "pad"),
                                         ("lr_separate", "crop")])
def test_equals_processor(sp_tokenizer, image_files: dict[str, Path], kind: str, aspect: str) -> None:
    processor = MiniGeminiProcessor(sp_tokenizer, _config(kind, aspect))
    fast = FastImagePipeline(processor.config)
    names = list(image_files) if kind == "normal" else ["landscape", "portrait", "gray", "cmyk", "rgba"]
    for name in names:
        ref = processor.preprocess_image(image_files[name])
        ours = fast(image_files[name])
        assert ours.keys() == ref.keys()
        for key in ref:
            assert ours[key].shape == ref[key].shape and ours[key].dtype == torch.float32, (name, key)
            diff = (ours[key] - ref[key]).abs().max().item()
            assert torch.equal(ours[key], ref[key]), (name, key, diff)  # bit-exact (the tests' TOL is 1e-5)
    hd = kind == "hd"
    assert ours["images"].shape == ((5, 3, 336, 336) if hd else (3, 336, 336))
    assert ours["images_aux"].shape == (3, 1536, 1536) if hd else (3, 768, 768)


def test_normalize_is_the_processors_float_steps_for_every_uint8_value() -> None:
    """PIL-backend CLIP: float64 x * (1/255) cast to float32, then (v - mean) / std in float32 (numpy here)."""
    cfg = MiniGeminiConfig.tiny()
    every = torch.arange(256, dtype=torch.uint8).view(16, 16).expand(3, 16, 16)
    rng = np.random.default_rng(0)
    photo = torch.from_numpy(rng.integers(0, 256, (517, 389, 3), dtype=np.uint8)).permute(2, 0, 1)  # HWC memory
    fast = FastImagePipeline(cfg)
    for x in (every, photo):
        ref = (x.numpy().astype(np.float64) * (1 / 255)).astype(np.float32)
        mean, std = (np.array(v, dtype=np.float32)[:, None, None] for v in (cfg.image_mean, cfg.image_std))
        ours = fast.normalize(x)
        assert ours.is_contiguous() and ours.dtype == torch.float32
        assert torch.equal(ours, torch.from_numpy((ref - mean) / std))


def test_pil_input_and_no_hr(sp_tokenizer, image_files: dict[str, Path]) -> None:
    processor = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny(use_hr=False))
    pil = Image.open(image_files["portrait"])
    ours, ref = FastImagePipeline(processor.config)(pil), processor.preprocess_image(pil)
    assert list(ours) == ["images"]
    assert (ours["images"] - ref["images"]).abs().max() < TOL


def test_dispatch_keeps_a_stand_in(sp_tokenizer, image_files: dict[str, Path]) -> None:
    processor = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny())
    out = preprocess_image(processor, image_files["small"])
    assert (out["images_aux"] - processor.preprocess_image(image_files["small"])["images_aux"]).abs().max() < TOL

    class StandIn:  # like the feature cache's: its own preprocess_image must be used
        config = processor.config

        def preprocess_image(self, image):
            return {"images": torch.zeros(1)}

    assert torch.equal(preprocess_image(StandIn(), image_files["small"])["images"], torch.zeros(1))


def _counting(processor: MiniGeminiProcessor) -> list:
    """Record the processor's own preprocess_image calls (an instance attribute: its type stays stock)."""
    calls: list = []
    official = processor.preprocess_image
    processor.preprocess_image = lambda image: calls.append(image) or official(image)
    return calls


def test_dispatch_checks_the_first_image(sp_tokenizer, image_files: dict[str, Path], caplog) -> None:
    good = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny())
    calls = _counting(good)
    for name in ("small", "portrait", "gray"):
        out = preprocess_image(good, image_files[name])
    assert calls == [image_files["small"]]  # checked once, then the fast path only
    assert torch.equal(out["images_aux"], MiniGeminiProcessor.preprocess_image(good, image_files["gray"])["images_aux"])

    bad = MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny())
    bad.config.image_mean = [0.5, 0.5, 0.5]  # its CLIP transform was built with the old mean: the paths differ
    calls = _counting(bad)
    with caplog.at_level("WARNING"):
        first = preprocess_image(bad, image_files["small"])
        preprocess_image(bad, image_files["portrait"])
    assert "differs from processor.preprocess_image" in caplog.text
    assert calls == [image_files["small"], image_files["portrait"]]  # the processor's own path from then on
    assert torch.equal(first["images"], MiniGeminiProcessor.preprocess_image(bad, image_files["small"])["images"])


def test_bad_aspect_mode_and_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="image_aspect_ratio"):
        FastImagePipeline(MiniGeminiConfig.tiny(image_aspect_ratio="stretch"))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(OSError):
        FastImagePipeline(MiniGeminiConfig.tiny())(broken)


def test_truncated_jpeg_is_an_error_as_with_pil(image_files: dict[str, Path], tmp_path: Path) -> None:
    data = image_files["landscape"].read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(OSError, match="truncated"):
        load_image(cut)
    with pytest.raises(OSError, match="truncated"):
        FastImagePipeline(MiniGeminiConfig.tiny())(cut)
