"""benchmarks/data_pipeline.py --stages: the timed stage chains give each way's own tensors bit for bit (so the
breakdown times what the ways do), and the exact-path ceiling is MGM's time over decode + PIL resize."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from minigemini import MiniGeminiConfig
from minigemini.data.image_pipeline import FastImagePipeline

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "data_pipeline.py"
spec = importlib.util.spec_from_file_location("bench_data_pipeline", SCRIPT)
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)
from benchmarks import pipeline_stages  # noqa: E402  (importable once the script put the repo on the path)

# pytest resets warning filters per test: torchvision's decoder deprecation notice says nothing here
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding and encoding capabilities:DeprecationWarning")


@pytest.mark.parametrize("hd,lr_from_hr", [(False, True), (True, True), (False, False)])
def test_stage_chains_reproduce_each_way(tmp_path: Path, hd: bool, lr_from_hr: bool) -> None:
    cfg = MiniGeminiConfig.tiny(hd=hd, lr_from_hr=lr_from_hr)
    paths = bench.write_images(tmp_path, [(100, 70), (60, 90), (64, 64)], 3)
    clip = bench.mgm_clip(cfg)
    for path in paths:
        mgm_seconds, mgm = pipeline_stages.mgm_stages(cfg, clip, path)
        fast_seconds, fast = pipeline_stages.fast_stages(FastImagePipeline(cfg), path)
        for got, way in ((mgm, bench.mgm_loader(cfg)(path)), (fast, FastImagePipeline(cfg)(path))):
            assert got.keys() == way.keys()
            assert all(torch.equal(got[k], way[k]) for k in way)
        assert ("HD views" in mgm_seconds) == hd and ("HD views" in fast_seconds) == hd
        assert {"decode", "PIL bicubic resize"} <= mgm_seconds.keys() & fast_seconds.keys()
        assert (f"PIL bicubic resize (LR {cfg.image_size})" in fast_seconds) == (not lr_from_hr)


def test_report_ceiling_is_mgm_over_decode_plus_resize(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = MiniGeminiConfig.tiny()
    paths = bench.write_images(tmp_path, [(100, 70)], 2)
    ways = {"mgm": bench.mgm_loader(cfg), "fast": FastImagePipeline(cfg)}
    ms = pipeline_stages.measure(cfg, bench.mgm_clip(cfg), ways, paths, rounds=1)
    figures = pipeline_stages.report("normal", ms)
    total = pipeline_stages.TOTAL
    floor = min(ms["mgm"]["decode"], ms["fast"]["decode"]) + ms["mgm"]["PIL bicubic resize"]
    assert figures["exact_floor_ms"] == round(floor, 2)
    assert figures["ceiling_exact_path_vs_mgm"] == round(ms["mgm"][total] / floor, 2)
    assert figures["pil_resize_share_of_mgm"] == round(ms["mgm"]["PIL bicubic resize"] / ms["mgm"][total], 3)
    out = capsys.readouterr().out
    assert f"ceiling for an exact path (MGM's pixels): {ms['mgm'][total] / floor:.2f}x MGM's way" in out
    assert "| mgm | PIL bicubic resize |" in out and "| fast | normalise |" in out
