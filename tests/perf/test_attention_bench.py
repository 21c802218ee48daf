"""benchmarks/attention.py: every SDPA kernel it times computes the causal attention (output and gradients) of
the fp32 MATH kernel, which itself equals an explicit masked softmax; its FLOP count is the causal half of
what torch's FLOP counter counts for the full S^2 matmuls."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend
from torch.utils.flop_counter import FlopCounterMode

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "attention.py"
spec = importlib.util.spec_from_file_location("bench_attention", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)

SHAPE = dict(batch=2, heads=3, seq=70, head_dim=16)  # 70 tokens: more than one flash block of queries
TOLERANCE = {"fp32": dict(rtol=1e-5, atol=1e-5), "bf16": dict(rtol=4e-2, atol=4e-2)}


def _explicit_attention(inputs: tuple) -> tuple:
    """Causal softmax(Q K^T / sqrt(d)) V written out in float64, and its gradients."""
    q, k, v = (x.double().requires_grad_() for x in inputs[:3])
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    seq = q.shape[-2]
    scores = scores.masked_fill(torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf"))
    out = scores.softmax(-1) @ v
    out.backward(inputs[3].double())
    return out.detach(), q.grad, k.grad, v.grad


def test_backends_cover_flash_and_math_and_name_the_others() -> None:
    ok, skipped = bench.runnable(bench.BACKENDS)
    assert {"flash", "math"} <= set(ok)
    assert set(ok) | set(skipped) == set(bench.BACKENDS)  # nothing dropped without a reason
    assert all(skipped.values())


def test_math_fp32_equals_explicit_causal_softmax() -> None:
    inputs = bench.make_inputs(**SHAPE)
    ref = bench.fwd_bwd(bench.cast(inputs, torch.float32), SDPBackend.MATH)
    for name, got, want in zip(("out", "dq", "dk", "dv"), ref, _explicit_attention(inputs)):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_every_kernel_matches_fp32_math(dtype: str) -> None:
    inputs = bench.make_inputs(**SHAPE)
    ref = bench.fwd_bwd(bench.cast(inputs, torch.float32), SDPBackend.MATH)
    ok, _ = bench.runnable(bench.BACKENDS)
    for backend_name, backend in ok.items():
        got = bench.fwd_bwd(bench.cast(inputs, bench.DTYPES[dtype]), backend)
        for name, g, r in zip(("out", "dq", "dk", "dv"), got, ref):
            assert g.dtype == bench.DTYPES[dtype], (backend_name, name)
            torch.testing.assert_close(g.float(), r, **TOLERANCE[dtype], msg=f"{backend_name} {dtype} {name}")
    # the tolerance separates causal from non-causal attention: the bf16 check is not vacuous
    full = torch.nn.functional.scaled_dot_product_attention(*inputs[:3])
    assert (full - ref[0]).abs().max() > 10 * TOLERANCE["bf16"]["atol"]


def test_flop_count_is_the_causal_half_of_the_full_matmuls() -> None:
    inputs = bench.cast(bench.make_inputs(**SHAPE), torch.float32)
    counter = FlopCounterMode(display=False)
    with counter:
        bench.fwd_bwd(inputs, SDPBackend.MATH)
    full = counter.get_total_flops()  # the counter counts every query-key pair, fwd + bwd
    assert bench.attention_flops(**SHAPE) == full / 2
    b, h, s, d = SHAPE.values()
    assert bench.attention_flops(**SHAPE) == 6 * b * h * s * s * d
