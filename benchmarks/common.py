"""Shared pieces of the benchmarks: the benchmark model, synthetic batches, timing, FLOP model, matmul peak.

Nothing here downloads anything: the models are random-init (speed does not depend on the weights).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from contextlib import contextmanager, nullcontext
from typing import Any, Callable, Iterator

import torch

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM
from minigemini.model.constants import IGNORE_INDEX

# The "small-but-real" benchmark model of issue 6.
BENCH_TEXT = dict(model_type="llama", vocab_size=32000, hidden_size=512, intermediate_size=1408, num_hidden_layers=8,
                  num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=4096,
                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
BENCH_LR = {"backend": "hf_clip", "weights": None, "select_layer": -2, "select_feature": "patch",
            "clip_config": {"hidden_size": 384, "intermediate_size": 1536, "num_hidden_layers": 6,
                            "num_attention_heads": 6, "image_size": 336, "patch_size": 14,
                            "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "projection_dim": 384}}
BENCH_HR = {"backend": "timm_convnext", "weights": None, "timm_name": None, "drop_path_rate": 0.0,
            "timm_kwargs": {"depths": [2, 2, 6, 2], "dims": [96, 192, 384, 768]}}
BENCH_DESCRIPTION = ("LLM llama hidden 512, 8 layers, 8 heads, ffn 1408, vocab 32000; LR CLIP ViT hidden 384, "
                     "6 layers (features of layer 5), patch 14 @ 336 -> 576 tokens; HR ConvNeXt dims "
                     "[96,192,384,768] depths [2,2,6,2] @ 768 -> 1440 x 192 x 192 map; mlp2x_gelu projector")


def bench_config(**overrides: Any) -> MiniGeminiConfig:
    """MiniGeminiConfig of the benchmark model (image token id = 32000, appended to the vocabulary)."""
    text = dict(BENCH_TEXT)
    text["vocab_size"] = 32001  # 32000 + the image token
    cfg = dict(text_config=text, vision_lr=dict(BENCH_LR), vision_hr=dict(BENCH_HR), image_size=336,
               image_size_aux=768, image_token_id=32000)
    cfg.update(overrides)
    return MiniGeminiConfig(**cfg)


def build_model(config: MiniGeminiConfig | None = None, seed: int = 0) -> MiniGeminiForCausalLM:
    """Random-init benchmark model in train mode (towers stay frozen and in eval mode)."""
    torch.manual_seed(seed)
    return MiniGeminiForCausalLM(config or bench_config()).train()


def set_stage(model: MiniGeminiForCausalLM, stage: int) -> list[torch.nn.Parameter]:
    """Stage 1: mining + projector train; stage 2: + the LLM. Towers frozen. Returns the trainable params."""
    model.requires_grad_(False)
    parts = [model.mining, model.projector] + ([model.language_model] if stage == 2 else [])
    for part in parts:
        if part is not None:
            part.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]


def synthetic_batch(config: MiniGeminiConfig, batch_size: int = 2, text_len: int = 512, answer_len: int = 256,
                    seed: int = 0, with_image: bool = True) -> dict[str, torch.Tensor]:
    """A right-sized training batch: `text_len` text ids (one of them the `<image>` placeholder, expanded to
    the image's N ids, as MGM's input_ids of length `text_len`) with the last `answer_len` supervised."""
    g = torch.Generator().manual_seed(seed)
    n_img = config.num_image_tokens if with_image else 1
    prompt = text_len - 1 - answer_len - 1  # minus BOS and the placeholder
    rows, labels = [], []
    for _ in range(batch_size):
        text = torch.randint(3, 32000, (prompt + answer_len,), generator=g)
        img = torch.full((n_img,), config.image_token_id) if with_image else torch.randint(3, 32000, (1,), generator=g)
        ids = torch.cat([torch.tensor([1]), img, text])
        lab = ids.clone()
        lab[: ids.numel() - answer_len] = IGNORE_INDEX
        rows.append(ids)
        labels.append(lab)
    batch: dict[str, torch.Tensor] = {"input_ids": torch.stack(rows), "labels": torch.stack(labels)}
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    if with_image:
        s, h = config.image_size, config.image_size_aux
        batch["images"] = torch.randn(batch_size, 3, s, s, generator=g)
        batch["images_aux"] = torch.randn(batch_size, 3, h, h, generator=g)
    return batch


# ---- timing ----------------------------------------------------------------------------------------
def median(values: list[float]) -> float:
    """Median (0.0 for an empty list)."""
    return statistics.median(values) if values else 0.0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """Median GFLOP/s of an n x n @ n x n matmul in `dtype` (2 n^3 FLOPs) on this CPU, now."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    times = [timed(lambda: a @ b)[0] for _ in range(repeats)]
    return 2 * n**3 / median(times) / 1e9


