"""The LLM's causal attention alone, fwd + bwd, per CPU SDPA kernel and dtype: why bf16 stops short of the peak.

    .venv/bin/python benchmarks/attention.py [--threads 2] [--repeats 5] [--batch 2] [--heads 8] [--head-dim 64]
                                             [--seq 1087]

Defaults: one attention layer of the benchmark model (benchmarks/README.md "The benchmark model": batch 2,
8 heads of 64, 511 text + 576 image = 1087 tokens, causal). `torch.nn.functional.scaled_dot_product_attention`
runs under `torch.nn.attention.sdpa_kernel` with each backend (FLASH_ATTENTION, EFFICIENT_ATTENTION, MATH;
a backend that does not run on this CPU is listed as such), in fp32 and in bf16 (q, k, v and the output
gradient in that dtype, as under bf16 autocast), interleaved round by round with the 2048^2 matmul peak of
each dtype (`benchmarks.common.matmul_gflops`); best of the rounds, median beside it.

FLOPs counted (the causal half of the S^2 query-key pairs, per sequence and head):
    forward  = 2 matmuls (Q K^T, P V) x 2 S^2 d / 2          = 2 S^2 d
    backward = 2 x forward (dV, dP, dQ, dK: 4 matmuls)       = 4 S^2 d
    fwd+bwd  = 6 S^2 d, times batch x heads (recomputation inside a kernel is not counted)
(`benchmarks.common.model_flops`' "llm_attention" term, used by train_step.py's MFU+attn and --profile, counts
the same 6 S^2 d per layer and sequence.) Achieved GFLOP/s = these FLOPs / seconds; "of peak" divides by the matmul peak of the same
dtype, same run.
Not run by CI; `tests/perf/test_attention_bench.py` checks every kernel against fp32 MATH.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `minigemini` does (before torch loads OpenMP)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from benchmarks.common import env_header, matmul_gflops, median, summary_line  # noqa: E402

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def attention_flops(batch: int, heads: int, seq: int, head_dim: int) -> float:
    """Causal fwd + bwd FLOPs: 6 S^2 d per sequence and head (see the module docstring)."""
    return 6.0 * batch * heads * seq**2 * head_dim


def make_inputs(batch: int, heads: int, seq: int, head_dim: int, seed: int = 0) -> Tensors:
    """fp32 q, k, v [B, H, S, d] and the output gradient, from one seed (every variant casts the same values)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, heads, seq, head_dim, generator=g) for _ in range(4))  # type: ignore[return-value]


def cast(inputs: Tensors, dtype: torch.dtype) -> Tensors:
    """The inputs in `dtype` (done once, outside the timed calls)."""
    return tuple(x.to(dtype) for x in inputs)  # type: ignore[return-value]


def fwd_bwd(inputs: Tensors, backend: SDPBackend) -> Tensors:
    """Causal SDPA of (q, k, v) with only `backend` enabled, in their dtype, then its backward with the
    given output gradient: (output, dq, dk, dv)."""
    q, k, v = (x.detach().requires_grad_() for x in inputs[:3])
    grad = inputs[3]
    with sdpa_kernel(backend):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        out.backward(grad)
    return out.detach(), q.grad, k.grad, v.grad  # type: ignore[return-value]


def runnable(backends: dict[str, SDPBackend]) -> tuple[dict[str, SDPBackend], dict[str, str]]:
    """The backends that run fwd + bwd on this CPU in both dtypes, and why each other one does not."""
    tiny = make_inputs(1, 1, 8, 8)
    ok, skipped = {}, {}
    for name, backend in backends.items():
        try:
            for dtype in DTYPES.values():
                fwd_bwd(cast(tiny, dtype), backend)
            ok[name] = backend
        except RuntimeError as exc:
            skipped[name] = str(exc).splitlines()[0][:120]
    return ok, skipped


def time_rounds(inputs: Tensors, backends: dict[str, SDPBackend], repeats: int) -> tuple[dict, dict]:
    """Seconds of each (backend, dtype) fwd + bwd and the matmul peak per dtype (GFLOP/s), `repeats`
    interleaved rounds after one warm-up of each."""
    variants = [(b, d) for b in backends for d in DTYPES]
    typed = {d: cast(inputs, dtype) for d, dtype in DTYPES.items()}
    for b, d in variants:
        fwd_bwd(typed[d], backends[b])
    times: dict[tuple[str, str], list[float]] = {key: [] for key in variants}
    peaks: dict[str, list[float]] = {d: [] for d in DTYPES}
    for r in range(repeats):
        for d, dtype in DTYPES.items():
            peaks[d].append(matmul_gflops(dtype))
        for b, d in variants:
            start = time.perf_counter()
            fwd_bwd(typed[d], backends[b])
            times[b, d].append(time.perf_counter() - start)
        print(f"  round {r + 1}/{repeats} done (load {os.getloadavg()[0]:.2f})", flush=True)
    return times, peaks


def report(times: dict, peaks: dict, flops: float) -> dict:
    """Print the table and the bf16/fp32 ratios; return the SUMMARY figures."""
    peak = {d: max(v) for d, v in peaks.items()}
    print(f"\nmatmul peak (2048^2, best of {len(peaks['fp32'])}): fp32 {peak['fp32']:.0f} GFLOP/s, "
          f"bf16 {peak['bf16']:.0f} GFLOP/s (bf16/fp32 {peak['bf16'] / peak['fp32']:.2f}x)")
    print(f"attention fwd + bwd: {flops / 1e9:.2f} GFLOP (causal, 6 S^2 d x batch x heads)\n")
    print("| kernel | dtype | seconds (median) | GFLOP/s | of the same-dtype matmul peak |")
    print("|---|---|---|---|---|")
    figures: dict = {"gflop": round(flops / 1e9, 3), "peak_gflops": {d: round(p) for d, p in peak.items()},
                     "kernels": {}}
    for (b, d), t in times.items():
        best = min(t)
        rate = flops / best / 1e9
        print(f"| {b} | {d} | {best:.4f} ({median(t):.4f}) | {rate:.0f} | {rate / peak[d]:.0%} |")
        figures["kernels"][f"{b} {d}"] = {"s": round(best, 4), "gflops": round(rate, 1),
                                          "of_peak": round(rate / peak[d], 3)}
    print("\nbf16 speed-up over fp32 (time fp32 / time bf16, same kernel):")
    for b in dict.fromkeys(b for b, _ in times):
        ratio = min(times[b, "fp32"]) / min(times[b, "bf16"])
        print(f"  {b}: {ratio:.2f}x   (the matmul peak: {peak['bf16'] / peak['fp32']:.2f}x)")
        figures[f"{b}_bf16_vs_fp32"] = round(ratio, 2)
    figures["matmul_bf16_vs_fp32"] = round(peak["bf16"] / peak["fp32"], 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed rounds (best is reported)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seq", type=int, default=1087, help="tokens per sequence (511 text + 576 image)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(env_header(args.threads))
    print(f"causal SDPA fwd + bwd: batch {args.batch}, {args.heads} heads x {args.head_dim}, {args.seq} tokens")
    backends, skipped = runnable(BACKENDS)
    for name, why in skipped.items():
        print(f"  {name}: does not run on this CPU ({why})")
    inputs = make_inputs(args.batch, args.heads, args.seq, args.head_dim)
    times, peaks = time_rounds(inputs, backends, args.repeats)
    figures = report(times, peaks, attention_flops(args.batch, args.heads, args.seq, args.head_dim))
    figures["not_on_this_cpu"] = sorted(skipped)
    print(summary_line("attention", figures))


if __name__ == "__main__":
    main()
