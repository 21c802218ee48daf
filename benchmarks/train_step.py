"""Training-step speed of the issue-6 benchmark model: step time, tokens/s, MFU, breakdown, levers side by side.

    .venv/bin/python benchmarks/train_step.py [--threads 2] [--repeats 3] [--quick] [--memory]

Every variant runs in the same process, interleaved round by round (so a load change on a shared
machine hits all of them alike). Figures are the best (minimum) of the rounds, the usual estimate of
the uncontended time on a shared machine; the median is shown beside the step time. The matmul
peak (2048^2, fp32 and bf16) is measured at every round too and its best is used. `--memory`: instead of
timing, the activation bytes autograd keeps (saved tensors) and the peak RSS of each variant, measured in a
fresh process per variant (see benchmarks/memory.py). Not run by CI.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `minigemini` does (before torch loads OpenMP)

import torch  # noqa: E402

from benchmarks.common import (BENCH_DESCRIPTION, FLOPS_FORMULA, autocast_context,  # noqa: E402
                               bench_config, build_model, env_header, matmul_gflops, median, model_flops,
                               profile_groups, set_stage, summary_line, synthetic_batch, tower_forward_flops)
from benchmarks.memory import activation_bytes, child_report, rss_in_fresh_process  # noqa: E402

@dataclass
class Variant:
    name: str
    stage: int = 2
    dtype: torch.dtype = torch.float32
    supervised_only: bool = True
    channels_last: bool = True
    cache: bool = False
    mining: str = "absorbed"  # or "direct" (K/V for every HR cell, MGM's formula)
    attn: str = "sdpa"
    bf16_weights: bool = False  # the model itself in bf16, no autocast (as DeepSpeed's bf16 mode runs it)
    frozen_fp32: bool = False  # bf16 autocast with the frozen parts kept fp32 (model.frozen_dtype=fp32)
    compiled: bool = False  # regional torch.compile (accelerate.utils.compile_regions_deepspeed, in place)
    checkpointing: bool = False  # gradient (activation) checkpointing of the LLM layers, non-reentrant
    times: dict[str, list[float]] = field(default_factory=lambda: {"fwd": [], "fwd_bwd": [], "step": []})


VARIANTS = [
    Variant("stage 2, fp32 (reference)"),
    Variant("stage 2, bf16 autocast", dtype=torch.bfloat16),
    Variant("stage 2, bf16 autocast, frozen parts fp32", dtype=torch.bfloat16, frozen_fp32=True),
    Variant("stage 2, fp32, full logits", supervised_only=False),
    Variant("stage 2, fp32, NCHW ConvNeXt", channels_last=False),
    Variant("stage 2, fp32, feature cache", cache=True),
    Variant("stage 2, fp32, direct mining (MGM K/V)", mining="direct"),
    Variant("stage 2, fp32, eager attention", attn="eager"),
    Variant("stage 2, bf16 + feature cache", dtype=torch.bfloat16, cache=True),
    Variant("stage 2, bf16 weights (no autocast)", dtype=torch.bfloat16, bf16_weights=True),
    Variant("stage 2, bf16 autocast, torch.compile", dtype=torch.bfloat16, compiled=True),
    Variant("stage 2, fp32, gradient checkpointing", checkpointing=True),
    Variant("stage 2, fp32, feature cache, gradient checkpointing", cache=True, checkpointing=True),
    Variant("stage 2, bf16 autocast, gradient checkpointing", dtype=torch.bfloat16, checkpointing=True),
    Variant("stage 1, fp32", stage=1),
    Variant("stage 1, bf16 autocast", stage=1, dtype=torch.bfloat16),
    Variant("stage 1, bf16 autocast, frozen parts fp32", stage=1, dtype=torch.bfloat16, frozen_fp32=True),
    Variant("stage 1, fp32, feature cache", stage=1, cache=True),
    Variant("stage 1, bf16 + feature cache", stage=1, dtype=torch.bfloat16, cache=True),
]
QUICK = {"stage 2, fp32 (reference)", "stage 2, bf16 autocast", "stage 2, fp32, feature cache", "stage 1, fp32",
         "stage 1, bf16 autocast",
         "stage 2, bf16 weights (no autocast)", "stage 2, bf16 autocast, frozen parts fp32",
         "stage 2, fp32, gradient checkpointing", "stage 2, fp32, feature cache, gradient checkpointing"}
FROZEN = ("vision_lr", "vision_hr", "language_model")  # parts that can be frozen (the LLM in stage 1)


class Bench:
    """The model, its two optimizers (stage 1 / stage 2 parameters) and the inputs of every variant."""

    def __init__(self, compiled: bool = False) -> None:
        self.config = bench_config()
        self.model = build_model(self.config)
        self.fp32_parts = {k: getattr(self.model, k) for k in FROZEN}
        # model.frozen_dtype=auto (training default with bf16): frozen weights stored in bf16, trained ones fp32
        self.bf16_parts = {k: copy.deepcopy(v).to(torch.bfloat16).requires_grad_(False) for k, v in
                           self.fp32_parts.items()}
        self.batch = synthetic_batch(self.config, batch_size=2, text_len=512, answer_len=256)
        self.opts = {s: torch.optim.AdamW(set_stage(self.model, s), lr=1e-5, fused=True) for s in (1, 2)}
        self.model_bf16 = copy.deepcopy(self.model).to(torch.bfloat16)
        self.opt_bf16 = torch.optim.AdamW(set_stage(self.model_bf16, 2), lr=1e-5, fused=True)
        with torch.no_grad():
            lr = self.model.encode_lr(self.batch["images"])
            maps = self.model.vision_hr.stage_maps(self.batch["images_aux"])
        self.features = {dt: {"lr_features": lr.to(dt), "hr_features": [m.to(dt) for m in maps]}
                         for dt in (torch.float32, torch.bfloat16)}  # as a cache stored in that dtype
        self.compiled = None
        if compiled:  # a copy of the default bf16 set-up (stage 2: towers bf16, LLM fp32), compiled per block
            from accelerate.utils import compile_regions_deepspeed

            self.compiled = copy.deepcopy(self.model)
            for k in ("vision_lr", "vision_hr"):
                setattr(self.compiled, k, copy.deepcopy(self.bf16_parts[k]))
            self.opt_compiled = torch.optim.AdamW(set_stage(self.compiled, 2), lr=1e-5, fused=True)
            torch._dynamo.config.recompile_limit = 64  # one compiled frame per block instance (default 8)
            compile_regions_deepspeed(self.compiled)

    def model_for(self, v: Variant) -> torch.nn.Module:
        return self.compiled if v.compiled else self.model_bf16 if v.bf16_weights else self.model

    def configure(self, v: Variant) -> dict:
        m = self.model_for(v)
        if m is self.model:  # frozen parts in bf16 under bf16 autocast, as training stores them by default
            low = v.dtype == torch.bfloat16 and not v.frozen_fp32
            for k in FROZEN:
                frozen = k != "language_model" or v.stage == 1
                setattr(m, k, (self.bf16_parts if low and frozen else self.fp32_parts)[k])
        set_stage(m, v.stage)
        if v.checkpointing != m.is_activation_checkpointing:
            if v.checkpointing:
                m.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                m.activation_checkpointing_disable()
        m.config.supervised_logits_only = v.supervised_only
        m.vision_hr.channels_last = v.channels_last
        if v.mining == "direct":
            m.mining.mine = m.mining.mine_reference
        else:
            m.mining.__dict__.pop("mine", None)
        for sub in (m.language_model, m.vision_lr.clip):
            if sub.config._attn_implementation != v.attn:
                sub.set_attn_implementation(v.attn)
        inputs = {k: (x.bfloat16() if v.bf16_weights and x.is_floating_point() else x) for k, x in self.batch.items()}
        if v.cache:
            inputs.pop("images")
            inputs.pop("images_aux")
            inputs.update(self.features[v.dtype])
        return inputs

    def step(self, v: Variant) -> dict[str, float]:
        inputs = self.configure(v)
        opt = self.opt_compiled if v.compiled else self.opt_bf16 if v.bf16_weights else self.opts[v.stage]
        model = self.model_for(v)
        t0 = time.perf_counter()
        with autocast_context(None if v.bf16_weights else v.dtype):
            loss = model(**inputs).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        return {"fwd": t1 - t0, "fwd_bwd": t2 - t0, "step": t3 - t0}

    def breakdown(self, stage: int, dtype: torch.dtype, foreach: torch.optim.Optimizer | None) -> dict[str, float]:
        """One step cut at the module boundaries (same gradients as the fused step)."""
        m = self.model
        self.configure(Variant("", stage=stage, dtype=dtype))
        b, t = self.batch, {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            t[name] = now - clock
            clock = now

        with autocast_context(dtype):
            lr = m.encode_lr(b["images"])
            lap("LR tower (fwd)")
            hr = m.vision_hr(b["images_aux"])
            lap("HR tower (fwd)")
            visual = m.encode_images(lr_features=lr, hr_features=hr)
            lap("mining + projector fwd")
        vis = visual.detach().requires_grad_()
        with autocast_context(dtype):
            embeds = m.embed_tokens(b["input_ids"], vis)
            loss = m(inputs_embeds=embeds, attention_mask=b["attention_mask"], labels=b["labels"]).loss
        lap("LLM fwd (+ loss)")
        loss.backward()
        lap("LLM bwd")
        visual.backward(vis.grad)
        lap("mining + projector bwd")
        self.opts[stage].step()
        lap("optimizer (AdamW fused)")
        if foreach is not None:
            foreach.step()
            lap("  for comparison: AdamW foreach")
        self.opts[stage].zero_grad(set_to_none=True)
        t["total"] = sum(v for k, v in t.items() if not k.startswith(" "))
        return t


RATIOS = [  # (label, slower variant, faster variant): step-time ratios printed when both ran
    ("bf16 autocast vs fp32 (stage 2)", "stage 2, fp32 (reference)", "stage 2, bf16 autocast"),
    ("supervised-only logits vs full logits", "stage 2, fp32, full logits", "stage 2, fp32 (reference)"),
    ("channels-last ConvNeXt vs NCHW", "stage 2, fp32, NCHW ConvNeXt", "stage 2, fp32 (reference)"),
    ("feature cache vs towers on the fly (stage 2)", "stage 2, fp32 (reference)", "stage 2, fp32, feature cache"),
    ("feature cache vs towers on the fly (stage 1)", "stage 1, fp32", "stage 1, fp32, feature cache"),
    ("absorbed mining vs direct K/V mining", "stage 2, fp32, direct mining (MGM K/V)", "stage 2, fp32 (reference)"),
    ("SDPA vs eager attention", "stage 2, fp32, eager attention", "stage 2, fp32 (reference)"),
    ("bf16 + cache vs fp32 on the fly (stage 2)", "stage 2, fp32 (reference)", "stage 2, bf16 + feature cache"),
    ("bf16 weights vs bf16 autocast (stage 2)", "stage 2, bf16 autocast", "stage 2, bf16 weights (no autocast)"),
    ("frozen parts bf16 vs fp32 under bf16 autocast (stage 2)", "stage 2, bf16 autocast, frozen parts fp32",
     "stage 2, bf16 autocast"),
    ("frozen parts bf16 vs fp32 under bf16 autocast (stage 1)", "stage 1, bf16 autocast, frozen parts fp32",
     "stage 1, bf16 autocast"),
    ("torch.compile (regional) vs eager, bf16 autocast", "stage 2, bf16 autocast",
     "stage 2, bf16 autocast, torch.compile"),
    ("bf16 + cache vs fp32 on the fly (stage 1)", "stage 1, fp32", "stage 1, bf16 + feature cache"),
]
Flops = dict[tuple[int, bool], dict[str, float]]  # (stage, feature cache) -> model_flops terms


def parse_args() -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each runs every variant once)")
    parser.add_argument("--quick", action="store_true", help=f"only {sorted(QUICK)}")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant (~2 min compile)")
    parser.add_argument("--profile", action="store_true", help="only: where the bf16 step's time goes, per op group")
    parser.add_argument("--breakdown", action="store_true", help="only: the per-part breakdown of a step")
    parser.add_argument("--memory", action="store_true", help="only: saved activation bytes and peak RSS per variant "
                        "(one fresh process per variant)")
    parser.add_argument("--rss-child", metavar="VARIANT", help=argparse.SUPPRESS)  # a --memory child
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        bench, v = Bench(), next(v for v in VARIANTS if v.name == args.rss_child)
        return child_report(lambda: bench.step(v))
    print(env_header(args.threads))
    print(f"model: {BENCH_DESCRIPTION}")
    if args.profile:
        return profile_report(args)
    if args.breakdown:
        return breakdown_report(Bench(), args.repeats)
    if args.memory:
        return memory_report(args)
    bench = Bench(compiled=not (args.quick or args.no_compile))
    m, batch = bench.model, bench.batch
    print(f"batch: 2 x {batch['input_ids'].shape[1]} LLM tokens (512 text ids incl. one <image> expanded to "
          f"{bench.config.num_image_tokens} image tokens, as MGM's input_ids of length 512), "
          f"{int((batch['labels'][:, 1:] != -100).sum())} supervised tokens; fused AdamW")
    print(f"attention: LLM {m.language_model.config._attn_implementation}, CLIP "
          f"{m.vision_lr.clip.config._attn_implementation}; towers frozen")
    variants = [v for v in VARIANTS if (not args.quick or v.name in QUICK) and (bench.compiled or not v.compiled)]
    tower = tower_forward_flops(m, batch)
    flops = {(s, c): model_flops(m, batch, s, {} if c else tower) for s in (1, 2) for c in (False, True)}
    peak = time_rounds(bench, variants, args.repeats)
    print_flops(flops)
    variant_table(variants, flops, peak)
    print("\nratios (step time, higher = the lever helps):")
    by = {v.name: min(v.times["step"]) for v in variants}
    for label, slow, fast in RATIOS:
        if slow in by and fast in by:
            print(f"  {label}: {by[slow] / by[fast]:.2f}x")
    breakdown_report(bench, args.repeats)
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(summary_line("train_step", summary_figures(variants, flops, peak)))


def time_rounds(bench: Bench, variants: list[Variant], repeats: int) -> dict[torch.dtype, float]:
    """A warm-up step of each variant, then `repeats` rounds (matmul peaks, then every variant's step, times
    kept in `Variant.times`); prints and returns the best matmul peak per dtype (GFLOP/s)."""
    peaks: dict[torch.dtype, list[float]] = {torch.float32: [], torch.bfloat16: []}
    for v in variants:  # warm-up (allocator, oneDNN primitives, optimizer state)
        bench.step(v)
    for r in range(repeats):
        for dt in peaks:
            peaks[dt].append(matmul_gflops(dt))
        for v in variants:
            for k, x in bench.step(v).items():
                v.times[k].append(x)
        print(f"  round {r + 1}/{repeats} done (load {os.getloadavg()[0]:.2f})", flush=True)
    peak = {dt: max(x) for dt, x in peaks.items()}
    print(f"\nmatmul peak (2048^2, best of {repeats}): fp32 {peak[torch.float32]:.0f} GFLOP/s, "
          f"bf16 {peak[torch.bfloat16]:.0f} GFLOP/s (all rounds fp32: "
          f"{', '.join(f'{x:.0f}' for x in peaks[torch.float32])})")
    return peak


def print_flops(flops: Flops) -> None:
    """The FLOP formula and each stage's terms."""
    print("\n" + FLOPS_FORMULA)
    for s in (2, 1):
        f = flops[s, False]
        print(f"stage {s} model GFLOP/step: " + ", ".join(f"{k} {f[k] / 1e9:.1f}" for k in
              ("llm_linear", "lm_head", "projector", "mining_linear", "lr_tower", "hr_tower", "params_total",
               "llm_attention", "mining_attention", "total_with_attention", "six_nt_total")))
    print("(feature-cache variants: the towers' FLOPs are not counted, they do not run; the bf16-weights variant's "
          "optimizer updates bf16 parameters — DeepSpeed's bf16 mode adds an fp32 master copy)")