def autocast_context(dtype: torch.dtype | None) -> Any:
    """bf16/fp16 autocast on CPU, or nothing for fp32."""
    return torch.autocast("cpu", dtype=dtype) if dtype is not None and dtype != torch.float32 else nullcontext()


def train_pass(model: torch.nn.Module, opt: torch.optim.Optimizer, batches: Any, dtype: torch.dtype | None = None,
               drop: tuple[str, ...] = ("skipped_samples", "packed_rows", "sample_ids")) -> float:
    """Seconds for one training step per batch (loading included when `batches` is a DataLoader):
    forward under `autocast_context(dtype)`, backward, optimizer; keys in `drop` are not model inputs."""
    start = time.perf_counter()
    for batch in batches:
        with autocast_context(dtype):
            loss = model(**{k: v for k, v in batch.items() if k not in drop}).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


OP_GROUPS = (  # (group, substrings of aten op names), first match wins
    ("matmul (mm, addmm, bmm)", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("attention kernel (SDPA flash, fwd + bwd)", ("flash_attention", "scaled_dot_product")),
    ("convolution (ConvNeXt stem / depthwise)", ("convolution",)),
    ("LayerNorm", ("layer_norm",)),
    ("copies and dtype casts", ("aten::copy_", "aten::clone", "aten::_to_copy", "aten::contiguous")),
    ("HR map: concat, upsample", ("aten::cat", "upsample")),
    ("optimizer (fused AdamW)", ("adam",)),
    ("elementwise and reductions", ("aten::",)),
)


def profile_groups(step: Callable[[], Any]) -> list[tuple[str, float, float]]:
    """Run `step` under the torch profiler; self CPU seconds and FLOPs summed per `OP_GROUPS` group (ops not
    named `aten::...` are autograd / Python bookkeeping, grouped as "other")."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        step()
    totals: dict[str, list[float]] = {}
    for event in prof.key_averages():
        group = next((g for g, keys in OP_GROUPS if any(k in event.key for k in keys)), "other")
        entry = totals.setdefault(group, [0.0, 0.0])
        entry[0] += event.self_cpu_time_total / 1e6
        entry[1] += float(event.flops or 0)
    order = [g for g, _ in OP_GROUPS] + ["other"]
    return [(g, totals[g][0], totals[g][1]) for g in order if g in totals]


@contextmanager
def threads(n: int) -> Iterator[None]:
    """Run with `n` intra-op threads, then restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def env_header(num_threads: int) -> str:
    """Date, machine and library versions, and the current load (other processes may be running)."""
    import transformers

    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"date {datetime.datetime.now().isoformat(timespec='seconds')} | CPU {cpu}, {os.cpu_count()} cores | "
            f"torch {torch.__version__} threads {num_threads} (OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}) | transformers {transformers.__version__} | "
            f"load average at start {', '.join(f'{x:.2f}' for x in load)}")


def summary_line(benchmark: str, figures: dict) -> str:
    """The one-line JSON every benchmark ends with, to compare runs: its figures and the load it ran under."""
    import json

    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return "SUMMARY " + json.dumps({"benchmark": benchmark, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                                    "threads": torch.get_num_threads(), "loadavg_end": load, "figures": figures},
                                   sort_keys=False)


