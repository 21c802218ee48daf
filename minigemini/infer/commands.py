"""CLI commands of the inference area: `minigemini chat`, `minigemini serve` and `minigemini web`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `chat`, `serve` and `web` (their modules import torch/gradio only when run)."""
    from . import chat, serve, web

    chat.register(subparsers)
    serve.register(subparsers)
    web.register(subparsers)