def variant_table(variants: list[Variant], flops: Flops, peak: dict[torch.dtype, float]) -> None:
    """Step time, tokens/s, the three MFU readings and the speed against the first variant, per variant."""
    ref_step = min(variants[0].times["step"])
    print("\n| variant | step s (median) | fwd+bwd s | fwd s | tokens/s | MFU | MFU+attn | MFU 6NT "
          "| step vs reference |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        step = min(v.times["step"])
        f = flops[v.stage, v.cache]  # with the cache, the towers' FLOPs are not counted (they do not run)
        p = peak[v.dtype] * 1e9
        print(f"| {v.name} | {step:.2f} ({median(v.times['step']):.2f}) | {min(v.times['fwd_bwd']):.2f} | "
              f"{min(v.times['fwd']):.2f} | "
              f"{f['tokens'] / step:.0f} | {f['params_total'] / step / p:.2f} | "
              f"{f['total_with_attention'] / step / p:.2f} | {f['six_nt_total'] / step / p:.2f} | "
              f"{ref_step / step:.2f}x |")


def summary_figures(variants: list[Variant], flops: Flops, peak: dict[torch.dtype, float]) -> dict:
    """The SUMMARY figures: matmul peaks, and step / fwd+bwd seconds and MFU per variant."""
    figures: dict = {"peak_gflops": {"fp32": round(peak[torch.float32]), "bf16": round(peak[torch.bfloat16])},
                     "variants": {}}
    for v in variants:
        step, f = min(v.times["step"]), flops[v.stage, v.cache]
        figures["variants"][v.name] = {"step_s": round(step, 3), "fwd_bwd_s": round(min(v.times["fwd_bwd"]), 3),
                                       "mfu": round(f["params_total"] / step / (peak[v.dtype] * 1e9), 3),
                                       "mfu_attn": round(f["total_with_attention"] / step / (peak[v.dtype] * 1e9), 3)}
    return figures


def memory_report(args: argparse.Namespace) -> None:
    """Saved activation bytes (in this process) and peak RSS (a fresh process per variant) of every variant."""
    bench = Bench()
    variants = [v for v in VARIANTS if not v.compiled and (not args.quick or v.name in QUICK)]
    print("| variant | activations kept for backward MiB | peak RSS MiB (fresh process) | step peak over set-up MiB |")
    print("|---|---|---|---|")
    figures = {}
    for v in variants:
        inputs, model = bench.configure(v), bench.model_for(v)
        with autocast_context(None if v.bf16_weights else v.dtype):
            saved = activation_bytes(model, lambda: model(**inputs).loss, inputs["input_ids"].numel(),
                                     torch.bfloat16 if v.bf16_weights else torch.float32)  # residual stream
        rss = rss_in_fresh_process(Path(__file__).resolve(), v.name, args.threads)
        figures[v.name] = {"activations_mib": round(saved / 2**20, 1), **rss}
        print(f"| {v.name} | {saved / 2**20:.0f} | {rss['peak_mib']:.0f} | {rss['step_peak_mib']:.0f} |", flush=True)
    print(f"\nload average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(summary_line("train_step_memory", figures))


def breakdown_report(bench: Bench, repeats: int) -> None:
    """One step cut at module boundaries, for stage 2 fp32 / bf16 and stage 1 fp32 (best of `repeats`)."""
    print("\nbreakdown (best of rounds, seconds):")
    foreach = torch.optim.AdamW(bench.opts[2].param_groups[0]["params"], lr=1e-5, foreach=True)  # fp32 stage-2 params
    rows: dict[str, dict[str, list[float]]] = {}
    cases = [("stage 2 fp32", 2, torch.float32), ("stage 2 bf16", 2, torch.bfloat16),
             ("stage 1 fp32", 1, torch.float32)]
    for name, s, dt in cases:
        bench.breakdown(s, dt, foreach if s == 2 else None)  # warm-up
    for _ in range(repeats):
        for name, s, dt in cases:
            for k, x in bench.breakdown(s, dt, foreach if s == 2 else None).items():
                rows.setdefault(k, {}).setdefault(name, []).append(x)
    print("| part | " + " | ".join(c[0] for c in cases) + " |")
    print("|---|" + "---|" * len(cases))
    for k, per in rows.items():
        print(f"| {k} | " + " | ".join(f"{min(per[c[0]]):.3f}" if c[0] in per else "-" for c in cases) + " |")


def profile_report(args: argparse.Namespace) -> None:
    """Where a bf16 step's time goes, by op group, with the matmuls' achieved GFLOP/s against the peak."""
    bench = Bench()
    peak = max(matmul_gflops(torch.bfloat16) for _ in range(3))
    cases = [Variant("stage 2, bf16 autocast", dtype=torch.bfloat16),
             Variant("stage 2, bf16 weights (no autocast)", dtype=torch.bfloat16, bf16_weights=True)]
    print(f"bf16 matmul peak (2048^2, best of 3): {peak:.0f} GFLOP/s; self CPU time per op group, best of "
          f"{args.repeats} profiled steps (the profiler adds a little overhead). Attention GFLOP: the LLM's causal "
          "attention (4 L d S^2 / 2 per sequence, x3 for fwd + bwd); the CLIP tower's attention is not counted\n")
    for v in cases:
        bench.step(v)  # warm-up
        runs = [profile_groups(lambda: bench.step(v)) for _ in range(args.repeats)]
        best = min(runs, key=lambda groups: sum(t for _, t, _ in groups))
        total = sum(t for _, t, _ in best)
        print(f"{v.name}: {total:.2f} s of op time")
        print("| op group | s | share | GFLOP | GFLOP/s |\n|---|---|---|---|---|")
        for group, t, flops in best:
            if group.startswith("attention"):  # the profiler counts no FLOPs for the fused kernel: the model's
                flops = model_flops(bench.model, bench.batch, v.stage, {})["llm_attention"]  # causal LLM attention
            rate = f"{flops / 1e9 / t:.0f} ({flops / 1e9 / t / peak:.0%} of peak)" if flops else "-"
            print(f"| {group} | {t:.3f} | {t / total:.0%} | {flops / 1e9:.1f} | {rate} |")
        print()


if __name__ == "__main__":
    main()
