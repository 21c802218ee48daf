"""The bf16 training step on a GPU: a ~1B-parameter random-init Mini-Gemini, MFU against the GPU's published
bf16 peak, tokens/s. Run by benchmarks/gpu_check.sh (with a 2-step ZeRO-2 run after it).

    python benchmarks/gpu_check.py [--device cuda] [--size 1b|tiny] [--steps 10] [--peak-tflops 989]

`--device cpu --size tiny` is the fallback path CI runs (no MFU claim: a CPU has no published bf16 peak).
FLOPs per step come from benchmarks/common.model_flops (linear layers of every part + causal attention).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import bench_config, model_flops, set_stage, summary_line, synthetic_batch  # noqa: E402
from benchmarks.common import tower_forward_flops  # noqa: E402

# Dense bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets (without sparsity). Matched on the
# device name torch reports; anything else needs --peak-tflops.
PUBLISHED_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0,
                         "H100 NVL": 835.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0, "L40S": 362.0,
                         "A10G": 70.0, "L4": 121.0}

# ~1B parameters: a 954M-parameter Llama (hidden 2048, 16 layers) + CLIP ViT-L/14-336 and ConvNeXt-L @ 768
# shapes as MGM's towers (frozen, random weights).
ONE_B_TEXT = dict(model_type="llama", vocab_size=32001, hidden_size=2048, intermediate_size=5632,
                  num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
CLIP_L = {"backend": "hf_clip", "weights": None, "select_layer": -2, "select_feature": "patch",
          "clip_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                          "num_attention_heads": 16, "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu",
                          "layer_norm_eps": 1e-5, "projection_dim": 768}}
CONVNEXT_L = {"backend": "timm_convnext", "weights": None, "timm_name": "convnext_large", "timm_kwargs": {},
              "drop_path_rate": 0.0}
# The CPU fallback: the same code path at toy sizes (seconds on a laptop core).
TINY_TEXT = dict(ONE_B_TEXT, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4)
TINY_LR = {**CLIP_L, "clip_config": dict(CLIP_L["clip_config"], hidden_size=48, intermediate_size=192,
                                         num_hidden_layers=3, num_attention_heads=4, image_size=56)}
TINY_HR = {**CONVNEXT_L, "timm_name": None, "timm_kwargs": {"depths": [1, 1, 2, 1], "dims": [8, 16, 32, 64]}}


def published_peak(device: torch.device, given: float | None) -> float | None:
    """bf16 peak in TFLOP/s: `--peak-tflops`, else the data-sheet figure for this GPU's name, else None."""
    if given:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, tflops in PUBLISHED_BF16_TFLOPS.items():
        if key in name:
            return tflops
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", choices=["1b", "tiny"], default="1b")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--text-len", type=int, default=2048, help="text ids per sample (one is the <image>)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak when the GPU is not known")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.size == "1b":
        config = bench_config(text_config=dict(ONE_B_TEXT), vision_lr=dict(CLIP_L), vision_hr=dict(CONVNEXT_L))
        text_len, answer_len = args.text_len, args.text_len // 2
    else:
        config = bench_config(text_config=dict(TINY_TEXT), vision_lr=dict(TINY_LR), vision_hr=dict(TINY_HR),
                              image_size=56, image_size_aux=128)
        text_len, answer_len = 64, 32
    config.text_config._attn_implementation = "sdpa"  # flash / memory-efficient kernels on CUDA
    from minigemini import MiniGeminiForCausalLM

    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(config).to(device).train()
    params = set_stage(model, 2)
    opt = torch.optim.AdamW(params, lr=1e-5, fused=device.type == "cuda")
    batch = synthetic_batch(config, args.batch_size, text_len, answer_len)
    flops = model_flops(model, batch, 2, tower_forward_flops(model, batch))["total_with_attention"]
    batch = {k: v.to(device) for k, v in batch.items()}
    tokens = batch["input_ids"].numel()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    peak = published_peak(device, args.peak_tflops)
    n_params = sum(p.numel() for p in model.parameters())
    mfu = flops / seconds / (peak * 1e12) if peak else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (fallback path)"
    print(f"device {name}; model {n_params / 1e9:.2f} B parameters ({sum(p.numel() for p in params) / 1e9:.2f} B "
          f"trained), batch {args.batch_size} x {batch['input_ids'].shape[1]} tokens, bf16 autocast, SDPA")
    print(f"step {seconds:.3f} s, {tokens / seconds:,.0f} tokens/s, {flops / 1e12:.2f} TFLOP/step, "
          + (f"MFU {mfu:.2f} of the {peak:.0f} TFLOP/s published bf16 peak" if mfu is not None
             else "MFU: unknown peak (give --peak-tflops)"))
    if device.type == "cuda":
        print(f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    print(summary_line("gpu_check", {"device": name, "step_s": round(seconds, 4), "tokens_per_s": round(tokens / seconds),
                                     "tflop_per_step": round(flops / 1e12, 3),
                                     "mfu": None if mfu is None else round(mfu, 3)}))


if __name__ == "__main__":
    main()
