"""Benchmark evaluation: official-format readers and scorers (`minigemini.eval.benchmarks`),
answers files (`answers`), results writing (`results`) and `score.score_predictions`.

Kept import-light: import the submodules you need.
"""
