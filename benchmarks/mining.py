"""Patch info mining alone: MGM's direct K/V formula vs the absorbed form (bmm, or one SDPA call), fwd + bwd.

    .venv/bin/python benchmarks/mining.py [--threads 2] [--repeats 5]

Shapes of the issue-6 benchmark model: 2 images, 576 LR tokens of 384, HR map 1440 x 192 x 192
(8 x 8 cells per token), channels-last as the HR tower returns it. Interleaved rounds, best reported
(shared machine). Not run by CI.
"""

from __future__ import annotations

import argparse
import os
import math
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `minigemini` does (before torch loads OpenMP)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import autocast_context, env_header, median, summary_line, timed  # noqa: E402
from minigemini.model.mining import PatchInfoMining, regroup_windows  # noqa: E402


def absorbed_sdpa(self: PatchInfoMining, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """The absorbed form with SDPA for the window attention (K = V = the normalised cells)."""
    (ln_k, lin_k), (ln_v, lin_v) = self.key, self.value
    cells = regroup_windows(hr.to(lr.dtype), math.isqrt(lr.shape[1]))
    normed = F.layer_norm(cells, cells.shape[-1:], eps=ln_k.eps)
    q = self.query(lr)
    q_hr = q @ lin_k.weight
    query = (q_hr * (ln_k.weight / math.sqrt(lin_k.out_features))).unsqueeze(2)
    pooled = F.scaled_dot_product_attention(query, normed, normed, scale=1.0).squeeze(2)
    return lin_v(pooled * ln_v.weight + ln_v.bias) + 0.0 * (q_hr @ ln_k.bias + q @ lin_k.bias).unsqueeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(env_header(args.threads))
    torch.manual_seed(0)
    mining = PatchInfoMining(384, 1440)
    lr = torch.randn(2, 576, 384, requires_grad=True)
    hr = torch.randn(2, 1440, 192, 192).contiguous(memory_format=torch.channels_last)
    direct = "direct K/V (MGM formula, SDPA)"
    forms = {direct: mining.mine_reference, "absorbed, bmm (minigemini)": mining.mine,
             "absorbed, SDPA": lambda a, b: absorbed_sdpa(mining, a, b)}
    dtypes = {"fp32": torch.float32, "bf16 autocast": torch.bfloat16}

    def step(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], dtype: torch.dtype) -> None:
        with autocast_context(dtype):
            out = fn(lr, hr)
        out.float().square().mean().backward()
        mining.zero_grad(set_to_none=True)
        lr.grad = None

    results: dict[tuple[str, str], list[float]] = {(f, d): [] for d in dtypes for f in forms}
    for f, d in results:
        step(forms[f], dtypes[d])  # warm-up
    for _ in range(args.repeats):  # interleaved
        for f, d in results:
            results[f, d].append(timed(lambda: step(forms[f], dtypes[d]))[0])
    print("\n| mining fwd + bwd (2 images) | precision | seconds, best (median) | vs direct |")
    print("|---|---|---|---|")
    for (f, d), times in results.items():
        print(f"| {f} | {d} | {min(times):.3f} ({median(times):.3f}) | {min(results[direct, d]) / min(times):.1f}x |")
    with torch.no_grad():
        diff = (mining.mine(lr, hr) - mining.mine_reference(lr, hr)).abs().max().item()
    print(f"\nmax |absorbed - direct| (fp32): {diff:.2e}")
    print(summary_line("mining", {"max_abs_diff_fp32": diff, "seconds": {f"{f} | {d}": round(min(t), 4)
                                                                         for (f, d), t in results.items()}}))


if __name__ == "__main__":
    main()
