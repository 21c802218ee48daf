"""lmms-eval bridge against the REAL lmms-eval 0.7.x: registry entry point, generate_until, loglikelihood.

The end-to-end runs of `python -m lmms_eval` (local task YAMLs + local data) are in
test_lmms_eval_cli.py; these tests drive the bridge class in-process with lmms-eval's own Instance.
"""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from PIL import Image

pytest.importorskip("lmms_eval", reason="lmms-eval is the `eval` extra (make test installs it)")
from lmms_eval.api.instance import Instance  # noqa: E402

from minigemini.data.templates import tokenize_conversation  # noqa: E402
from minigemini.eval import lmms_eval_bridge as bridge  # noqa: E402
from minigemini.infer.generate import GenerationOptions, Generator  # noqa: E402


def _request(kind: str, args: tuple, idx: int = 0) -> Instance:
    return Instance(request_type=kind, arguments=args, idx=idx, metadata={"task": "t", "doc_id": idx, "repeats": 1})


def test_entry_point_registers_the_model():
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    assert MODEL_REGISTRY_V2.resolve("minigemini").class_path == "minigemini.eval.lmms_eval_bridge.MiniGeminiLMMS"
    assert get_model("minigemini") is bridge.MiniGeminiLMMS
    assert bridge.lmms_eval_manifest().model_id == "minigemini"


def test_generate_until_batched_matches_generator(tiny_model, tiny_processor):
    generator = Generator(tiny_model, tiny_processor)
    lm = bridge.MiniGeminiLMMS(generator=generator, batch_size=2)
    docs = [{"image": Image.new("RGB", (40, 30), (200, 0, 0))}, {"image": Image.new("RGB", (30, 50), (0, 0, 200))},
            {"image": None}]
    lm.task_dict = {"t": {"test": docs}}
    gen_kwargs = {"until": ["\n\n"], "max_new_tokens": 5, "temperature": 0}
    to_visual = lambda doc: [doc["image"]] if doc["image"] is not None else []  # noqa: E731
    questions = ["Is there a red square?", "<image>\nWhat colour?", "Just text."]
    requests = [_request("generate_until", (q, dict(gen_kwargs), to_visual, i, "t", "test"), i)
                for i, q in enumerate(questions)]
    answers = lm.generate_until(requests)
    prompts = [generator.question_prompt("<image>\nIs there a red square?"),
               generator.question_prompt("<image>\nWhat colour?"), generator.question_prompt("Just text.")]
    expected = [generator.generate([p], [im], GenerationOptions(max_new_tokens=5, stop_strings=("\n\n",)))[0]
                for p, im in zip(prompts, [[docs[0]["image"]], [docs[1]["image"]], []])]
    assert answers == expected
    with pytest.raises(NotImplementedError):
        lm.generate_until_multi_round(requests)


def _independent_loss(model, processor, template: str, question: str, answer: str, images: list) -> float:
    """The model's own training loss (labels from the training tokenizer) for `answer` after `question`."""
    ids, labels = tokenize_conversation([{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
                                        template, processor)
    pixels = processor.preprocess_images(images) if images else {}
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]), **pixels).loss)


def test_loglikelihood_returns_the_loss_as_llava_does(tiny_model, tiny_processor):
    generator = Generator(tiny_model, tiny_processor)
    lm = bridge.MiniGeminiLMMS(generator=generator)
    image = Image.new("RGB", (40, 40), (0, 150, 0))
    lm.task_dict = {"t": {"val": [{"image": image, "answer": " no"}]}}
    to_visual = lambda doc: [doc["image"]]  # noqa: E731
    requests = [_request("loglikelihood", ("Is the square green?", " yes", to_visual, 0, "t", "val"), 0),
                _request("loglikelihood", ("Is the square green?", lambda doc: doc["answer"], to_visual, 0, "t", "val"),
                         1),
                _request("loglikelihood", ("", " yes"), 2)]  # mutual information: lmms-eval sends 2 args
    results = lm.loglikelihood(requests)
    (loss_yes, _), (loss_no, _), (loss_uncond, greedy_uncond) = results
    from lmms_eval.api.instance import unwrap_generation_output

    # lmms-eval's evaluator str()s responses it does not know; ours must reach the scorer as the tuple
    assert unwrap_generation_output(results[0]) == ((loss_yes, results[0][1]), None)
    template = generator.template_name
    q = "<image>\nIs the square green?"
    assert loss_yes == pytest.approx(_independent_loss(tiny_model, tiny_processor, template, q, " yes", [image]),
                                     rel=1e-5)
    assert loss_no == pytest.approx(_independent_loss(tiny_model, tiny_processor, template, q, " no", [image]),
                                    rel=1e-5)
    assert loss_uncond == pytest.approx(_independent_loss(tiny_model, tiny_processor, template, "", " yes", []),
                                        rel=1e-5)
    assert loss_yes > 0 and loss_no > 0 and loss_yes != loss_no and isinstance(greedy_uncond, bool)
    with pytest.raises(ValueError, match="empty continuation"):
        lm.loglikelihood([_request("loglikelihood", ("Is it?", " ", to_visual, 0, "t", "val"))])


