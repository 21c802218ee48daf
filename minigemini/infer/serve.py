"""`minigemini serve`: an OpenAI-compatible chat-completions server (standard library HTTP, threaded).

Messages follow OpenAI's chat format; images are `image_url` parts holding `data:` URLs
(base64), placed where they appear in the message. Remote image URLs are refused (the server
never fetches anything). `stream=true` sends server-sent events as OpenAI does; requests are
answered one at a time (a lock around the model).

    curl localhost:8000/v1/chat/completions -d '{"model": "NAME", "messages": [{"role": "user", "content": [
      {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
      {"type": "text", "text": "What is in the picture?"}]}], "max_tokens": 64}'
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from .openai_api import (
    APIError,
    ChatRequest,
    Completion,
    fit_context,
    model_not_found,
    parse_request,
    stream_chunks,
)

if TYPE_CHECKING:
    from .generate import Generator

MAX_BODY_BYTES = 64 * 1024 * 1024


def context_length(generator: Generator) -> int | None:
    """The LLM's context window in tokens (None when its config does not say)."""
    text = generator.model.config.get_text_config()
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(getattr(text, key, None), int):
            return getattr(text, key)
    return None


def prepare(generator: Generator, body: Any, model_name: str,
            default_max_tokens: int) -> tuple[ChatRequest, str, int]:
    """(checked request with its token budget, rendered prompt, prompt length in tokens) or `APIError`."""
    request = parse_request(body, model_name, generator.processor.config.image_token)
    try:
        prompt = generator.chat_prompt(request.messages)
        prompt_tokens = int(generator.encode([prompt], [request.images])["input_ids"].shape[1])
    except ValueError as exc:  # template errors (roles not alternating ...), image placeholders
        raise APIError(str(exc), "messages", "invalid_value") from exc
    fit_context(request, prompt_tokens, context_length(generator), default_max_tokens)
    return request, prompt, prompt_tokens


def complete(generator: Generator, body: Any, model_name: str, default_max_tokens: int = 512) -> dict:
    """Answer one non-streaming chat-completions request body; returns the response body."""
    request, prompt, _ = prepare(generator, body, model_name, default_max_tokens)
    results = generator.generate_detailed([prompt] * request.n, [request.images] * request.n, request.options)
    return Completion(model_name).response(results)


def model_card(model_name: str, created: int) -> dict[str, Any]:
    """The `/v1/models` entry of the served model."""
    return {"id": model_name, "object": "model", "created": created, "owned_by": "minigemini"}


class OpenAIHandler(BaseHTTPRequestHandler):
    """Routes of the server; `make_server` subclasses it with the generator and settings."""

    generator: Generator
    model_name: str = "minigemini"
    default_max_tokens: int = 512
    lock: threading.Lock
    created: int = 0

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _events(self, chunks: Iterator[dict]) -> None:
        """Server-sent events: one `data:` line per chunk, then `data: [DONE]`."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            for chunk in chunks:
                self.wfile.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client left; closing `chunks` (below) stops the generation
        except Exception as exc:
            error = APIError(f"{type(exc).__name__}: {exc}", kind="server_error", status=500)
            self.wfile.write(f"data: {json.dumps(error.body())}\n\n".encode())
        finally:
            chunks.close()

    def do_GET(self) -> None:
        path = self.path.rstrip("/")
        if path == "/v1/models":
            self._send(200, {"object": "list", "data": [model_card(self.model_name, self.created)]})
        elif path.startswith("/v1/models/"):
            wanted = path[len("/v1/models/"):]
            if wanted == self.model_name:
                self._send(200, model_card(self.model_name, self.created))
            else:
                self._send(404, model_not_found(wanted).body())
        elif path in ("/health", ""):
            self._send(200, {"status": "ok"})
        else:
            self._send(404, APIError(f"no route GET {self.path}", code="unknown_url", status=404).body())

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, APIError(f"no route POST {self.path}; POST /v1/chat/completions", code="unknown_url",
                                     status=404).body())
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._send(413, APIError(f"request body over {MAX_BODY_BYTES} bytes", status=413).body())
            return
        with self.lock:
            self._answer(self.rfile.read(length))

    def _answer(self, raw: bytes) -> None:
        try:
            try:
                body = json.loads(raw or b"{}")
            except json.JSONDecodeError as exc:
                raise APIError(f"The request body is not valid JSON: {exc}") from exc
            if isinstance(body, dict) and body.get("stream") is True:
                request, prompt, prompt_tokens = prepare(self.generator, body, self.model_name,
                                                         self.default_max_tokens)
                self._events(stream_chunks(self.generator, request, prompt, prompt_tokens, self.model_name))
                return
            response = complete(self.generator, body, self.model_name, self.default_max_tokens)
        except APIError as exc:
            self._send(exc.status, exc.body())
            return
        except Exception as exc:
            self._send(500, APIError(f"{type(exc).__name__}: {exc}", kind="server_error", status=500).body())
            return
        self._send(200, response)

    def log_message(self, fmt: str, *args: Any) -> None:  # quieter than the default
        pass


def make_server(generator: Generator, host: str = "127.0.0.1", port: int = 8000, model_name: str = "minigemini",
                default_max_tokens: int = 512) -> ThreadingHTTPServer:
    """A threaded HTTP server answering `/v1/chat/completions`, `/v1/models[/{id}]` (call `serve_forever()`)."""
    handler = type("Handler", (OpenAIHandler,), {
        "generator": generator, "model_name": model_name, "default_max_tokens": default_max_tokens,
        "lock": threading.Lock(), "created": int(time.time())})
    return ThreadingHTTPServer((host, port), handler)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` command."""
    from .chat import DEVICE_HELP, DTYPE_HELP

    p = subparsers.add_parser("serve", help="serve a model on an OpenAI-compatible /v1/chat/completions endpoint",
                              description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("--model", required=True, help="minigemini model folder")
    p.add_argument("--model-name", default=None,
                   help="the model id clients must send (default: the model folder's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; "
                   "0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--max-new-tokens", type=int, default=512,
                   help="completion budget when a request sets no max_tokens (capped by the context left)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--dtype", default="auto", help=DTYPE_HELP)
    p.add_argument("--template", default=None, help="override the conversation template named in the model config")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run `minigemini serve` until interrupted."""
    from pathlib import Path

    from .generate import Generator

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    generator = Generator.from_pretrained(args.model, device=args.device, dtype=args.dtype, template=args.template)
    name = args.model_name or Path(args.model).resolve().name
    server = make_server(generator, args.host, args.port, name, args.max_new_tokens)
    print(f"serving model {name!r} on http://{args.host}:{server.server_address[1]}/v1 (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
