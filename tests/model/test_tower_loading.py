"""Pretrained-weight routes of the towers, exercised offline on tiny local checkpoints:
HF CLIP folder, open_clip ViT (`local-dir:`), open_clip ConvNeXt trunk, timm safetensors file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM
from minigemini.model.towers import build_tower

TINY_VIT_CFG = {"embed_dim": 32, "quick_gelu": True,
                "vision_cfg": {"image_size": 56, "layers": 3, "width": 48, "patch_size": 14, "head_width": 12},
                "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}
TINY_CONVNEXT_CFG = {"embed_dim": 32,
                     "vision_cfg": {"timm_model_name": "convnext_atto", "timm_model_pretrained": False,
                                    "timm_pool": "", "timm_proj": "mlp", "timm_drop": 0.0, "timm_drop_path": 0.1,
                                    "image_size": 64},
                     "text_cfg": {"context_length": 16, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}}


def _open_clip_dir(tmp_path, name, cfg):
    import open_clip

    folder = tmp_path / name
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    torch.manual_seed(1)
    model = open_clip.create_model(f"local-dir:{folder}")  # no weights yet: random init
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    return folder, model


def test_hf_clip_weights_from_local_folder(tmp_path) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    spec = MiniGeminiConfig.tiny().vision_lr
    torch.manual_seed(3)
    source = CLIPVisionModel(CLIPVisionConfig(**spec["clip_config"]))
    source.save_pretrained(tmp_path / "clip")
    tower = build_tower(spec)
    tower.load_pretrained(str(tmp_path / "clip"))
    x = torch.randn(1, 3, 56, 56)
    expected = source(x, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(tower(x), expected, rtol=0, atol=1e-5)


def test_open_clip_vit_tower_matches_open_clip_intermediates(tmp_path) -> None:
    folder, reference = _open_clip_dir(tmp_path, "vit", TINY_VIT_CFG)
    spec = {"backend": "open_clip_vit", "model_name": f"local-dir:{folder}", "model_cfg": TINY_VIT_CFG,
            "select_layer": -2, "weights": f"local-dir:{folder}"}
    tower = build_tower(spec)
    tower.load_pretrained(spec["weights"])
    x = torch.randn(2, 3, 56, 56)
    # select_layer -2 of 3 blocks = output of block index 1; CLS dropped
    ref = reference.visual.forward_intermediates(x, indices=[1], intermediates_only=True, output_fmt="NLC")
    torch.testing.assert_close(tower(x), ref["image_intermediates"][0])
    assert tower(x).shape == (2, 16, 48)
    cfg = MiniGeminiConfig.tiny(vision_lr=spec)
    assert cfg.lr_patch_size == 14 and cfg.num_image_tokens == 16
    model = MiniGeminiForCausalLM(cfg)
    assert model.encode_images(torch.randn(1, 3, 56, 56), torch.randn(1, 3, 128, 128)).shape == (1, 16, 64)


def test_open_clip_convnext_trunk_weights(tmp_path) -> None:
    folder, reference = _open_clip_dir(tmp_path, "convnext", TINY_CONVNEXT_CFG)
    spec = {"backend": "timm_convnext", "timm_name": "convnext_atto", "drop_path_rate": 0.1,
            "weights": f"open_clip:local-dir:{folder}"}
    tower = build_tower(spec)
    tower.load_pretrained(spec["weights"])
    trunk = reference.visual.trunk.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        stage0 = trunk.stages[0](trunk.stem(x))
    out = tower(x)
    assert out.shape == (1, 40 + 80 + 160 + 320, 16, 16)  # convnext_atto widths, stride 4
    torch.testing.assert_close(out[:, :40], stage0, rtol=1e-5, atol=1e-5)


def test_convnext_from_safetensors_file_and_missing_file_error(tmp_path) -> None:
    spec = MiniGeminiConfig.tiny().vision_hr
    torch.manual_seed(5)
    source = build_tower(spec)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "hr.safetensors"))
    tower = build_tower(spec)
    tower.load_pretrained(str(tmp_path / "hr.safetensors"))
    x = torch.randn(1, 3, 128, 128)
    torch.testing.assert_close(tower(x), source(x))
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        tower.load_pretrained(str(tmp_path / "nope.safetensors"))


def test_unknown_backend_is_named() -> None:
    with pytest.raises(ValueError, match="valid: \\['hf_clip', 'open_clip_vit', 'timm_convnext'\\]"):
        build_tower({"backend": "siglip"})
