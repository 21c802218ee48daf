"""`minigemini serve` driven by the real `openai` client: answers, streaming, n, stop, errors, models."""

from __future__ import annotations

import base64
import threading

import openai
import pytest

from minigemini.infer.generate import GenerationOptions
from minigemini.infer.serve import make_server

QUESTION = "What is in the picture?"


@pytest.fixture()
def client(generator):
    """An OpenAI client talking to a running server on a free port (model id "tiny")."""
    srv = make_server(generator, "127.0.0.1", 0, model_name="tiny", default_max_tokens=7)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{srv.server_address[1]}/v1", api_key="none", max_retries=0,
                        timeout=120)
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _image_message(path) -> list[dict]:
    data = base64.b64encode(path.read_bytes()).decode()
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
                                         {"type": "text", "text": QUESTION}]}]


def _expected(generator, image, **options) -> list:
    prompt = generator.question_prompt(f"<image>\n{QUESTION}")
    return generator.generate_detailed([prompt], [[image]], GenerationOptions(**options))


def test_chat_completion_equals_the_generator(client, generator, image_files):
    resp = client.chat.completions.create(model="tiny", messages=_image_message(image_files[0]), max_tokens=6,
                                          temperature=0)
    want = _expected(generator, image_files[0], max_new_tokens=6)[0]
    assert resp.object == "chat.completion" and resp.model == "tiny" and resp.id.startswith("chatcmpl-")
    assert len(resp.choices) == 1 and resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == want.text and resp.choices[0].finish_reason == want.finish_reason
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (want.prompt_tokens, want.completion_tokens)
    assert resp.usage.total_tokens == want.prompt_tokens + want.completion_tokens


def test_absent_max_tokens_uses_the_server_default(client, generator, image_files):
    resp = client.chat.completions.create(model="tiny", messages=_image_message(image_files[0]))
    assert resp.choices[0].message.content == _expected(generator, image_files[0], max_new_tokens=7)[0].text


def test_streaming_deltas_join_to_the_greedy_answer(client, image_files):
    messages = _image_message(image_files[1])
    plain = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12)
    chunks = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    first, last_choice, usage = chunks[0], chunks[-2], chunks[-1]
    assert first.choices[0].delta.role == "assistant" and first.choices[0].finish_reason is None
    assert last_choice.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == [] and usage.usage.model_dump() == plain.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    deltas = [c.choices[0].delta.content for c in chunks[1:-2]]
    assert len(deltas) >= 2 and all(deltas)
    assert "".join(deltas) == plain.choices[0].message.content


def test_streaming_without_usage_ends_with_finish_reason(client):
    with client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                        max_tokens=3, stream=True) as stream:
        chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "length" and chunks[-1].choices[0].delta.content is None
    assert not hasattr(chunks[-1], "usage") or chunks[-1].usage is None
    with client.chat.completions.with_streaming_response.create(
            model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=3, stream=True) as raw:
        assert raw.headers["content-type"] == "text/event-stream"
        lines = [line for line in raw.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: {") for line in lines[:-1])
    assert len(lines) - 1 == len(chunks) and '"usage"' not in "".join(lines)


def test_n_choices_greedy_and_sampled(client, image_files):
    messages = _image_message(image_files[0])
    greedy = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5, n=2)
    assert [c.index for c in greedy.choices] == [0, 1]
    assert greedy.choices[0].message.content == greedy.choices[1].message.content
    one = client.chat.completions.create(model="tiny", messages=messages, max_tokens=5)
    assert greedy.choices[0].message.content == one.choices[0].message.content
    assert greedy.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt counted once, completions summed
    assert greedy.usage.completion_tokens == 2 * one.usage.completion_tokens
    a = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, n=3, temperature=1.5, seed=4)
    b = client.chat.completions.create(model="tiny", messages=messages, max_tokens=8, n=3, temperature=1.5, seed=4)
    texts = [c.message.content for c in a.choices]
    assert texts == [c.message.content for c in b.choices]  # seeded: reproducible
    assert len(set(texts)) > 1  # n independent samples
    streamed = list(client.chat.completions.create(model="tiny", messages=messages, max_tokens=4, n=2, stream=True))
    finished = [c.choices[0].index for c in streamed if c.choices[0].finish_reason]
    assert finished == [0, 1]


