"""Beam search with several images per prompt: each beam sees its own prompt's images, in order."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from minigemini.infer.generate import GenerationOptions, Generator


def _images() -> list[Image.Image]:
    colours = [(220, 30, 30), (30, 200, 40), (20, 40, 230)]
    out = []
    for k, colour in enumerate(colours):
        image = Image.new("RGB", (40 + 8 * k, 36), colour)
        image.paste((255, 255, 255), (3 * k, 4, 3 * k + 12, 16))
        out.append(image)
    return out


def test_expanded_image_stack_follows_the_rows(tiny_model, tiny_processor):
    """Row 0 holds images a, b; row 1 image c: 3 beams get [a b a b a b c c c], not HF's [a a a b b b c c c]."""
    a, b, c = _images()
    batch = tiny_processor(["<image> one <image> two", "<image> three"], images=[a, b, c])
    ids, kwargs = tiny_model._expand_inputs_for_generation(
        expand_size=3, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
        images=batch["images"], images_aux=batch["images_aux"])
    order = [0, 1, 0, 1, 0, 1, 2, 2, 2]
    assert torch.equal(ids, batch["input_ids"].repeat_interleave(3, 0))
    assert torch.equal(kwargs["attention_mask"], batch["attention_mask"].repeat_interleave(3, 0))
    assert torch.equal(kwargs["images"], batch["images"][order])
    assert torch.equal(kwargs["images_aux"], batch["images_aux"][order])
    # cached features: HR stage maps come as a list; every entry follows the same rows
    feats = [batch["images_aux"][:, :1], batch["images_aux"][:, 1:]]
    _, kwargs = tiny_model._expand_inputs_for_generation(expand_size=3, input_ids=batch["input_ids"],
                                                         hr_features=feats, lr_features=batch["images"])
    assert all(torch.equal(f, g[order]) for f, g in zip(kwargs["hr_features"], feats))
    with pytest.raises(ValueError, match="image tokens for 2 images"):
        tiny_model._expand_inputs_for_generation(expand_size=2, input_ids=batch["input_ids"], images=batch["images"][:2])


@pytest.mark.parametrize("num_beams", [2, 3])
def test_beam_search_with_two_images_per_prompt_equals_embedding_reference(tiny_model, tiny_processor, num_beams):
    """Reference: the LLM's own beam search on the prompt embeddings computed once per row (nothing to mix)."""
    a, b, c = _images()
    generator = Generator(tiny_model, tiny_processor)
    prompts = [generator.question_prompt("<image>\n<image>\nCompare the two pictures."),
               generator.question_prompt("<image>\n<image>\nWhich is brighter?")]
    batch = generator.encode(prompts, [[a, b], [c, a]])
    options = GenerationOptions(max_new_tokens=6, num_beams=num_beams)
    kwargs = generator.generation_kwargs(options)
    kwargs["generation_config"].eos_token_id = None  # full length: compare all 6 tokens
    seen: list[torch.Tensor] = []  # the LLM's input embeddings at prefill (every beam row)
    hook = tiny_model.language_model.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(kw["inputs_embeds"].clone()) if not seen else None, with_kwargs=True)
    try:
        with torch.inference_mode():
            out = tiny_model.generate(**batch, **kwargs)
    finally:
        hook.remove()
    with torch.inference_mode():
        visual = tiny_model.encode_images(batch["images"], batch["images_aux"])
        embeds = tiny_model.embed_tokens(batch["input_ids"], visual)
        ref = tiny_model.language_model.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"],
                                                 **kwargs)  # the HF LLM alone, on embeddings built once per row
    width = batch["input_ids"].shape[1]
    assert out.shape[1] == width + 6 and torch.equal(out[:, width:], ref[:, -6:])
    # each beam row holds its own prompt's images in placeholder order (the bug gave row 0 image a twice)
    torch.testing.assert_close(seen[0], embeds.repeat_interleave(num_beams, 0), rtol=0, atol=0)
    singles = [generator.generate([p], [im], options) for p, im in zip(prompts, [[a, b], [c, a]])]
    assert generator.generate(prompts, [[a, b], [c, a]], options) == [s[0] for s in singles]
