"""`minigemini convert`: official MGM checkpoint folder -> a minigemini model folder.

Lives at the top level (like `demo.py`) because it joins model/ (the conversion) and data/ (the
chat template written with the processor), which model/ may not import.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("convert", help="convert an official MGM checkpoint into a minigemini model folder",
                              description="Reads an MGM checkpoint folder (config.json + *.safetensors, MGM key names) "
                                          "and its tokenizer, writes a minigemini model folder (save_pretrained). The "
                                          "conversation template is chosen from the checkpoint (Gemma: gemma, Vicuna: "
                                          "vicuna_v1, Llama-3: llama_3, Mixtral: mistral_instruct, Yi: chatml_direct), "
                                          "written into the config and printed.")
    p.add_argument("mgm_folder", help="folder with the MGM config.json and safetensors shards")
    p.add_argument("out", help="output folder")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the MGM folder)")
    p.add_argument("--template", default=None,
                   help="conversation template to use instead of the detected one (e.g. vicuna_v1, llama_3)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the written weights (default float32)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import torch
    from transformers import AutoTokenizer

    from .data.model_chat_template import set_chat_template
    from .data.templates import get_template
    from .model.convert import convert_mgm_checkpoint, detect_template
    from .model.processing import MiniGeminiProcessor

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.mgm_folder, trust_remote_code=False)
    config_file = Path(args.mgm_folder) / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{args.mgm_folder}: no config.json (expected an official MGM checkpoint folder)")
    template, why = detect_template(json.loads(config_file.read_text()), tokenizer)
    if args.template:
        try:
            template, why = get_template(args.template).name, "--template"
        except KeyError as exc:
            raise ValueError(f"--template: {exc.args[0]}") from None
    model = convert_mgm_checkpoint(args.mgm_folder, dtype=getattr(torch, args.dtype), template=template)
    processor = MiniGeminiProcessor(tokenizer, model.config)
    set_chat_template(processor)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"template: {template} ({why})")
    print(f"converted {args.mgm_folder} -> {args.out} ({n:,} parameters, image token id {model.config.image_token_id})")
    return 0
