"""Fixtures for the training tests: a small synthetic set, one tiny base model, config helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY_PRETRAIN = REPO / "configs" / "tiny" / "pretrain.yaml"


def tiny_overrides(out: Path, data: Path, base: Path, **extra: object) -> list[str]:
    """Overrides that point a configs/tiny/*.yaml preset at test folders (fast: no tensorboard, fp32);
    `training__max_steps=3` stands for `training.max_steps=3`."""
    items = {"training.output_dir": str(out), "data.train": f"[{data}]", "model.tiny.dir": str(base),
             "training.report_to": "[]", "training.precision": "fp32", "training.logging_steps": 1,
             "training.per_device_train_batch_size": 2}
    items.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v}" for k, v in items.items()]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train fastest on one thread (and do not stall when the CPU is shared); restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def overrides():
    """The `tiny_overrides` helper."""
    return tiny_overrides


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 train images (12 caption records, 48 VQA records), HR 128 px."""
    from minigemini.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, num_train=12, num_test=2, image_size=128, lr_factor=4, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path) -> Path:
    """The tiny preset's base (LLM + tokenizer + towers) written once per session."""
    from minigemini.train.tiny_base import ensure_tiny_base

    folder = tmp_path_factory.mktemp("tiny") / "base"
    return ensure_tiny_base(folder, [synthetic_dir / "captions.json", synthetic_dir / "train.json"])


@pytest.fixture(scope="session")
def stage1_dir(tmp_path_factory: pytest.TempPathFactory, synthetic_dir: Path, tiny_base: Path) -> Path:
    """A short stage-1 run (its mm_projector.safetensors feeds the stage-2 tests)."""
    from minigemini.config import load_config
    from minigemini.train.run import run_training

    out = tmp_path_factory.mktemp("stage1") / "run"
    cfg = load_config(TINY_PRETRAIN, tiny_overrides(out, synthetic_dir / "captions.json", tiny_base,
                                                     training__max_steps=3, training__save_strategy="no"))
    run_training(cfg)
    return out


@pytest.fixture()
def copy_synthetic(tmp_path: Path, synthetic_dir: Path):
    """A private copy of the synthetic set (for tests that damage it)."""
    def make() -> Path:
        dst = tmp_path / "synthetic_copy"
        shutil.copytree(synthetic_dir, dst)
        return dst
    return make


@pytest.fixture(scope="session")
def crash_at():
    """`crash_at(step)`: a TrainerCallback that kills the run (KeyboardInterrupt) at the end of `step`,
    after the checkpoint of the step before, as a killed process would stop."""
    from transformers import TrainerCallback

    class CrashAt(TrainerCallback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.step:
                raise KeyboardInterrupt(f"simulated kill at step {self.step}")

    return CrashAt
