"""Activation memory of a training step, measured on small proxies of the real model and extrapolated.

What autograd keeps for the backward pass is exactly the set of tensors the forward ops save, so
`saved_tensor_bytes` counts them (each storage once, parameters excluded) with
`torch.autograd.graph.saved_tensors_hooks`. No per-architecture formula: the proxy IS the model's own
code (any HF causal LM, the towers, mining, projector, LoRA) with 1 or 2 LLM layers and one sample.
With SDPA/flash attention nothing saved grows with seq², so the bytes are linear in the layer count,
the token count and the supervised-token count; three proxy forwards give the three slopes:

    bytes(batch, seq, sup) = batch * (seq * L * per_layer_token + sup * per_supervised_token + per_sample)

`per_sample` is what does not scale with the text (the trainable connector over the image's tokens).
With gradient checkpointing a layer keeps only its input (hidden_size values per token, in the compute
dtype), and one layer's full activations live again while it is recomputed in the backward pass.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch

from minigemini.data.templates import IGNORE_INDEX
from minigemini.model import MiniGeminiConfig, MiniGeminiForCausalLM

PROXY_TEXT_TOKENS = 48  # text tokens of a proxy sample, beside the image's tokens


def saved_tensor_bytes(run: Callable[[], Any], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the tensors autograd saves while `run()` executes (each storage once; the storages of
    `exclude`, e.g. the parameters, not counted). The graph stays alive until the count is taken."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run()
    del out
    return sum(seen.values())


@dataclass(frozen=True)
class ActivationModel:
    """Measured slopes (bytes) of one model under one stage and precision; `estimate` extrapolates."""

    per_layer_token: float
    per_supervised_token: float
    per_sample: float
    num_layers: int
    checkpoint_per_layer_token: float  # what a checkpointed layer keeps: its input

    def estimate(self, batch: int, seq_len: int, supervised: int, checkpointing: bool = False) -> int:
        """Bytes saved for backward by a step on `batch` rows of `seq_len` tokens, `supervised` of them
        labelled per row; with checkpointing, + one layer recomputed at a time in the backward pass."""
        layer = self.checkpoint_per_layer_token if checkpointing else self.per_layer_token
        per_row = seq_len * self.num_layers * layer + supervised * self.per_supervised_token + self.per_sample
        if checkpointing:
            per_row += seq_len * self.per_layer_token
        return int(batch * per_row)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters created inside are `dtype` (a bf16 proxy never exists in fp32, halving its memory)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def proxy_model(config: MiniGeminiConfig, layers: int, dtype: torch.dtype, attn: str = "sdpa",
                prepare: Callable[[MiniGeminiForCausalLM], Any] | None = None) -> MiniGeminiForCausalLM:
    """The model of `config` with `layers` LLM layers, random weights in `dtype`; `prepare(model)` sets
    what trains (stage table, LoRA) as the run would."""
    cfg = copy.deepcopy(config)
    text = cfg.text_config
    text.num_hidden_layers = layers
    if isinstance(getattr(text, "layer_types", None), list):
        text.layer_types = text.layer_types[:layers]
    with default_dtype(dtype):
        model = MiniGeminiForCausalLM(cfg)
    model.set_attn_implementation(attn)
    if prepare is not None:
        prepare(model)
    return model


def proxy_batch(model: MiniGeminiForCausalLM, supervised: int, text_tokens: int = PROXY_TEXT_TOKENS,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """One sample: BOS, the image's N ids, `text_tokens` text ids; the last `supervised` labelled."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    vocab = cfg.text_config.vocab_size
    n_img = cfg.num_image_tokens
    text = torch.randint(3, vocab, (1, text_tokens), generator=gen)
    ids = torch.cat([torch.ones(1, 1, dtype=torch.long), torch.full((1, n_img), cfg.image_token_id), text], dim=1)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, ids.shape[1] - supervised:] = ids[:, ids.shape[1] - supervised:]
    dtype = next(model.projector.parameters()).dtype
    views = cfg.num_views
    lr_shape = (1, views, 3, cfg.image_size, cfg.image_size) if views > 1 else (1, 3, cfg.image_size, cfg.image_size)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "images": torch.randn(lr_shape, generator=gen).to(dtype)}
    if cfg.use_hr:
        side = cfg.image_size_aux
        batch["images_aux"] = torch.randn((1, 3, side, side), generator=gen).to(dtype)
    return batch


def measure_step(model: MiniGeminiForCausalLM, batch: dict[str, torch.Tensor]) -> int:
    """Saved-for-backward bytes of one training forward (loss) of `model` on `batch`."""
    model.train()
    return saved_tensor_bytes(lambda: model(**batch).loss, exclude=list(model.parameters()) + list(model.buffers()))


def measure_activation_model(config: MiniGeminiConfig, dtype: torch.dtype, attn: str = "sdpa",
                             prepare: Callable[[MiniGeminiForCausalLM], Any] | None = None,
                             text_tokens: int = PROXY_TEXT_TOKENS) -> ActivationModel:
    """Fit `ActivationModel` from forwards of 1- and 2-layer proxies (same widths, towers, connector)."""
    one = proxy_model(config, 1, dtype, attn, prepare)
    sup_all, sup_min = text_tokens, 2
    m1_all = measure_step(one, proxy_batch(one, sup_all, text_tokens))
    m1_min = measure_step(one, proxy_batch(one, sup_min, text_tokens))
    del one
    two = proxy_model(config, 2, dtype, attn, prepare)
    m2_all = measure_step(two, proxy_batch(two, sup_all, text_tokens))
    del two
    seq = 1 + config.num_image_tokens + text_tokens
    per_layer_token = (m2_all - m1_all) / seq
    per_supervised = (m1_all - m1_min) / (sup_all - sup_min)
    per_sample = m1_all - per_layer_token * seq - per_supervised * sup_all
    elem = torch.finfo(dtype).bits // 8
    return ActivationModel(per_layer_token=per_layer_token, per_supervised_token=per_supervised,
                           per_sample=per_sample, num_layers=config.text_config.num_hidden_layers,
                           checkpoint_per_layer_token=float(config.text_config.hidden_size * elem))
