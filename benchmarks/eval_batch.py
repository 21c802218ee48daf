"""Batched evaluation throughput: `minigemini eval`'s generation at batch B vs batch 1, in the same run.

    .venv/bin/python benchmarks/eval_batch.py [--batch 8] [--questions 32] [--max-new-tokens 16]
                                              [--rounds 3] [--threads 2] [--model DIR]

Answers a synthetic benchmark (one image per question, prompts of different lengths) through
`minigemini.eval.runner.generate_answers`, the path `minigemini eval` takes, greedily, with batch
size 1 and batch size B, interleaved round by round (best round per variant; the machine may be
shared). The model is the random-init tiny config (`MiniGeminiConfig.tiny()` with the MGM fixture
tokenizer) unless `--model` names a saved model folder. Checks that both batch sizes give the same
answers. Ends with a one-line JSON summary (figures + load average). Not run by CI.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `minigemini` does (before torch loads OpenMP)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from benchmarks.common import env_header, threads, timed  # noqa: E402
from minigemini.eval.benchmarks import EvalItem  # noqa: E402
from minigemini.eval.runner import generate_answers  # noqa: E402
from minigemini.infer.generate import Generator  # noqa: E402

TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "mgm_reference" / "tiny_a" / "tokenizer.model"
WORDS = "what colour is the small shape near the left edge of this picture and how many dots are there".split()


class SyntheticQuestions:
    """A benchmark-like object for `generate_answers`: n questions of growing length, one image each."""

    name, default_max_new_tokens = "synthetic", 16

    def __init__(self, folder: Path, n: int) -> None:
        self.rows = []
        for i in range(n):
            path = folder / f"{i}.png"
            Image.new("RGB", (64 + 8 * (i % 5), 48 + 8 * (i % 3)), (37 * i % 256, 90, 200 - 5 * (i % 30))).save(path)
            question = " ".join(WORDS[: 3 + i % len(WORDS)]) + "?"
            self.rows.append(EvalItem(question_id=f"q{i}", prompt=f"<image>\n{question}", image_paths=[str(path)]))

    def items(self) -> list[EvalItem]:
        return list(self.rows)


def tiny_generator() -> Generator:
    """The random-init tiny model with the fixture SentencePiece tokenizer."""
    from transformers import LlamaTokenizer

    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor

    tok = LlamaTokenizer.from_pretrained(str(TOKENIZER.parent), legacy=False)
    tok.pad_token = tok.unk_token
    processor = MiniGeminiProcessor(tok, MiniGeminiConfig.tiny())
    torch.manual_seed(0)
    return Generator(MiniGeminiForCausalLM(processor.config).eval(), processor)


def run(generator: Generator, bench: SyntheticQuestions, folder: Path, batch: int, max_new: int) -> tuple[float, str]:
    """(seconds, answers file text) of answering every question at `batch`."""
    path = folder / f"answers_b{batch}.jsonl"
    path.unlink(missing_ok=True)
    seconds, _ = timed(lambda: generate_answers(generator, bench, path, batch_size=batch, max_new_tokens=max_new,
                                                progress=False))
    return seconds, path.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", default=None, help="a saved minigemini model folder (default: random tiny)")
    args = parser.parse_args()
    print(env_header(args.threads), flush=True)
    generator = Generator.from_pretrained(args.model, device="cpu", dtype="float32") if args.model \
        else tiny_generator()
    best = {1: float("inf"), args.batch: float("inf")}
    answers: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as tmp, threads(args.threads):
        bench = SyntheticQuestions(Path(tmp), args.questions)
        run(generator, bench, Path(tmp), args.batch, args.max_new_tokens)  # warm-up
        for r in range(args.rounds):
            for size in (1, args.batch):
                seconds, answers[size] = run(generator, bench, Path(tmp), size, args.max_new_tokens)
                best[size] = min(best[size], seconds)
            print(f"  round {r + 1}/{args.rounds}: batch 1 {best[1]:.2f} s, batch {args.batch} "
                  f"{best[args.batch]:.2f} s (best so far; load {os.getloadavg()[0]:.2f})", flush=True)
    same = answers[1] == answers[args.batch]
    qps = {size: args.questions / best[size] for size in best}
    speedup = qps[args.batch] / qps[1]
    print(f"\n{args.questions} questions, up to {args.max_new_tokens} new tokens, greedy, {args.threads} threads")
    for size in best:
        print(f"  batch {size:>3}: {best[size]:7.2f} s  {qps[size]:7.2f} questions/s")
    print(f"  batch {args.batch} / batch 1 throughput: {speedup:.2f}x; same answers: {same}")
    print(json.dumps({"benchmark": "eval_batch", "model": args.model or "tiny (random init)",
                      "questions": args.questions, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
                      "rounds": args.rounds, "seconds": {str(k): round(v, 4) for k, v in best.items()},
                      "questions_per_s": {str(k): round(v, 3) for k, v in qps.items()},
                      "speedup": round(speedup, 3), "same_answers": same,
                      "loadavg": [round(x, 2) for x in os.getloadavg()]}))
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
