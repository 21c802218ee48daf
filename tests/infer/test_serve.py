"""`minigemini serve`: the OpenAI-compatible endpoint answers with the same text as the Generator."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request

import pytest

from minigemini.infer.generate import GenerationOptions
from minigemini.infer.serve import make_server


@pytest.fixture()
def server(generator):
    srv = make_server(generator, "127.0.0.1", 0, model_name="tiny")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_chat_completions_with_data_url_image(server, generator, image_files):
    data = base64.b64encode(image_files[0].read_bytes()).decode()
    body = {"model": "tiny", "max_tokens": 6, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}},
        {"type": "text", "text": "What is in the picture?"}]}]}
    status, resp = _post(server, body)
    assert status == 200, resp
    expected = generator.generate([generator.question_prompt("<image>\nWhat is in the picture?")],
                                  [[image_files[0]]], GenerationOptions(max_new_tokens=6))[0]
    choice = resp["choices"][0]
    assert resp["object"] == "chat.completion" and choice["message"] == {"role": "assistant", "content": expected}
    assert choice["finish_reason"] in ("stop", "length") and 0 < resp["usage"]["completion_tokens"] <= 6
    with urllib.request.urlopen(server + "/v1/models", timeout=10) as r:
        assert json.loads(r.read())["data"][0]["id"] == "tiny"


def test_bad_requests_get_400(server):
    status, resp = _post(server, {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    assert status == 400 and "data: URLs" in resp["error"]["message"]
    status, resp = _post(server, {"messages": []})
    assert status == 400
    status, resp = _post(server, {"messages": [{"role": "assistant", "content": "hi"}]})
    assert status == 400
    status, resp = _post(server, {"stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "stream" in resp["error"]["message"]
