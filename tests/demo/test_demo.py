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


def test_demo_runs_end_to_end_at_toy_size(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--num-train", "16", "--num-test", "4",
                 "--stage1-epochs", "1", "--stage2-epochs", "1", "--batch-size", "8"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| held-out accuracy (%) | mini-gemini | lr-only | chance |" in printed
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
