"""Fixtures for the inference tests: a Generator over the tiny model, and a few image files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image


@pytest.fixture()
def generator(tiny_model, tiny_processor):
    """A Generator over the random-init tiny model (template from its config: vicuna_v1)."""
    from minigemini.infer.generate import Generator

    return Generator(tiny_model, tiny_processor)


@pytest.fixture()
def image_files(tmp_path: Path) -> list[Path]:
    """Two small PNGs of different sizes and colours."""
    paths = []
    for i, (size, colour) in enumerate([((40, 30), (200, 20, 20)), ((64, 64), (20, 180, 60))]):
        path = tmp_path / f"img{i}.png"
        image = Image.new("RGB", size, colour)
        image.paste((255, 255, 255), (5, 5, 15, 15))
        image.save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init StableDiffusionPipeline (tiny UNet/VAE/CLIP text encoder, byte-level CLIP tokenizer), saved."""
    pytest.importorskip("diffusers", reason="diffusers (optional extra 'gen') is not installed")
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from tokenizers import pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in pre_tokenizers.ByteLevel.alphabet():
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=4, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 16), in_channels=3, out_channels=3,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        latent_channels=4, norm_num_groups=4, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    out = tmp_path_factory.mktemp("tiny_sd")
    pipe.save_pretrained(out)
    return out
