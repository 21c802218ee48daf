"""`minigemini demo`: the embedded main job (synthetic data, tiny model, no downloads).

Interim version: builds a tiny random-init Mini-Gemini, runs a forward pass and `generate` on a
generated image and prints what it does. The full two-stage training demo replaces it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the embedded CPU demo (no downloads)")
    p.add_argument("--out", default="outputs/demo", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    cfg = MiniGeminiConfig.tiny()
    model = MiniGeminiForCausalLM(cfg).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"built a tiny Mini-Gemini: {n_params:,} parameters; LR {cfg.image_size}px -> "
          f"{cfg.num_image_tokens} tokens, HR {cfg.image_size_aux}px, LLM {cfg.text_config.model_type}")
    rng = np.random.default_rng(args.seed)
    pixels = (rng.random((cfg.image_size_aux, cfg.image_size_aux, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(out / "demo_image.png")
    hr = torch.randn(1, 3, cfg.image_size_aux, cfg.image_size_aux)
    lr = torch.nn.functional.interpolate(hr, size=cfg.image_size, mode="bilinear", align_corners=False)
    ids = torch.tensor([[1, 5, 6] + [cfg.image_token_id] * cfg.num_image_tokens + [7, 8]])
    t0 = time.perf_counter()
    with torch.no_grad():
        logits = model(ids, torch.ones_like(ids), images=lr, images_aux=hr).logits
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), images=lr, images_aux=hr,
                             max_new_tokens=8, do_sample=False, pad_token_id=0)
    print(f"forward: logits {tuple(logits.shape)}; generate: 8 new tokens {gen[0, ids.shape[1]:].tolist()} "
          f"in {time.perf_counter() - t0:.2f}s; image written to {out / 'demo_image.png'}")
    return 0
