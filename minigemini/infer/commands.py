"""CLI commands of the inference area: `minigemini chat` and `minigemini serve`."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `chat` and `serve` (their modules import torch only when run)."""
    from . import chat, serve

    chat.register(subparsers)
    serve.register(subparsers)
