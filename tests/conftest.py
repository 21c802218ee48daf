"""Shared test fixtures: tiny random-init models and a small local tokenizer (nothing downloads)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does: before torch loads OpenMP

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
MGM_TINY_A = FIXTURES / "mgm_reference" / "tiny_a"


@pytest.fixture(scope="session")
def sp_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the MGM fixture's SentencePiece tokenizer (vocab 512, Llama-style)."""
    if not (MGM_TINY_A / "tokenizer.model").exists():
        pytest.skip(f"fixture tokenizer missing: {MGM_TINY_A}")
    folder = tmp_path_factory.mktemp("sp_tokenizer")
    shutil.copy(MGM_TINY_A / "tokenizer.model", folder / "tokenizer.model")
    return folder


@pytest.fixture()
def sp_tokenizer(sp_tokenizer_dir: Path):
    """Fresh Llama-style tokenizer (pad = unk = 0, bos 1, eos 2), legacy=False as MGM's v1 recipe."""
    from transformers import LlamaTokenizer

    tok = LlamaTokenizer.from_pretrained(str(sp_tokenizer_dir), legacy=False)
    tok.pad_token = tok.unk_token
    return tok


@pytest.fixture()
def tiny_processor(sp_tokenizer):
    """Processor for `MiniGeminiConfig.tiny()` (image token id 512 = the tokenizer's next id)."""
    from minigemini import MiniGeminiConfig, MiniGeminiProcessor

    return MiniGeminiProcessor(sp_tokenizer, MiniGeminiConfig.tiny())


@pytest.fixture()
def tiny_model(tiny_processor):
    """A random-init tiny model (seeded) in eval mode."""
    from minigemini import MiniGeminiForCausalLM

    torch.manual_seed(0)
    return MiniGeminiForCausalLM(tiny_processor.config).eval()


@pytest.fixture()
def tiny_model_dir(tmp_path: Path, tiny_model, tiny_processor) -> Path:
    """The tiny model + processor saved to a local folder (loadable with from_pretrained)."""
    out = tmp_path / "tiny_model"
    tiny_model.save_pretrained(out)
    tiny_processor.save_pretrained(out)
    return out
