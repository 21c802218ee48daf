"""The demo end to end at a toy size (the real sizes run in `make demo`), and its report pieces."""

from __future__ import annotations

import json
from pathlib import Path

from minigemini.cli import main
from minigemini.demo_report import chance_levels, results_table


def test_chance_levels_and_table() -> None:
    meta = {"task_vocabulary": {"detail_color": ["a"] * 6, "detail_count": ["b"] * 4,
                                "control_color": ["c"] * 6, "control_shape": ["d"] * 3}}
    chance = chance_levels(meta)
    assert round(chance["detail_color"], 3) == round(100 / 6, 3)
    assert chance["detail"] == (100 / 6 + 100 / 4) / 2  # mean of the two detail tasks
    assert chance["control"] == (100 / 6 + 100 / 3) / 2
    table = results_table({"mini-gemini": {"detail": 90.0}, "lr-only": {"detail": 20.0}}, chance)
    assert "| detail questions (HR needed) | 90.0 | 20.0 | 20.8 |" in table


def test_demo_runs_end_to_end_at_toy_size(tmp_path: Path, capfd, monkeypatch) -> None:
    monkeypatch.setenv("MINIGEMINI_VERBOSE", "0")  # restored afterwards (the CLI sets it for launched ranks)
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--num-train", "16", "--num-test", "4",
                 "--stage1-epochs", "1", "--stage2-epochs", "1", "--batch-size", "8"])
    assert code == 0
    captured = capfd.readouterr()
    printed = captured.out
    _check_quiet_output(printed, captured.err, out)
    results = json.loads((out / "results.json").read_text())
    assert set(results["scores"]) == {"mini-gemini", "lr-only"}
    for name, scores in results["scores"].items():
        assert set(scores) == {"detail", "control", "detail_color", "detail_count", "control_color", "control_shape"}
        preds = (out / f"predictions_{name}.jsonl").read_text().splitlines()
        assert len(preds) == 4 * 4  # 4 held-out images x 4 questions
        correct = sum(json.loads(line)["correct"] for line in preds)
        assert abs(scores["detail"] + scores["control"] - 100.0 * correct / 8) < 1e-6  # 8 questions per type
    assert results["losses"]["mini-gemini"]["finetune"], "no loss logged for stage 2"
    assert (out / "demo_results.png").stat().st_size > 10_000
    svg = (out / "demo_results.svg").read_text()
    for text in ("tiny-dot colour", "big-shape kind", "chance", "exact-match accuracy (%)", "optimizer step"):
        assert text in svg, text
    assert "detail_color" not in svg  # no internal keys as labels
    # the baseline really has no HR path, the full model does
    assert json.loads((out / "runs" / "lr-only" / "finetune" / "config.json").read_text())["use_hr"] is False
    assert json.loads((out / "runs" / "mini-gemini" / "finetune" / "config.json").read_text())["use_hr"] is True
    # stage 2 read the frozen towers' features from the cache built on the stage-1 model (every train image)
    from minigemini.config import load_config

    for name in ("mini-gemini", "lr-only"):
        cfg = load_config(out / "runs" / name / "finetune" / "run_config.yaml")
        assert cfg.data.feature_cache == str(out / "feature_cache" / name)
        assert len(json.loads((out / "feature_cache" / name / "index.json").read_text())["images"]) == 16
    assert load_config(out / "runs" / "mini-gemini" / "pretrain" / "run_config.yaml").data.feature_cache is None


def _check_quiet_output(printed: str, err: str, out: Path) -> None:
    """Phases numbered 1..10 once each, one line each; the table; both models' folders and chat commands;
    no dependency noise (warnings, Trainer log dicts, HF loading bars)."""
    lines = printed.splitlines()
    phase_lines = [line for line in lines if line.startswith("[")]
    assert [line.split("]")[0] + "]" for line in phase_lines] == [f"[{i}/10]" for i in range(1, 11)]
    assert "[3/10] mini-gemini stage 1 (captions): 2 steps in" in printed
    assert "[10/10] lr-only evaluation: " in printed
    assert "| held-out accuracy (%) | mini-gemini | lr-only | chance |" in printed
    test = json.loads((out / "data" / "test.json").read_text())
    first = next(r for r in test if r["question_type"] == "detail")
    prompt = first["conversations"][0]["value"].replace("<image>", "").strip()
    for name in ("mini-gemini", "lr-only"):
        model = out / "runs" / name / "finetune"
        assert f"  {name}: {model}" in lines
        command = f"    minigemini chat --model {model} --image {out / 'data' / first['image']} --prompt '{prompt}'"
        assert command in lines, command
    assert lines[-1].startswith(f"results: {out / 'results.md'}")
    for noise in ("FutureWarning", "return forward_call", "{'loss'", "Setting accelerator to CPU", "Loading weights",
                  "Writing model shards", "trainable parts", "gemm_4bit"):
        assert noise not in printed and noise not in err, noise
    assert len(lines) <= 30, printed
