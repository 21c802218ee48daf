"""Fixtures for the data tests: tiny tokenizers per model family, processors, image files."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from minigemini import MiniGeminiConfig, MiniGeminiProcessor
from minigemini.data.tokenizer import tiny_tokenizer

_TOKENIZERS: dict = {}


def family_processor(family: str, **config_overrides) -> MiniGeminiProcessor:
    """A processor for `MiniGeminiConfig.tiny()` over the tiny `family` tokenizer (trained once per session)."""
    if family not in _TOKENIZERS:
        _TOKENIZERS[family] = tiny_tokenizer(family)
    tok = _TOKENIZERS[family]
    vocab = len(tok) + (0 if "<image>" in tok.get_vocab() else 1)
    cfg = MiniGeminiConfig.tiny(vocab_size=vocab, image_token_id=None, **config_overrides)
    return MiniGeminiProcessor(tok, cfg)


@pytest.fixture()
def make_processor():
    return family_processor


def write_image(path: Path, size=(40, 30), color=(200, 30, 30), mode: str = "RGB") -> Path:
    """Save a solid image (any PIL mode) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = color if mode in ("RGB", "RGBA", "CMYK") else color[0]
    Image.new(mode, size, fill).save(path)
    return path


def conv(*turns: str, first: str = "human") -> list[dict]:
    """LLaVA turns alternating human/gpt from the given texts."""
    roles = ["human", "gpt"] if first == "human" else ["gpt", "human"]
    return [{"from": roles[i % 2], "value": t} for i, t in enumerate(turns)]


@pytest.fixture()
def image_file():
    return write_image


@pytest.fixture()
def turns():
    return conv


@pytest.fixture(scope="session")
def supervised_runs():
    """`supervised_runs(ids, labels)`: the contiguous runs of supervised ids (each label must equal its id)."""
    from minigemini.model.constants import IGNORE_INDEX

    def runs_of(ids, labels):
        runs, cur = [], []
        for i, lab in zip(ids, labels):
            if lab != IGNORE_INDEX:
                assert lab == i
                cur.append(i)
            elif cur:
                runs.append(cur)
                cur = []
        return runs + ([cur] if cur else [])

    return runs_of
