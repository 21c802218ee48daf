"""`minigemini serve`: a small OpenAI-compatible `/v1/chat/completions` endpoint (standard library only).

Messages follow OpenAI's chat format; images are `image_url` parts holding `data:` URLs
(base64), placed where they appear in the message. Remote image URLs are refused (the server
never fetches anything). Requests are answered one at a time; streaming is not offered.

    curl localhost:8000/v1/chat/completions -d '{"messages": [{"role": "user", "content": [
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
      {"type": "text", "text": "What is in the picture?"}]}], "max_tokens": 64}'
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .generate import GenerationOptions, Generator

MAX_BODY_BYTES = 64 * 1024 * 1024


class RequestError(ValueError):
    """A client error, answered with HTTP 400 and this message."""


def decode_data_url(url: str) -> Any:
    """A PIL image from a `data:image/...;base64,...` URL."""
    from minigemini.model.processing import load_image

    if not url.startswith("data:"):
        raise RequestError("only data: URLs are accepted for images (this server does not fetch remote URLs); "
                           "send the image as data:image/png;base64,...")
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise RequestError("image data URLs must be base64-encoded (data:image/...;base64,...)")
    try:
        raw = base64.b64decode(payload, validate=True)
        return load_image(io.BytesIO(raw))
    except (binascii.Error, OSError) as exc:
        raise RequestError(f"cannot decode the image data URL: {exc}") from exc


def parse_messages(messages: Any, image_token: str) -> tuple[list[dict[str, str]], list[Any]]:
    """OpenAI messages -> (template messages with `<image>` placeholders, images in placeholder order)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError("'messages' must be a non-empty list")
    out, images = [], []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise RequestError(f"messages[{i}] needs a 'role'")
        content = m.get("content")
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    parts.append(str(part.get("text", "")))
                elif kind == "image_url":
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    images.append(decode_data_url(str(url)))
                    parts.append(f"{image_token}\n")
                else:
                    raise RequestError(f"messages[{i}].content[{j}]: unsupported part type {kind!r} "
                                       "(use text or image_url)")
            text = "".join(parts)
        else:
            raise RequestError(f"messages[{i}].content must be a string or a list of parts")
        out.append({"role": m["role"], "content": text})
    return out, images


def options_from_request(body: dict[str, Any], default_max_tokens: int) -> "GenerationOptions":
    """Decoding options from an OpenAI request (temperature 0 or absent = greedy)."""
    from .generate import GenerationOptions

    max_tokens = body.get("max_completion_tokens", body.get("max_tokens")) or default_max_tokens
    temperature = float(body.get("temperature") or 0.0)
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    return GenerationOptions(max_new_tokens=int(max_tokens), do_sample=temperature > 0,
                             temperature=temperature if temperature > 0 else 1.0, top_p=body.get("top_p"),
                             stop_strings=tuple(stop), seed=body.get("seed"))


def complete(generator: "Generator", body: dict[str, Any], model_name: str, default_max_tokens: int = 512) -> dict:
    """Answer one chat-completions request body (a dict); returns the response body."""
    if body.get("stream"):
        raise RequestError("stream=true is not supported by this server")
    if int(body.get("n", 1)) != 1:
        raise RequestError("only n=1 is supported")
    messages, images = parse_messages(body.get("messages"), generator.processor.config.image_token)
    try:
        prompt = generator.chat_prompt(messages)
    except ValueError as exc:  # template errors: roles not alternating, unknown role ...
        raise RequestError(str(exc)) from exc
    result = generator.generate_detailed([prompt], [images], options_from_request(body, default_max_tokens))[0]
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                     "finish_reason": result.finish_reason}],
        "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                  "total_tokens": result.prompt_tokens + result.completion_tokens},
    }


def make_server(generator: "Generator", host: str = "127.0.0.1", port: int = 8000, model_name: str = "minigemini",
                default_max_tokens: int = 512) -> ThreadingHTTPServer:
    """An HTTP server answering `/v1/chat/completions` and `/v1/models` (call `serve_forever()`)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
            self._send(status, {"error": {"message": message, "type": kind}})

        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model",
                                                             "owned_by": "minigemini"}]})
            elif self.path.rstrip("/") in ("/health", ""):
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"no route {self.path}; POST /v1/chat/completions")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._error(413, f"request body over {MAX_BODY_BYTES} bytes")
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise RequestError("the request body must be a JSON object")
                with lock:
                    response = complete(generator, body, model_name, default_max_tokens)
            except (RequestError, json.JSONDecodeError) as exc:
                self._error(400, str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - report, keep serving
                self._error(500, f"{type(exc).__name__}: {exc}", "server_error")
                return
            self._send(200, response)

        def log_message(self, fmt: str, *args: Any) -> None:  # quieter than the default
            pass

    return ThreadingHTTPServer((host, port), Handler)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` command."""
    p = subparsers.add_parser("serve", help="serve a model on an OpenAI-compatible /v1/chat/completions endpoint",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--model", required=True, help="minigemini model folder")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-new-tokens", type=int, default=512, help="default when a request sets no max_tokens")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--template", default=None, help="override the conversation template named in the model config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `minigemini serve` until interrupted."""
    from pathlib import Path

    from .generate import Generator

    generator = Generator.from_pretrained(args.model, device=args.device, dtype=args.dtype, template=args.template)
    name = Path(args.model).resolve().name
    server = make_server(generator, args.host, args.port, name, args.max_new_tokens)
    print(f"serving {name} on http://{args.host}:{server.server_address[1]}/v1/chat/completions (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
