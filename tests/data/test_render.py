"""`minigemini prep render` through the real CLI: exact stdout, label markers, one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest

from minigemini.cli import main
from minigemini.data.tokenizer import tiny_tokenizer

VICUNA = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")
RECORD = {"id": "r1", "image": "a.jpg", "conversations": [
    {"from": "human", "value": "What is shown?\n<image>"}, {"from": "gpt", "value": "A red square."},
    {"from": "human", "value": "How many dots?"}, {"from": "gpt", "value": "Three."}]}


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory):
    out = {}
    for family in ("vicuna", "llama3"):
        out[family] = tmp_path_factory.mktemp(family)
        tiny_tokenizer(family).save_pretrained(out[family])
    return out


def render(capsys, data, *options):
    code = main(["prep", "render", str(data), *map(str, options)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path, records, name="data.json"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in records) if name.endswith(".jsonl") else json.dumps(records))
    return path


def test_prints_the_training_text_and_nothing_else(tmp_path, capsys, tokenizer_dirs):
    data = write(tmp_path, [RECORD, {"id": "second"}])  # only the first record is read
    code, out, _ = render(capsys, data, "--template", "vicuna_v1", "--tokenizer", tokenizer_dirs["vicuna"])
    # the image moves to the front of its turn, as in training (and MGM's preprocess_multimodal); BOS is an id
    assert code == 0 and out == (VICUNA + " USER: <image>\nWhat is shown? ASSISTANT: A red square.</s>USER: How many "
                                 "dots? ASSISTANT: Three.</s>\n")


def test_generation_prompt_and_official_name(tmp_path, capsys, tokenizer_dirs):
    data = write(tmp_path, [RECORD], "data.jsonl")
    code, out, _ = render(capsys, data, "--template", "v1", "--tokenizer", tokenizer_dirs["vicuna"],
                          "--generation-prompt")
    assert code == 0 and out == (VICUNA + " USER: <image>\nWhat is shown? ASSISTANT: A red square.</s>USER: How many "
                                 "dots? ASSISTANT:\n")


def test_show_labels_marks_the_supervised_spans(tmp_path, capsys, tokenizer_dirs):
    data = write(tmp_path, [RECORD])
    code, out, _ = render(capsys, data, "--template", "llama_3", "--tokenizer", tokenizer_dirs["llama3"],
                          "--show-labels")
    assert code == 0
    assert out.endswith("<|start_header_id|>system<|end_header_id|>\n\n⟦A red square.<|eot_id|>⟧"
                        "<|start_header_id|>user<|end_header_id|>\n\nHow many dots?<|eot_id|>"
                        "<|start_header_id|>system<|end_header_id|>\n\n⟦Three.<|eot_id|>⟧\n")
    assert out.count("⟦") == 2 and out.replace("⟦", "").replace("⟧", "") == render(
        capsys, data, "--template", "llama_3", "--tokenizer", tokenizer_dirs["llama3"])[1]


@pytest.mark.parametrize("content, template, message", [
    (None, "vicuna_v1", "data file not found"),
    ("[{\"id\": 1,", "vicuna_v1", "malformed JSON"),
    ("[]", "vicuna_v1", "no records"),
    ([{"id": "x", "conversations": [{"from": "gpt", "value": "hi"}]}], "vicuna_v1", "record 0: sample 'x': turn 0"),
    ([{"id": "x", "text": "hi"}], "vicuna_v1", "no 'conversations' list"),
    ([{"id": "x", "image": ["a", "b"], "conversations": RECORD["conversations"]}], "vicuna_v1", "placeholder"),
    ([RECORD], "nope", "unknown conversation template"),
    ([RECORD], "llama_3", "needs '<|start_header_id|>' as one token"),  # vicuna tokenizer, --show-labels check
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, tokenizer_dirs, content, template, message):
    data = tmp_path / "bad.json"
    if content is not None:
        data.write_text(content if isinstance(content, str) else json.dumps(content))
    code, out, err = render(capsys, data, "--template", template, "--tokenizer", tokenizer_dirs["vicuna"],
                            "--show-labels")
    assert code == 2 and out == "" and message in err
    assert err.startswith("minigemini prep: error: ") and len(err.splitlines()[0]) > 30
    assert len(err.splitlines()) == 1 and err.rstrip().endswith("(MINIGEMINI_TRACEBACK=1 shows the traceback)")
