"""Batched generation gives the answers batch size 1 gives: left padding, per-row stops, images per row.

Greedy decoding on the tiny model; prompts of different lengths with 0, 1 or 2 images; a stop string
chosen so that one row stops after a few tokens while others run to the token limit.
"""

from __future__ import annotations

import pytest
from PIL import Image

from minigemini.eval.runner import generate_answers
from minigemini.infer.generate import GenerationOptions

QUESTIONS = [("<image>\nWhat is in the picture?", [0]),
             ("Say something long about the weather in spring and summer, please, in many words.", []),
             ("<image>\n<image>\nCompare the two.", [1, 0]),
             ("Hi", []),
             ("<image>\nColour of the big square in the middle of this picture?", [1])]


def _rows(generator, image_files):
    prompts = [generator.question_prompt(q) for q, _ in QUESTIONS]
    return prompts, [[image_files[i] for i in idx] for _, idx in QUESTIONS]


def _first_word(generator, prompt: str, images: list) -> str:
    """The first generated token (greedy, alone) that is a word of 2+ letters: a stop string that ends this row."""
    import torch

    batch = generator.encode([prompt], [images])
    with torch.inference_mode():
        out = generator.model.generate(**batch, **generator.generation_kwargs(GenerationOptions(max_new_tokens=8)))
    pieces = [generator.processor.tokenizer.decode([t]).strip() for t in out[0, batch["input_ids"].shape[1]:]]
    return next(p for p in pieces if len(p) >= 2 and p.isalpha())


def test_batch_equals_batch_one_with_rows_stopping_at_different_times(generator, image_files):
    prompts, images = _rows(generator, image_files)
    assert len({len(generator.processor.tokenize(p)) for p in prompts}) == len(prompts)  # all lengths differ
    stops = (_first_word(generator, prompts[1], images[1]), _first_word(generator, prompts[3], images[3]))
    options = GenerationOptions(max_new_tokens=8, stop_strings=stops)
    batched = generator.generate_detailed(prompts, images, options)
    singles = [generator.generate_detailed([p], [im], options)[0] for p, im in zip(prompts, images)]
    assert [r.text for r in batched] == [r.text for r in singles]
    assert [(r.completion_tokens, r.finish_reason) for r in batched] == \
        [(r.completion_tokens, r.finish_reason) for r in singles]
    lengths = {r.completion_tokens for r in batched}
    assert len(lengths) > 1 and batched[1].finish_reason == "stop"  # rows really stopped at different steps
    assert any(r.finish_reason == "length" for r in batched)


def test_runner_batch_eight_equals_batch_one(generator, image_files, tmp_path):
    class Items:
        name, default_max_new_tokens = "fixture", 6

        def items(self):
            from minigemini.eval.benchmarks import EvalItem

            return [EvalItem(question_id=f"q{i}", prompt=q, image_paths=[image_files[k] for k in idx])
                    for i, (q, idx) in enumerate(QUESTIONS * 2)]

    one = generate_answers(generator, Items(), tmp_path / "b1.jsonl", batch_size=1, progress=False)
    eight = generate_answers(generator, Items(), tmp_path / "b8.jsonl", batch_size=8, progress=False)
    assert one.num_generated == eight.num_generated == 2 * len(QUESTIONS)
    assert (tmp_path / "b1.jsonl").read_text() == (tmp_path / "b8.jsonl").read_text()


def test_bridge_batched_equals_batch_one(tiny_model, tiny_processor, image_files):
    pytest.importorskip("lmms_eval")
    from lmms_eval.api.instance import Instance

    from minigemini.eval.lmms_eval_bridge import MiniGeminiLMMS
    from minigemini.infer.generate import Generator

    docs = [{"q": q.replace("<image>\n", ""), "images": [Image.open(image_files[i]) for i in idx]}
            for q, idx in QUESTIONS]
    gen_kwargs = {"until": ["###"], "max_new_tokens": 6}
    requests = [Instance("generate_until", (d["q"], dict(gen_kwargs), lambda doc: doc["images"], i, "t", "s"), i,
                         metadata={"task": "t", "doc_id": i, "repeats": 1}) for i, d in enumerate(docs)]
    answers = {}
    for size in (1, 4):
        lm = MiniGeminiLMMS(generator=Generator(tiny_model, tiny_processor), batch_size=size)
        lm.task_dict = {"t": {"s": docs}}
        answers[size] = lm.generate_until(requests)
    assert answers[1] == answers[4] and any(answers[1])
