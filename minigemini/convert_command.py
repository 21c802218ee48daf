"""`minigemini convert`: official MGM checkpoint folder -> a minigemini model folder.

Lives at the top level (like `demo.py`) because it joins model/ (the conversion) and data/ (the
chat template written with the processor), which model/ may not import.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="convert an official MGM checkpoint into a minigemini model folder",
                              description="Reads an MGM checkpoint folder (config.json + *.safetensors, MGM key names) "
                                          "and its tokenizer, writes a minigemini model folder (save_pretrained).")
    p.add_argument("mgm_folder", help="folder with the MGM config.json and safetensors shards")
    p.add_argument("out", help="output folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the MGM folder)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoTokenizer

    from .data.model_chat_template import set_chat_template
    from .model.convert import convert_mgm_checkpoint
    from .model.processing import MiniGeminiProcessor

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.mgm_folder, trust_remote_code=False)
    model = convert_mgm_checkpoint(args.mgm_folder, image_token_id=None if args.tokenizer is None else None,
                                   dtype=getattr(torch, args.dtype))
    processor = MiniGeminiProcessor(tokenizer, model.config)
    set_chat_template(processor)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {args.mgm_folder} -> {args.out} ({n:,} parameters, image token id {model.config.image_token_id})")
    return 0