def test_stop_cuts_the_answer(client, generator, image_files):
    messages = _image_message(image_files[0])
    full = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12).choices[0].message.content
    assert len(full) >= 4, full
    stop = full[2:4]
    want = _expected(generator, image_files[0], max_new_tokens=12, stop_strings=[stop])[0].text
    for value in (stop, [stop, "zzzz"]):
        resp = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, stop=value)
        assert resp.choices[0].message.content == want and stop not in want
        assert resp.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="tiny", messages=messages, max_tokens=12, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == want


@pytest.mark.parametrize(("kwargs", "param", "code"), [
    ({"max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    ({"max_completion_tokens": 2.5}, "max_completion_tokens", "invalid_type"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ({"top_p": 1.5}, "top_p", "decimal_above_max_value"),
    ({"top_p": -0.1}, "top_p", "decimal_below_min_value"),
    ({"n": 0}, "n", "integer_below_min_value"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    ({"seed": "x"}, "seed", "invalid_type"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"presence_penalty": 1.0}, "presence_penalty", "unsupported_parameter"),
    ({"extra_body": {"mirostat": 1}}, "mirostat", "unknown_parameter"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "invalid_value"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]},
     "messages[0].content[0].image_url", "invalid_image_url"),
    ({"messages": []}, "messages", "invalid_value"),
])
def test_invalid_parameters_are_openai_400s(client, kwargs, param, code):
    kwargs = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**kwargs)
    assert err.value.status_code == 400 and err.value.code == code and err.value.param == param
    assert err.value.body["type"] == "invalid_request_error" and err.value.body["message"]


def test_error_messages_read_like_openai(client):
    with pytest.raises(openai.BadRequestError, match=r"Expected a value >= 1, but got -5 instead"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=-5)
    with pytest.raises(openai.BadRequestError, match=r"expected a decimal, but got a string instead"):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], temperature="hot")


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and err.value.code == "model_not_found"
    assert "The model `gpt-4o` does not exist" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.code == "model_not_found"


def test_prompt_over_the_context_is_context_length_exceeded(client, generator):
    context = generator.model.config.get_text_config().max_position_embeddings
    long_text = " ".join(["red circle blue square"] * context)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": long_text}])
    assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
    assert f"maximum context length is {context} tokens" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:  # fits alone, not with the completion asked for
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=context)
    assert err.value.code == "context_length_exceeded" and "in the completion" in err.value.body["message"]


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list()] == ["tiny"]
    model = client.models.retrieve("tiny")
    assert (model.id, model.object, model.owned_by) == ("tiny", "model", "minigemini") and model.created > 0


def test_minigemini_serve_command(tiny_model_dir, generator):
    """`minigemini serve` as a process on a free port, used by the openai client."""
    import re
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "import sys; from minigemini.cli import main; sys.exit(main(sys.argv[1:]))",
           "serve", "--model", str(tiny_model_dir), "--port", "0", "--device", "cpu", "--max-new-tokens", "4"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        found = re.search(r"serving model 'tiny_model' on (http://127\.0\.0\.1:\d+/v1)", line)
        assert found, line + proc.stderr.read() if proc.poll() is not None else line
        client = openai.OpenAI(base_url=found.group(1), api_key="none", max_retries=0, timeout=120)
        assert [m.id for m in client.models.list()] == ["tiny_model"]
        stream = client.chat.completions.create(model="tiny_model", stream=True,
                                                messages=[{"role": "user", "content": "Hello"}])
        text = "".join(c.choices[0].delta.content or "" for c in stream)
        want = generator.generate([generator.question_prompt("Hello")], None, GenerationOptions(max_new_tokens=4))[0]
        assert text == want
    finally:
        proc.terminate()
        proc.wait(timeout=30)