# ---- FLOP model -----------------------------------------------------------------------------------
def _linear_params(module: torch.nn.Module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def tower_forward_flops(model: MiniGeminiForCausalLM, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Forward FLOPs of the frozen towers on this batch (= 2 x weight params x positions each is applied to)."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    with torch.no_grad():
        for name, fn in (("lr_tower", lambda: model.encode_lr(batch["images"])),
                         ("hr_tower", lambda: model.vision_hr(batch["images_aux"]))):
            counter = FlopCounterMode(display=False)
            with counter:
                fn()
            out[name] = float(counter.get_total_flops())
    return out


def model_flops(model: MiniGeminiForCausalLM, batch: dict[str, torch.Tensor], stage: int,
                tower_flops: dict[str, float]) -> dict[str, float]:
    """Model FLOPs of one training step (the formula is in `FLOPS_FORMULA`); pass `tower_flops={}` when the
    towers do not run (feature cache)."""
    cfg = model.config
    text = cfg.text_config
    lm = model.language_model
    decoder = lm.get_decoder()
    tokens = float(batch["attention_mask"].sum())
    supervised = float((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
    n_visual = float(batch["images"].shape[0] * cfg.num_image_tokens) if "images" in batch else 0.0
    k_llm = 6.0 if stage == 2 else 4.0  # stage 1: frozen LLM, but the backward runs through it (input grads)
    p_llm = _linear_params(decoder)
    p_head = lm.get_output_embeddings().weight.numel()
    p_mining = _linear_params(model.mining) if model.mining is not None else 0
    p_proj = _linear_params(model.projector)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    attn_width = text.num_attention_heads * head_dim
    seq_sq = float((batch["attention_mask"].sum(1).float() ** 2).sum())
    terms = {
        "llm_linear": k_llm * p_llm * tokens,
        "lm_head": k_llm * p_head * supervised,
        "projector": 6.0 * p_proj * n_visual,
        "mining_linear": 6.0 * p_mining * n_visual,
        "lr_tower": tower_flops.get("lr_tower", 0.0),
        "hr_tower": tower_flops.get("hr_tower", 0.0),
    }
    # Matmuls without parameters (attention scores and weighted sums), reported separately.
    hr_cells = (cfg.image_size_aux // 4) ** 2 // cfg.tokens_per_view if model.mining is not None else 0
    # Forward: two matmuls (scores, weighted sum) = 2 FLOPs x d per (query, key) pair, over the causal half of S^2
    # (LLM) or the M^2 cells of each visual token's window (mining); backward: twice the forward in both stages
    # (the gradient flows through attention even when the LLM is frozen), so x3.
    attn = {
        "llm_attention": 3 * 2 * 2 * text.num_hidden_layers * attn_width * seq_sq / 2,
        "mining_attention": 3 * 2 * 2 * hr_cells * model.vision_hr.hidden_size * n_visual if hr_cells else 0.0,
    }
    terms["params_total"] = sum(terms.values())
    terms.update(attn)
    terms["total_with_attention"] = terms["params_total"] + sum(attn.values())
    # The "6 N T" convention (nanoGPT / Kaplan-style, the wording): every LLM parameter, the embedding
    # included, at every token (the LM head too, as if all logits were computed), plus connector and towers.
    p_all = sum(p.numel() for p in lm.parameters())
    terms["six_nt_total"] = (k_llm * p_all * tokens + terms["projector"] + terms["mining_linear"]
                             + terms["lr_tower"] + terms["hr_tower"])
    terms["tokens"] = tokens
    return terms


FLOPS_FORMULA = """\
model FLOPs per step = k_LLM * P_LLM * T + k_LLM * P_head * T_sup + 6 * (P_proj + P_mining) * T_img
                       + 2 * sum over frozen-tower layers (weight params x output positions)
  P_LLM  = weights of the LLM's decoder linears (embedding lookups are free; P_head counted apart)
  T      = LLM tokens in the batch (text + image tokens, no padding here); T_sup = supervised tokens
  T_img  = visual tokens (images x N); the mining's K/V weights are applied once per visual token
           in its absorbed form (minigemini/model/mining.py), so they count like any other linear
  k_LLM  = 6 when the LLM trains (stage 2); 4 in stage 1 (frozen, but the backward runs through it)
  towers = forward only (frozen): 2 x params x positions, counted with torch.utils.flop_counter
MFU = model FLOPs / step time / matmul peak (2048^2 matmul, same dtype, measured in this run).
"MFU+attn" adds the parameter-free matmuls: LLM attention 4 * L * d * S^2 / 2 per sequence (causal),
and the mining's scores / weighted sums 4 * M^2 * C_hr per visual token, times 3 (forward + backward).
"MFU 6NT" counts k_LLM * (all LLM params, embedding and LM head included) * T instead of the first two
terms: the "6 x params x tokens" convention taken literally. It counts FLOPs this code does not do (an
embedding lookup is no matmul; logits are computed at supervised positions only), so it is an upper
reading, shown for comparison; MFU above is the figure we report against targets."""
