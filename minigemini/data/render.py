"""`minigemini prep render`: print the first record of a data file exactly as training (or generation) writes it.

The way to check data formatting before a run: the text is what the conversation template makes of
the record (after the same `<image>` placement as training), printed as `print()` does and nothing
else on stdout. A BOS the tokenizer adds as an id is not text and is not printed. With
`--generation-prompt` the last answer is dropped and the text ends where the model starts writing.
With `--show-labels` the record is also tokenized exactly as training does (the template/tokenizer
check included) and every supervised span (the answer tokens the loss sees) is wrapped in
`⟦` ... `⟧` (LABEL_OPEN / LABEL_CLOSE); everything outside them has label -100.
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = "print the first record of a LLaVA JSON/JSONL file as the template renders it (--show-labels: trained spans)"
LABEL_OPEN, LABEL_CLOSE = "⟦", "⟧"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `prep render`."""
    parser.add_argument("data", metavar="CONVERSATION.json", help="LLaVA-format JSON list or JSONL file")
    parser.add_argument("--template", default=None,
                        help="conversation template (plain, vicuna_v1, llama_3, gemma, mistral_instruct, "
                             "chatml_direct, chatml, qwen2, auto; official MGM names such as v1 work too); "
                             "default: the template of the minigemini model folder given as --tokenizer")
    parser.add_argument("--tokenizer", required=True, metavar="DIR",
                        help="tokenizer folder (or a minigemini model folder); gives EOS/BOS and the label check")
    parser.add_argument("--generation-prompt", action="store_true",
                        help="drop the last answer; end where the model starts writing (what inference sends)")
    parser.add_argument("--show-labels", action="store_true",
                        help=f"wrap each supervised span in {LABEL_OPEN} {LABEL_CLOSE} (tokenized as training does)")


def render_record(record: dict, template: str, processor: Any, generation_prompt: bool = False,
                  show_labels: bool = False, where: str = "record 0") -> str:
    """The record's conversation as text (see the module doc); raises ValueError naming `where`."""
    from .dataset import place_image_tokens
    from .records import RecordError, image_refs
    from .templates import TemplateError, get_template, normalize_messages, render_segments, tokenize_conversation

    try:
        t = get_template(template)
    except KeyError as exc:
        raise ValueError(f"--template: {exc.args[0]}") from None
    conv = record.get("conversations", record.get("messages"))
    if not isinstance(conv, list) or not conv:
        raise RecordError(f"{where}: no 'conversations' list (keys: {sorted(record)})", "missing_keys")
    sample_id = str(record.get("id", where))
    system = record.get("system") if isinstance(record.get("system"), str) else None
    try:
        conv = place_image_tokens(conv, len(image_refs(record)), sample_id)
        messages = normalize_messages(conv, sample_id, system)
        if show_labels and not generation_prompt:  # the same tokenization + check as training: a mismatch raises
            tokenize_conversation(conv, t, processor, sample_id=sample_id, system=system)
    except (RecordError, TemplateError) as exc:  # say which file and record
        raise ValueError(f"{where}: {exc}") from None
    if generation_prompt:
        messages = messages[:-1]
    segs = render_segments(messages, t, processor.tokenizer, add_generation_prompt=generation_prompt)
    if not show_labels:
        return "".join(s.text for s in segs)
    return "".join(f"{LABEL_OPEN}{s.text}{LABEL_CLOSE}" if s.supervised else s.text for s in segs)


def run(args: argparse.Namespace) -> int:
    """`prep render`: print the rendering of the file's first record."""
    from .records import open_records
    from .validate import load_processor

    source = open_records(args.data)
    if len(source) == 0:
        raise ValueError(f"{args.data}: no records; expected a LLaVA JSON list or JSONL with at least one record")
    processor = load_processor(args.tokenizer, num_image_tokens=1)
    template = args.template or getattr(getattr(processor, "config", None), "template", None)
    if not template:
        raise ValueError(f"--tokenizer {args.tokenizer} is a plain tokenizer folder, not a minigemini model folder: "
                         "give the template with --template NAME")
    print(render_record(source[0], template, processor, args.generation_prompt, args.show_labels,
                        where=source.location(0)))
    return 0
