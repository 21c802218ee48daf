"""The OpenAI chat-completions protocol: request checking, errors, responses and stream chunks.

HTTP-free (`serve.py` carries these over HTTP). Errors are `APIError`s whose `body()` is the
JSON OpenAI sends (`{"error": {"message", "type", "param", "code"}}`) with OpenAI's status and
codes, so OpenAI clients raise their usual exceptions. A parameter is honoured or refused:
none is silently replaced or ignored.
"""

from __future__ import annotations

import base64
import binascii
import io
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .generate import GenerationOptions, GenerationResult, Generator

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
HONOURED = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
            "stream", "stream_options", "user"}
# accepted only with OpenAI's neutral value (or null): anything else would change the result
NEUTRAL = {"frequency_penalty": 0, "presence_penalty": 0, "logprobs": False, "logit_bias": {}, "tools": [],
           "response_format": {"type": "text"}, "store": False, "metadata": {}}
MAX_N = 128
MAX_STOPS = 4


class APIError(ValueError):
    """A client error answered as OpenAI does: HTTP `status` + `{"error": {...}}`."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.param, self.code, self.status, self.kind = param, code, status, kind

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


def model_not_found(name: Any) -> APIError:
    """OpenAI's 404 for a model it does not serve."""
    return APIError(f"The model `{name}` does not exist or you do not have access to it.", None,
                    "model_not_found", 404)


@dataclass
class ChatRequest:
    """A checked chat-completions request; `options.max_new_tokens` is 0 until `fit_context` sets it."""

    messages: list[dict[str, str]]
    images: list[Any]
    options: GenerationOptions
    max_tokens: int | None
    n: int
    stream: bool
    include_usage: bool


def _json_type(value: Any) -> str:
    names = {bool: "a boolean", str: "a string", int: "an integer", float: "a decimal", list: "an array",
             dict: "an object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _number(body: dict, name: str, low: float, high: float, integer: bool = False) -> Any:
    """body[name] checked as OpenAI does (type, then range); None when absent or null."""
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool):
        raise APIError(f"Invalid type for '{name}': expected {'an integer' if integer else 'a decimal'}, "
                       f"but got {_json_type(value)} instead.", name, "invalid_type")
    kind = "integer" if integer else "decimal"
    if value < low:
        raise APIError(f"Invalid '{name}': {kind} below minimum value. Expected a value >= {low:g}, "
                       f"but got {value} instead.", name, f"{kind}_below_min_value")
    if value > high:
        raise APIError(f"Invalid '{name}': {kind} above maximum value. Expected a value <= {high:g}, "
                       f"but got {value} instead.", name, f"{kind}_above_max_value")
    return value


def _bool(body: dict, name: str, where: str | None = None) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise APIError(f"Invalid type for '{where or name}': expected a boolean, but got {_json_type(value)} instead.",
                       where or name, "invalid_type")
    return bool(value)


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise APIError("Invalid type for 'stop': expected a string or an array of strings, "
                       f"but got {_json_type(stop)} instead.", "stop", "invalid_type")
    if len(stops) > MAX_STOPS:
        raise APIError(f"Invalid 'stop': array too long. Expected an array with maximum length {MAX_STOPS}, "
                       f"but got an array with length {len(stops)} instead.", "stop", "array_above_max_length")
    if any(not s for s in stops):
        raise APIError("Invalid 'stop': empty stop strings are not allowed.", "stop", "invalid_value")
    return tuple(stops)


def _check_keys(body: dict) -> None:
    for key, value in body.items():
        if key in HONOURED or value is None:
            continue
        if key not in NEUTRAL:
            raise APIError(f"Unrecognized request argument supplied: {key}", key, "unknown_parameter")
        if value != NEUTRAL[key]:
            raise APIError(f"'{key}' is not supported by this server (only {NEUTRAL[key]!r} or null).", key,
                           "unsupported_parameter")


