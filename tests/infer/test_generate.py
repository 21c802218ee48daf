"""Batched generation: left padding, greedy determinism, KV cache, stop strings, streaming."""

from __future__ import annotations

import pytest
import torch

from minigemini.infer.generate import GenerationOptions, Generator, cut_at_stop, hold_back_stops


def _prompts(generator: Generator) -> tuple[list[str], list[list]]:
    prompts = [generator.question_prompt("<image>\nWhat is in the picture?"),
               generator.question_prompt("Say something long about the weather in spring, please."),
               generator.question_prompt("<image>\nColour?")]
    return prompts, [[0], [], [1]]


def test_batch_matches_single_prompts_and_is_deterministic(generator, image_files):
    prompts, idx = _prompts(generator)
    images = [[image_files[i] for i in row] for row in idx]
    options = GenerationOptions(max_new_tokens=6)
    batched = generator.generate(prompts, images, options)
    assert batched == generator.generate(prompts, images, options)  # greedy: same output twice
    singles = [generator.generate([p], [im], options)[0] for p, im in zip(prompts, images)]
    assert batched == singles  # left padding does not change the answers
    assert all(isinstance(t, str) for t in batched) and any(batched)


def test_left_padding_and_training_identical_prompt_ids(generator, image_files):
    from minigemini.data.templates import render_prompt

    prompts, idx = _prompts(generator)
    batch = generator.encode(prompts, [[image_files[i] for i in row] for row in idx])
    mask = batch["attention_mask"]
    assert mask[:, -1].all() and not mask.all()  # every row ends at the right edge; shorter rows padded left
    shortest = int(mask.sum(1).argmin())
    assert mask[shortest, 0] == 0
    assert batch["images"].shape[0] == 2 and batch["images_aux"].shape[0] == 2  # images in placeholder order
    ids = render_prompt(generator.template_name, [{"role": "user", "content": "<image>\nWhat is in the picture?"}],
                        generator.processor, return_ids=True)
    row = batch["input_ids"][0][mask[0].bool()].tolist()
    assert row == ids  # the prompt is tokenized exactly as training tokenizes it


def test_kv_cache_used_and_images_encoded_once(generator, image_files):
    calls = []
    hook = generator.model.vision_lr.register_forward_hook(lambda *a: calls.append(1))
    try:
        prompt = generator.question_prompt("<image>\nWhat is it?")
        results = generator.generate_detailed([prompt], [[image_files[0]]], GenerationOptions(max_new_tokens=5))
    finally:
        hook.remove()
    assert len(calls) == 1  # prefill only: later steps read the KV cache
    config = generator.generation_kwargs(GenerationOptions())["generation_config"]
    assert config.use_cache and not config.do_sample and config.num_beams == 1
    r = results[0]
    assert r.completion_tokens <= 5 and r.prompt_tokens > generator.processor.num_image_tokens
    assert r.finish_reason in ("stop", "length")


def test_stop_strings_cut_generate_and_stream(generator, image_files):
    prompt = generator.question_prompt("<image>\nDescribe the picture.")
    options = GenerationOptions(max_new_tokens=12)
    full = generator.generate([prompt], [[image_files[0]]], options)[0]
    assert len(full) >= 4, full
    stop = full[2:4]
    cut_options = options.updated(stop_strings=[stop])
    expected = cut_at_stop(full, [stop]).strip()
    assert generator.generate([prompt], [[image_files[0]]], cut_options)[0] == expected
    streamed = "".join(generator.stream(prompt, [image_files[0]], cut_options)).strip()
    assert streamed == expected
    assert "".join(generator.stream(prompt, [image_files[0]], options)).strip() == full


def test_hold_back_stops_never_emits_a_stop_string():
    pieces = ["Hel", "lo ##", "# world", "more"]
    assert "".join(hold_back_stops(iter(pieces), ["###"])) == "Hello "
    assert list(hold_back_stops(iter(["ab", "cd"]), [])) == ["ab", "cd"]
    assert "".join(hold_back_stops(iter(["a", "b", "c"]), ["zz"])) == "abc"
    assert cut_at_stop("x STOP y END", ["END", "STOP"]) == "x "


def test_from_pretrained_matches_in_memory_model(generator, tiny_model_dir, image_files):
    loaded = Generator.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")
    assert loaded.template_name == generator.template_name
    prompt = generator.question_prompt("<image>\nWhat is it?")
    options = GenerationOptions(max_new_tokens=5)
    assert loaded.generate([prompt], [[image_files[1]]], options) == \
        generator.generate([prompt], [[image_files[1]]], options)


def test_clear_errors(generator, tmp_path, image_files):
    with pytest.raises(FileNotFoundError, match="not a minigemini model folder"):
        Generator.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="placeholders"):
        generator.generate([generator.question_prompt("no image here")], [[image_files[0]]])
    with pytest.raises(ValueError, match="image lists"):
        generator.generate(["a", "b"], [[]])
    assert generator.generate([]) == []


def test_sampling_is_seeded(generator):
    prompt = generator.question_prompt("Tell me a story.")
    options = GenerationOptions(max_new_tokens=6, do_sample=True, temperature=1.0, seed=3)
    assert generator.generate([prompt], None, options) == generator.generate([prompt], None, options)
    torch.manual_seed(0)


def test_stream_stopped_early_ends_the_generation_thread(generator):
    import threading

    before = threading.active_count()
    stream = generator.stream(generator.question_prompt("Tell me a long story."), (),
                              GenerationOptions(max_new_tokens=400))
    next(stream)
    stream.close()  # the consumer leaves (as on Ctrl-C): the generation thread is cancelled and joined
    assert threading.active_count() == before


def test_template_end_of_turn_token_stops_generation():
    """A chatml model: prompt ends with the assistant header, no BOS, and <|im_end|> ends the answer."""
    from torch import nn

    from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor
    from minigemini.data.tokenizer import tiny_tokenizer

    tok = tiny_tokenizer("chatml")
    config = MiniGeminiConfig.tiny(llm="qwen2", vocab_size=len(tok), template="chatml")
    processor = MiniGeminiProcessor(tok, config)
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(config).eval()
    generator = Generator(model, processor)
    prompt = generator.question_prompt("Hello?")
    assert prompt.endswith("<|im_start|>assistant\n") and not generator._add_bos
    end_id = tok.convert_tokens_to_ids("<|im_end|>")
    options = GenerationOptions(max_new_tokens=8)
    assert end_id in generator.generation_kwargs(options)["generation_config"].eos_token_id
    head = model.language_model.lm_head  # make <|im_end|> the greedy choice at every step
    biased = nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight.data.copy_(head.weight.data)
    biased.bias.data.zero_()
    biased.bias.data[end_id] = 1e4
    model.language_model.lm_head = biased
    result = generator.generate_detailed([prompt], None, options)[0]
    assert (result.text, result.completion_tokens, result.finish_reason) == ("", 1, "stop")


def test_strip_stream_and_stream_result(generator, image_files):
    from minigemini.infer.generate import strip_stream

    assert list(strip_stream(iter([" ", " He", "llo ", " ", "world ", " "]))) == ["He", "llo", "  world"]
    prompt = generator.question_prompt("<image>\nDescribe the picture.")
    options = GenerationOptions(max_new_tokens=9)
    stream = generator.stream(prompt, [image_files[0]], options)
    assert stream.result is None
    text = "".join(stream)
    assert stream.result == generator.generate_detailed([prompt], [[image_files[0]]], options)[0]
    assert text == stream.result.text
