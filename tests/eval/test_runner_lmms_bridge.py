"""lmms-eval bridge: registration, generate_until and loglikelihood on the tiny model.

lmms-eval is an optional extra and is not installed here: the bridge is then exercised against a
minimal stand-in of lmms-eval's model API (base class, registry, Instance). With lmms-eval
installed, the real classes are used instead.
"""

from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass, field

import pytest
import torch
from PIL import Image

from minigemini.infer.generate import GenerationOptions, Generator

BRIDGE = "minigemini.eval.lmms_eval_bridge"


def _fake_lmms_eval() -> dict[str, types.ModuleType]:
    """The few names of lmms-eval's API the bridge touches."""
    pkg, api = types.ModuleType("lmms_eval"), types.ModuleType("lmms_eval.api")
    model_mod, registry, instance = (types.ModuleType(f"lmms_eval.api.{n}") for n in ("model", "registry", "instance"))

    class lmms:  # noqa: N801 - lmms-eval's name
        def __init__(self) -> None:
            self.task_dict: dict = {}
            self.cache_hook = types.SimpleNamespace(add_partial=lambda *a: None)

    registry.MODEL_REGISTRY = {}

    def register_model(*names):
        def decorate(cls):
            assert issubclass(cls, lmms)
            for n in names:
                registry.MODEL_REGISTRY[n] = cls
            return cls
        return decorate

    @dataclass
    class Instance:
        request_type: str
        arguments: tuple
        idx: int
        metadata: dict = field(default_factory=dict)

        @property
        def args(self):
            return self.arguments

    model_mod.lmms, registry.register_model, instance.Instance = lmms, register_model, Instance
    pkg.api, api.model, api.registry, api.instance = api, model_mod, registry, instance
    return {"lmms_eval": pkg, "lmms_eval.api": api, "lmms_eval.api.model": model_mod,
            "lmms_eval.api.registry": registry, "lmms_eval.api.instance": instance}


@pytest.fixture()
def lmms_api(monkeypatch):
    """(bridge module, registry module, Instance class): the real lmms-eval if installed, else the stand-in."""
    try:
        import lmms_eval.api.instance  # noqa: F401
    except ImportError:
        for name, module in _fake_lmms_eval().items():
            monkeypatch.setitem(sys.modules, name, module)
    sys.modules.pop(BRIDGE, None)
    bridge = importlib.import_module(BRIDGE)
    yield bridge, sys.modules["lmms_eval.api.registry"], sys.modules["lmms_eval.api.instance"].Instance
    sys.modules.pop(BRIDGE, None)


def _request(Instance, kind: str, args: tuple, idx: int):
    return Instance(request_type=kind, arguments=args, idx=idx,
                    metadata={"task": args[4], "doc_id": args[3], "repeats": 1})


def test_bridge_generate_until_matches_generator(lmms_api, tiny_model, tiny_processor):
    bridge, registry, Instance = lmms_api
    assert bridge.HAVE_LMMS_EVAL and registry.MODEL_REGISTRY["minigemini"] is bridge.MiniGeminiLMMS
    generator = Generator(tiny_model, tiny_processor)
    lm = bridge.MiniGeminiLMMS(generator=generator, batch_size=2)
    docs = [{"image": Image.new("RGB", (40, 30), (200, 0, 0))}, {"image": Image.new("RGB", (30, 50), (0, 0, 200))},
            {"image": None}]
    lm.task_dict = {"fake_task": {"test": docs}}
    gen_kwargs = {"until": ["\n\n"], "max_new_tokens": 5, "temperature": 0}
    to_visual = lambda doc: [doc["image"]] if doc["image"] is not None else []  # noqa: E731
    questions = ["Is there a red square?", "<image>\nWhat colour?", "Just text."]
    requests = [_request(Instance, "generate_until", (q, dict(gen_kwargs), to_visual, i, "fake_task", "test"), i)
                for i, q in enumerate(questions)]
    answers = lm.generate_until(requests)
    prompts = [generator.question_prompt("<image>\nIs there a red square?"),
               generator.question_prompt("<image>\nWhat colour?"), generator.question_prompt("Just text.")]
    expected = [generator.generate([p], [im], GenerationOptions(max_new_tokens=5, stop_strings=("\n\n",)))[0]
                for p, im in zip(prompts, [[docs[0]["image"]], [docs[1]["image"]], []])]
    assert answers == expected
    with pytest.raises(NotImplementedError):
        lm.generate_until_multi_round(requests)


def test_bridge_loglikelihood(lmms_api, tiny_model, tiny_processor):
    bridge, _, Instance = lmms_api
    generator = Generator(tiny_model, tiny_processor)
    lm = bridge.MiniGeminiLMMS(generator=generator)
    image = Image.new("RGB", (40, 40), (0, 150, 0))
    lm.task_dict = {"t": {"val": [{"image": image}]}}
    context = "Is the square green?"
    prompt = generator.question_prompt("<image>\n" + context)
    batch = generator.encode([prompt], [[image]])
    with torch.inference_mode():
        logp = tiny_model(**batch).logits[0, -1].log_softmax(-1)
    ctx_ids = tiny_processor.tokenize(prompt, add_bos=True)
    # a continuation that tokenizes to exactly one id after the prompt: its log-prob is known
    for token_id in logp.argsort(descending=True).tolist():
        text = tiny_processor.tokenizer.decode([token_id])
        if text.strip() and tiny_processor.tokenize(prompt + text, add_bos=True) == ctx_ids + [token_id]:
            break
    else:
        pytest.fail("no single-token continuation found")
    args = (context, text, lambda doc: [doc["image"]], 0, "t", "val")
    (logprob, greedy), (empty_lp, empty_greedy) = lm.loglikelihood(
        [_request(Instance, "loglikelihood", args, 0), _request(Instance, "loglikelihood", (context, "", *args[2:]), 1)])
    assert logprob == pytest.approx(float(logp[token_id]), abs=1e-4)
    assert greedy == (token_id == int(logp.argmax()))
    assert (empty_lp, empty_greedy) == (0.0, True)


def test_bridge_without_lmms_eval_refuses_clearly(monkeypatch):
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # import fails as if not installed
    sys.modules.pop(BRIDGE, None)
    try:
        bridge = importlib.import_module(BRIDGE)
        assert not bridge.HAVE_LMMS_EVAL
        with pytest.raises(ImportError, match="lmms-eval is not installed"):
            bridge.MiniGeminiLMMS(pretrained="x")
    finally:
        sys.modules.pop(BRIDGE, None)
