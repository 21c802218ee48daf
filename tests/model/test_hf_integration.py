"""transformers integration, against the real transformers: the processor as a ProcessorMixin (save/load,
AutoProcessor, AutoImageProcessor), its chat template vs our template renderer, Auto classes after a
plain `import minigemini`, the image-text-to-text pipeline vs our Generator, the folders our writers
produce, and generate without deprecation warnings."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoProcessor, pipeline

from minigemini import MiniGeminiConfig, MiniGeminiForCausalLM, MiniGeminiProcessor
from minigemini.data.model_chat_template import chat_template_for, set_chat_template
from minigemini.infer.generate import GenerationOptions, Generator
from minigemini.data.tokenizer import base_tokenizer
from minigemini.model.image_processing import MiniGeminiImageProcessor, MiniGeminiLRImageProcessor
from minigemini.model.processing import PROCESSOR_FILE

REPO = Path(__file__).resolve().parents[2]
FAMILIES = ["llama", "gemma", "qwen2", "mistral", "phi3"]
CORPUS = ["USER: ASSISTANT: What is in the image? A red square on a blue field. Answer with one word.",
          "A chat between a curious user and an artificial intelligence assistant."]


def _tokenizer():
    """A byte-level BPE tokenizer (unk 0, bos 1, eos 2), as the tiny preset trains one."""
    return base_tokenizer(CORPUS, vocab_size=300)


def _image(color=(200, 30, 30), size=(40, 30)) -> Image.Image:
    img = Image.new("RGB", size, color)
    img.paste((20, 20, 220), (5, 5, 15, 12))
    return img


def _write_model(folder: Path, template: str = "vicuna_v1") -> Path:
    """A tiny model folder written the way our exports write it (model + processor with its chat template)."""
    processor = MiniGeminiProcessor(_tokenizer(), MiniGeminiConfig.tiny(image_token_id=None, template=template))
    set_chat_template(processor)
    torch.manual_seed(0)
    MiniGeminiForCausalLM(processor.config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    return _write_model(tmp_path / "m")


@pytest.mark.parametrize("hd", [False, True])
def test_processor_saves_and_loads_as_a_processor_mixin(tmp_path: Path, hd: bool) -> None:
    config = MiniGeminiConfig.tiny(hd=hd, image_token_id=None)
    processor = MiniGeminiProcessor(_tokenizer(), config, chat_template="{{ messages[0]['content'] }}")
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "MiniGeminiProcessor" and "config" not in saved
    assert saved["lr_image_processor"]["grid"] == (2 if hd else 1)
    assert (tmp_path / "chat_template.jinja").read_text() == "{{ messages[0]['content'] }}"
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MiniGeminiProcessor
    assert loaded.chat_template == processor.chat_template
    assert loaded.image_token_id == processor.image_token_id == config.image_token_id
    text = "USER: <image>\nWhat is in the image? ASSISTANT:"
    a, b = processor(text, images=[_image()]), loaded(text, images=[_image()])
    assert a.keys() == b.keys() == {"input_ids", "attention_mask", "images", "images_aux"}
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert a["images"].shape == ((1, 5, 3, 56, 56) if hd else (1, 3, 56, 56))
    hr = AutoImageProcessor.from_pretrained(tmp_path)  # the HR processor is the folder's image processor
    assert type(hr) is MiniGeminiImageProcessor
    assert torch.equal(hr(_image())["pixel_values"], a["images_aux"])


def test_lr_image_processor_alone_gives_the_processor_views() -> None:
    processor = MiniGeminiProcessor(_tokenizer(), MiniGeminiConfig.tiny(hd=True, image_token_id=None))
    batch = processor.preprocess_images([_image(), _image((0, 90, 0), (20, 50))])
    lr = processor.lr_image_processor(hr_pixel_values=batch["images_aux"])["pixel_values"]
    assert torch.equal(lr, batch["images"])
    own = MiniGeminiLRImageProcessor(size=56, grid=2, global_view=True, from_hr=False)
    assert own(_image())["pixel_values"].shape == (1, 5, 3, 56, 56)
    with pytest.raises(ValueError, match=r"\(from_hr=True\): pass hr_pixel_values"):
        processor.lr_image_processor(_image())


def test_folder_written_before_processor_config_still_loads(tmp_path: Path) -> None:
    """Folders of the earlier processor hold tokenizer + config.json + minigemini_processor.json only."""
    config = MiniGeminiConfig.tiny(image_token_id=None)
    new = MiniGeminiProcessor(_tokenizer(), config)
    new.tokenizer.chat_template = "{{ 'the LLM tokenizer own template' }}"  # not the model's format
    new.tokenizer.save_pretrained(tmp_path)
    config.save_pretrained(tmp_path)
    (tmp_path / PROCESSOR_FILE).write_text(json.dumps({"image_token": "<image>"}))
    for old in (MiniGeminiProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(old) is MiniGeminiProcessor and old.chat_template is None
        a, b = new("<image> hi", images=[_image()]), old("<image> hi", images=[_image()])
        assert all(torch.equal(a[k], b[k]) for k in a)
    set_chat_template(old)  # what the docstring tells owners of older folders
    old.save_pretrained(tmp_path)
    assert AutoProcessor.from_pretrained(tmp_path).chat_template == chat_template_for(config)


def test_foreign_processor_config_is_a_clear_error(model_dir: Path) -> None:
    file = model_dir / "processor_config.json"
    saved = json.loads(file.read_text())
    saved["image_processor"]["image_processor_type"] = "CLIPImageProcessor"
    file.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"processor_config.json: 'image_processor' is not a MiniGeminiImageProcessor.*"
                                         r"MiniGeminiProcessor\(tokenizer, model.config\).save_pretrained"):
        MiniGeminiProcessor.from_pretrained(model_dir)


def test_call_accepts_hf_keywords_and_refuses_other_modalities(model_dir: Path) -> None:
    processor = MiniGeminiProcessor.from_pretrained(model_dir)
    nested = processor(text=["<image> a", "<image> b"], images=[[_image()], [_image((0, 0, 0))]], padding=True,
                       add_special_tokens=False, videos=None, audio=None)
    flat = processor(["<image> a", "<image> b"], images=[_image(), _image((0, 0, 0))], add_bos=False)
    assert all(torch.equal(nested[k], flat[k]) for k in flat)
    assert nested["input_ids"][0, 0] == processor.image_token_id  # no BOS: add_special_tokens=False
    with pytest.raises(ValueError, match=r"takes text and images only, got \['videos'\]"):
        processor(text="hi", videos=[[1]])
    with pytest.raises(ValueError, match=r"unsupported options \['truncation'\]"):
        processor(text="hi", truncation=True)


def test_auto_classes_after_plain_import(model_dir: Path) -> None:
    """A fresh interpreter: `import minigemini` alone registers every Auto class (no trust_remote_code)."""
    code = (
        "import sys, minigemini\n"
        "from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText,\n"
        "                          AutoProcessor)\n"
        "d = sys.argv[1]\n"
        "names = [type(AutoConfig.from_pretrained(d, trust_remote_code=False)).__name__]\n"
        "names += [type(a.from_pretrained(d, trust_remote_code=False)).__name__ for a in\n"
        "          (AutoModelForCausalLM, AutoModelForImageTextToText, AutoModel, AutoProcessor)]\n"
        "print(','.join(names))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code, str(model_dir)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == ("MiniGeminiConfig,MiniGeminiForCausalLM,MiniGeminiForCausalLM,"
                                                    "MiniGeminiForCausalLM,MiniGeminiProcessor")


def test_pipeline_gives_the_generator_text(model_dir: Path) -> None:
    generator = Generator.from_pretrained(model_dir, device="cpu")
    prompt = generator.question_prompt("<image>\nWhat is in the image?")
    ours = generator.generate([prompt], [[_image()]], GenerationOptions(max_new_tokens=8))[0]
    pipe = pipeline("image-text-to-text", model=str(model_dir), device="cpu")
    assert type(pipe.processor) is MiniGeminiProcessor and type(pipe.model) is MiniGeminiForCausalLM
    out = pipe(images=[_image()], text=prompt, max_new_tokens=8, return_full_text=False,
               generate_kwargs={"do_sample": False})
    assert ours  # a random tiny model still writes 8 tokens of text
    assert out[0]["generated_text"].strip() == ours
    chat = [{"role": "user", "content": [{"type": "image", "image": _image()},
                                         {"type": "text", "text": "What is in the image?"}]}]
    out = pipe(text=chat, max_new_tokens=8, generate_kwargs={"do_sample": False})
    assert out[0]["generated_text"][-1] == {"role": "assistant", "content": out[0]["generated_text"][-1]["content"]}
    assert out[0]["generated_text"][-1]["content"].strip() == ours
    _image().save(model_dir / "photo.png")  # as docs/inference.md shows it: an image file, the new text only
    chat[0]["content"][0] = {"type": "image", "path": str(model_dir / "photo.png")}
    out = pipe(text=chat, max_new_tokens=8, return_full_text=False, generate_kwargs={"do_sample": False})
    assert out[0]["generated_text"].strip() == ours


@pytest.mark.parametrize("template", ["vicuna_v1", "mistral_instruct", "chatml_direct", "plain"])
def test_apply_chat_template_renders_the_generator_prompt(tmp_path: Path, template: str) -> None:
    folder = _write_model(tmp_path / template, template)
    processor = AutoProcessor.from_pretrained(folder)
    generator = Generator.from_pretrained(folder, device="cpu")
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
    text = [{"role": "user", "content": "<image>\nWhat is in the image?"}]
    ours = generator.chat_prompt(text)
    assert processor.apply_chat_template(parts, add_generation_prompt=True, tokenize=False) == ours
    assert processor.apply_chat_template(text, add_generation_prompt=True, tokenize=False) == ours
    if template != "plain":  # plain: one user turn + one answer, no system prompt
        system = [{"role": "system", "content": "Be brief."}, *text]
        assert processor.apply_chat_template(system, add_generation_prompt=True, tokenize=False) == \
            generator.chat_prompt(system)
    parts[0]["content"][0]["image"] = _image()
    ids = processor.apply_chat_template(parts, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt")["input_ids"][0].tolist()
    assert ids == generator.encode([ours], [[_image()]])["input_ids"][0].tolist()  # BOS as the template wants
    if template == "vicuna_v1":
        assert ours.endswith("USER: <image>\nWhat is in the image? ASSISTANT:")
        assert ids[0] == processor.tokenizer.bos_token_id
    with pytest.raises(Exception, match="unsupported content part type video"):
        processor.apply_chat_template([{"role": "user", "content": [{"type": "video"}]}], tokenize=False)


def test_convert_writes_the_chat_template(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from minigemini.cli import main

    fixture = REPO.parent / "shared" / "fixtures" / "mgm_reference" / "tiny_a"
    if not (fixture / "config.json").is_file():
        pytest.skip(f"MGM fixture missing: {fixture}")
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 512)}}  # the fixture's vocab size
    word_level = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
                            ).save_pretrained(tmp_path / "tok")
    out = tmp_path / "converted"
    assert main(["convert", str(fixture), str(out), "--tokenizer", str(tmp_path / "tok")]) == 0
    processor = AutoProcessor.from_pretrained(out)
    assert type(processor) is MiniGeminiProcessor and processor.config.template == "vicuna_v1"
    assert processor.chat_template == chat_template_for(processor.config)
    assert processor.add_bos is True and processor.image_token_id == 512


@pytest.mark.parametrize("llm", FAMILIES)
def test_generate_emits_no_deprecation_warning(llm: str) -> None:
    torch.manual_seed(0)
    model = MiniGeminiForCausalLM(MiniGeminiConfig.tiny(llm=llm)).eval()
    n = model.config.num_image_tokens
    ids = torch.tensor([[1, 10, 11] + [model.config.image_token_id] * n + [12, 13]])
    images, aux = torch.randn(1, 3, 56, 56), torch.randn(1, 3, 128, 128)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    logging.Logger.warning_once.cache_clear()  # transformers logs each deprecation once per process
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            warnings.simplefilter("error", DeprecationWarning)
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), images=images,
                                     images_aux=aux, max_new_tokens=3, do_sample=False, pad_token_id=0)
    finally:
        hf_logger.removeHandler(handler)
    assert out.shape == (1, ids.shape[1] + 3)
    deprecations = [r.getMessage() for r in records if "deprecat" in r.getMessage().lower()]
    assert deprecations == []