def parse_request(body: Any, model_name: str, image_token: str) -> ChatRequest:
    """Check a request body; raises `APIError` naming the parameter, as OpenAI would."""
    from .generate import GenerationOptions

    if not isinstance(body, dict):
        raise APIError("The request body must be a JSON object.")
    if body.get("model") is None:
        raise APIError("you must provide a model parameter", "model", "missing_required_parameter")
    if body["model"] != model_name:
        raise model_not_found(body["model"])
    _check_keys(body)
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise APIError("Give max_tokens or max_completion_tokens, not both.", "max_tokens", "invalid_value")
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, name, 1, 2**31 - 1, integer=True)
    temperature = _number(body, "temperature", 0, 2)
    top_p = _number(body, "top_p", 0, 1)
    n = _number(body, "n", 1, MAX_N, integer=True) or 1
    seed = _number(body, "seed", -(2**63), 2**63 - 1, integer=True)
    stream = _bool(body, "stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not stream:
        raise APIError("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                       "stream_options", "invalid_value")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise APIError(f"Invalid type for 'stream_options': expected an object, but got {_json_type(stream_options)}"
                       " instead.", "stream_options", "invalid_type")
    include_usage = _bool(stream_options or {}, "include_usage", "stream_options.include_usage")
    messages, images = parse_messages(body.get("messages"), image_token)
    sampling = bool(temperature)  # 0 or absent: greedy (deterministic)
    options = GenerationOptions(max_new_tokens=0, do_sample=sampling, temperature=temperature if sampling else 1.0,
                                top_p=top_p if sampling else None, stop_strings=_stops(body),
                                seed=seed)
    return ChatRequest(messages, images, options, max_tokens, n, stream, include_usage)


def fit_context(request: ChatRequest, prompt_tokens: int, context: int | None, default_max_tokens: int) -> None:
    """Set the completion budget; a prompt (+ asked completion) over the context is OpenAI's 400."""
    if context is not None and prompt_tokens >= context:
        raise APIError(f"This model's maximum context length is {context} tokens. However, your messages resulted "
                       f"in {prompt_tokens} tokens. Please reduce the length of the messages.", "messages",
                       "context_length_exceeded")
    asked = request.max_tokens
    if context is not None and asked is not None and prompt_tokens + asked > context:
        raise APIError(f"This model's maximum context length is {context} tokens. However, you requested "
                       f"{prompt_tokens + asked} tokens ({prompt_tokens} in the messages, {asked} in the completion). "
                       "Please reduce the length of the messages or completion.", "messages", "context_length_exceeded")
    room = default_max_tokens if context is None else min(default_max_tokens, context - prompt_tokens)
    request.options = replace(request.options, max_new_tokens=asked if asked is not None else room)


def decode_data_url(url: str, where: str) -> Any:
    """A PIL image from a `data:image/...;base64,...` URL."""
    from minigemini.model.processing import load_image

    if not url.startswith("data:"):
        raise APIError("only data: URLs are accepted for images (this server does not fetch remote URLs); "
                       "send the image as data:image/png;base64,...", where, "invalid_image_url")
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise APIError("image data URLs must be base64-encoded (data:image/...;base64,...)", where, "invalid_image_url")
    try:
        return load_image(io.BytesIO(base64.b64decode(payload, validate=True)))
    except (binascii.Error, OSError) as exc:
        raise APIError(f"cannot decode the image data URL: {exc}", where, "invalid_image_url") from exc


def _content(content: Any, where: str, image_token: str, images: list[Any]) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(f"Invalid type for '{where}': expected a string or an array of content parts, "
                       f"but got {_json_type(content)} instead.", where, "invalid_type")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            images.append(decode_data_url(str(url), f"{where}[{j}].image_url"))
            parts.append(f"{image_token}\n")
        else:
            raise APIError(f"Invalid content part {where}[{j}]: use {{'type': 'text', 'text': ...}} or "
                           "{'type': 'image_url', 'image_url': {'url': 'data:...'}}.", f"{where}[{j}]", "invalid_value")
    return "".join(parts)


def parse_messages(messages: Any, image_token: str) -> tuple[list[dict[str, str]], list[Any]]:
    """OpenAI messages -> (template messages with `<image>` placeholders, images in placeholder order)."""
    if not isinstance(messages, list) or not messages:
        raise APIError("'messages' must be a non-empty array.", "messages",
                       "missing_required_parameter" if messages is None else "invalid_value")
    out: list[dict[str, str]] = []
    images: list[Any] = []
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise APIError(f"Invalid value: {role!r}. Supported values are: 'system', 'developer', 'user' and "
                           "'assistant'.", f"messages[{i}].role", "invalid_value")
        text = _content(m.get("content"), f"messages[{i}].content", image_token, images)
        out.append({"role": ROLES[role], "content": text})
    return out, images


class Completion:
    """Builds one response's bodies (shared id, creation time and model name)."""

    def __init__(self, model_name: str) -> None:
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model_name

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    @staticmethod
    def usage(prompt_tokens: int, results: list[GenerationResult]) -> dict[str, int]:
        """OpenAI's usage: the prompt counted once, the completions summed."""
        completion = sum(r.completion_tokens for r in results)
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    def response(self, results: list[GenerationResult]) -> dict[str, Any]:
        """The `chat.completion` body for `results` (one per choice)."""
        choices = [{"index": i, "message": {"role": "assistant", "content": r.text}, "logprobs": None,
                    "finish_reason": r.finish_reason} for i, r in enumerate(results)]
        return {**self._head("chat.completion"), "choices": choices,
                "usage": self.usage(results[0].prompt_tokens, results)}

    def chunk(self, index: int, delta: dict[str, str], finish: str | None, include_usage: bool) -> dict[str, Any]:
        """One `chat.completion.chunk` carrying `delta` for choice `index`."""
        body = {**self._head("chat.completion.chunk"),
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return {**body, "usage": None} if include_usage else body

    def usage_chunk(self, prompt_tokens: int, results: list[GenerationResult]) -> dict[str, Any]:
        """The last chunk when `stream_options.include_usage`: no choices, the usage."""
        return {**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage(prompt_tokens, results)}


def stream_chunks(generator: Generator, request: ChatRequest, prompt: str, prompt_tokens: int,
                  model_name: str) -> Iterator[dict[str, Any]]:
    """The chunks of a streamed answer: per choice the role, the content deltas and the finish reason."""
    done = Completion(model_name)
    results = []
    for index in range(request.n):  # choices one after the other; a seed seeds the first, the rest continue
        options = request.options if index == 0 else replace(request.options, seed=None)
        yield done.chunk(index, {"role": "assistant", "content": ""}, None, request.include_usage)
        pieces = generator.stream(prompt, request.images, options)
        try:
            for piece in pieces:
                yield done.chunk(index, {"content": piece}, None, request.include_usage)
        finally:  # the client went away: stop generating
            pieces.close()
        results.append(pieces.result)
        yield done.chunk(index, {}, pieces.result.finish_reason, request.include_usage)
    if request.include_usage:
        yield done.usage_chunk(prompt_tokens, results)