def test_loglikelihood_greedy_flag(tiny_model, tiny_processor):
    """is_greedy is True exactly when the answer (+ end of turn) is what greedy decoding produces."""
    generator = Generator(tiny_model, tiny_processor)
    lm = bridge.MiniGeminiLMMS(generator=generator)
    prompt = generator.question_prompt("Hello")
    batch = generator.encode([prompt])
    with torch.inference_mode():
        first = int(tiny_model(**batch).logits[0, -1].argmax())
    assert lm.score("Hello", tiny_processor.tokenizer.decode([first]) + "zzqx")[1] is False
    loss, greedy = lm.score("Hello", " the")
    assert loss > 0 and isinstance(greedy, bool)


def test_batch_size_and_model_args():
    assert bridge.parse_batch_size(4) == 4 and bridge.parse_batch_size("8") == 8
    assert bridge.parse_batch_size("auto") is None and bridge.parse_batch_size("auto:3") is None
    for bad in ("0", "-1", "big", "auto:x"):
        with pytest.raises(ValueError, match="batch_size"):
            bridge.parse_batch_size(bad)


def test_auto_batch_size_halves_on_out_of_memory(tiny_model, tiny_processor):
    lm = bridge.MiniGeminiLMMS(generator=Generator(tiny_model, tiny_processor), batch_size="auto", max_batch_size=8)
    assert lm.batch_size == 8
    seen: list[list[int]] = []

    def run(chunk: list[int]) -> None:
        if len(chunk) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append(chunk)

    lm._in_batches(list(range(7)), run)
    assert seen == [[0, 1], [2, 3], [4, 5], [6]] and lm.batch_size == 2
    fixed = bridge.MiniGeminiLMMS(generator=Generator(tiny_model, tiny_processor), batch_size=8)
    with pytest.raises(RuntimeError, match="out of memory"):
        fixed._in_batches(list(range(7)), run)


def test_create_from_arg_string_merges_cli_arguments(tiny_model_dir):
    cls = bridge.MiniGeminiLMMS
    lm = cls.create_from_arg_string(f"pretrained={tiny_model_dir},batch_size=3,dtype=float32",
                                    {"batch_size": 1, "max_batch_size": None, "device": "cpu"})
    assert lm.batch_size == 3 and lm.device.type == "cpu" and lm.generator.model.dtype == torch.float32
    with pytest.raises(bridge.ModelLoadError, match="unknown --model_args") as info:
        cls.create_from_arg_string(f"pretrained={tiny_model_dir},batchsize=3", {})
    assert info.value.code == 2
    with pytest.raises(bridge.ModelLoadError, match="cannot load model") as info:
        cls.create_from_arg_string("pretrained=/nowhere/model", {"batch_size": 1})
    assert info.value.code == 2 and isinstance(info.value, SystemExit)
    with pytest.raises(bridge.ModelLoadError, match="batch_size='many'"):
        cls.create_from_arg_string(f"pretrained={tiny_model_dir},batch_size=many", {})
    with pytest.raises(bridge.ModelLoadError, match="max_new_tokens='lots'"):
        cls.create_from_arg_string(f"pretrained={tiny_model_dir},max_new_tokens=lots", {})
    with pytest.raises(bridge.ModelLoadError, match="max_batch_size='auto'"):
        cls.create_from_arg_string(f"pretrained={tiny_model_dir},batch_size=auto,max_batch_size=auto", {})


def test_bridge_without_lmms_eval_refuses_clearly(monkeypatch):
    name = "minigemini.eval.lmms_eval_bridge"
    monkeypatch.setitem(sys.modules, "lmms_eval", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "lmms_eval.api", None)
    monkeypatch.setitem(sys.modules, "lmms_eval.api.model", None)
    monkeypatch.delitem(sys.modules, name)
    fresh = importlib.import_module(name)
    try:
        assert not fresh.HAVE_LMMS_EVAL
        with pytest.raises(ImportError, match="lmms-eval is not installed"):
            fresh.MiniGeminiLMMS(pretrained="x")
    finally:
        sys.modules[name] = bridge
