"""Conversation templates as DATA, and ONE routine that tokenizes a conversation and masks it.

A `Template` says how each part of a conversation is written (system, user turn, the assistant's
opening, the supervised answer + end-of-turn marker). `render_segments` turns a conversation into
text segments, each flagged supervised or not; `tokenize_conversation` tokenizes the whole text the
way inference will (chunk by chunk around `<image>`, like `MiniGeminiProcessor.tokenize`), gives
every token the flag of the segment its last character belongs to, then CHECKS that the supervised
tokens of each assistant turn decode to exactly that turn's text (+ end-of-turn marker); any
mismatch raises `TemplateMismatchError`. Template `"auto"` (alias `"tokenizer"`) renders with the
tokenizer's own `chat_template` and finds the assistant spans by rendering prefixes.

The templates of the released MGM checkpoints (plain, vicuna_v1, llama_3, gemma, mistral_instruct,
chatml_direct; every name the official `mgm/conversation.py` gives them is accepted) write exactly
the text of the official code (dvlab-research/MGM 769820c: `Conversation.get_prompt` and, for
`plain`, `preprocess_plain`), quirks included, and supervise what its `preprocess_*` functions
supervise; the golden strings are in tests/data/test_templates_official.py.

For inference, `render_prompt(template, messages, processor)` gives the prompt up to the
assistant's turn, and `stop_strings` / `stop_token_ids` tell generation where a turn ends.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, replace
from typing import Any, Sequence

from minigemini.model.constants import IGNORE_INDEX

VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                 "The assistant gives helpful, detailed, and polite answers to the user's questions.")
LLAMA3_SYSTEM = ("You are a helpful language and vision assistant. You are able to understand the visual content "
                 "that the user provides, and assist the user with a variety of tasks using natural language.")
ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                "bot": "assistant", "system": "system"}


class TemplateError(ValueError):
    """A conversation that cannot be written with the template; `kind` names the problem class."""

    def __init__(self, message: str, kind: str = "template_error") -> None:
        super().__init__(message)
        self.kind = kind


class TemplateMismatchError(TemplateError):
    """The supervised tokens do not decode to the assistant text: template and tokenizer do not fit."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind="template_mismatch")


@dataclass(frozen=True)
class Template:
    """One conversation format. `{content}`, `{system}`, `{eos}` and `{bos}` are filled in when writing."""

    name: str
    system: str = ""  # default system prompt; a record's own system text replaces it; "" = no system block
    system_format: str = "{system}"  # how a non-empty system prompt is written ("" = never written)
    system_in_user: bool = False  # the system block opens the first user message instead of the conversation
    user_format: str = "{content}"  # one user turn (not supervised)
    turn_separator: str = ""  # written before every user turn but the first (not supervised)
    assistant_prefix: str = ""  # opens an assistant turn (not supervised); the generation prompt ends with it
    assistant_format: str = "{content}"  # the answer as written (supervised)
    end_of_turn: str = "{eos}"  # closes an answer (supervised; generation stops here)
    assistant_suffix: str = ""  # written after end_of_turn (not supervised)
    add_bos: bool | None = True  # prepend the BOS id (never as text); None = iff the tokenizer itself adds one
    images_only_user: bool = False  # `plain` training: a user turn is reduced to its <image> placeholders
    generation_user_format: str | None = None  # a user turn in a generation prompt, if unlike training (plain)
    single_turn: bool = False  # `plain`: exactly one user + one assistant turn
    stop: tuple[str, ...] = ()  # strings that end an answer (default: end_of_turn without surrounding spaces)
    special_tokens: tuple[str, ...] = ()  # markers that must be single tokens in the tokenizer
    use_chat_template: bool = False  # "auto": render with tokenizer.chat_template


# The released checkpoints' templates, as mgm/conversation.py (769820c) writes them:
# plain = conv_llava_plain (+ preprocess_plain), vicuna_v1 = conv_vicuna_v1 (SeparatorStyle.TWO),
# llama_3 = conv_llama_3 (its assistant header really says "system"), gemma = conv_gemma,
# mistral_instruct = conv_mistral_instruct (LLAMA_2 style), chatml_direct = conv_chatml_direct (MPT style).
TEMPLATES: dict[str, Template] = {t.name: t for t in [
    Template("plain", system_format="", end_of_turn="\n", add_bos=None, images_only_user=True,
             generation_user_format="{content}\n", single_turn=True),
    Template("vicuna_v1", system=VICUNA_SYSTEM, system_format="{system} ", user_format="USER: {content} ",
             assistant_prefix="ASSISTANT:", assistant_format=" {content}", end_of_turn="</s>",
             special_tokens=("</s>",)),
    Template("llama_3", system=LLAMA3_SYSTEM,
             system_format="<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>",
             user_format="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>",
             assistant_prefix="<|start_header_id|>system<|end_header_id|>\n\n", end_of_turn="<|eot_id|>",
             special_tokens=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    Template("gemma", user_format="<start_of_turn>user\n{content}<end_of_turn>\n",
             assistant_prefix="<start_of_turn>model\n", end_of_turn="<end_of_turn>\n<eos>",
             stop=("<end_of_turn>", "<eos>"), special_tokens=("<start_of_turn>", "<end_of_turn>", "<eos>")),
    Template("mistral_instruct", system_format="<<SYS>>\n{system}\n<</SYS>>\n\n", system_in_user=True,
             user_format="[INST] {content} [/INST]", turn_separator="<s>", assistant_format=" {content} ",
             end_of_turn="</s>", special_tokens=("<s>", "</s>")),
    Template("chatml_direct", system="Answer the questions.", system_format="<|im_start|>system\n{system}<|im_end|>",
             user_format="<|im_start|>user\n{content}<|im_end|>", assistant_prefix="<|im_start|>assistant\n",
             end_of_turn="<|im_end|>", add_bos=False, special_tokens=("<|im_start|>", "<|im_end|>")),
    Template("chatml", system_format="<|im_start|>system\n{system}<|im_end|>\n",
             user_format="<|im_start|>user\n{content}<|im_end|>\n", assistant_prefix="<|im_start|>assistant\n",
             end_of_turn="<|im_end|>", assistant_suffix="\n", add_bos=False,
             special_tokens=("<|im_start|>", "<|im_end|>")),
    Template("auto", add_bos=False, use_chat_template=True),
]}
TEMPLATES["qwen2"] = replace(TEMPLATES["chatml"], name="qwen2", system="You are a helpful assistant.")
# the official conv_templates keys of the same conversations, then our own short names
ALIASES = {"v1": "vicuna_v1", "v0_plain": "plain", "mistral_direct": "chatml_direct",
           "tokenizer": "auto", "vicuna": "vicuna_v1", "llama3": "llama_3", "mistral": "mistral_instruct",
           "qwen": "qwen2", "yi": "chatml_direct"}
OFFICIAL_TEMPLATES = ("plain", "vicuna_v1", "llama_3", "gemma", "mistral_instruct", "chatml_direct")


def get_template(name: str | Template) -> Template:
    """The template called `name` (see `TEMPLATES`, `ALIASES`; "tokenizer" = "auto")."""
    if isinstance(name, Template):
        return name
    key = ALIASES.get(name, name)
    if key not in TEMPLATES:
        raise KeyError(f"unknown conversation template {name!r}; choose one of {sorted(TEMPLATES) + sorted(ALIASES)}")
    return TEMPLATES[key]


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered conversation; `turn` = index of the assistant turn it belongs to, or -1."""

    text: str
    supervised: bool = False
    turn: int = -1


# ---- conversations ---------------------------------------------------------------------------
def normalize_messages(conversation: Sequence[dict], sample_id: str | None = None, system: str | None = None,
                       for_generation: bool = False) -> list[dict[str, str]]:
    """LLaVA turns (`from`/`value`) or chat messages (`role`/`content`) -> [{"role", "content"}], checked.

    Roles must alternate user/assistant starting with user (after an optional system turn; `system`
    given here wins); training conversations end with an answer, generation ones with a user turn.
    """
    where = f"sample {sample_id!r}: " if sample_id is not None else ""
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise TemplateError(f"{where}turn {i} is {type(turn).__name__}, expected a dict with from/value",
                                "missing_keys")
        role = turn.get("from", turn.get("role"))
        content = turn.get("value", turn.get("content"))
        if role is None or content is None:
            raise TemplateError(f"{where}turn {i} lacks 'from'/'value' (or 'role'/'content'): keys {sorted(turn)}",
                                "missing_keys")
        if str(role).lower() not in ROLE_ALIASES:
            raise TemplateError(f"{where}turn {i} has unknown role {role!r}; use human/gpt (or user/assistant/system)",
                                "unknown_role")
        if not isinstance(content, str):
            raise TemplateError(f"{where}turn {i} content is {type(content).__name__}, expected text", "missing_keys")
        messages.append({"role": ROLE_ALIASES[str(role).lower()], "content": content})
    if messages and messages[0]["role"] == "system":
        head = messages.pop(0)
        system = head["content"] if system is None else system
    for i, m in enumerate(messages):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise TemplateError(f"{where}turn {i} is {m['role']!r} but {expected!r} was expected: turns must "
                                "alternate user/assistant, starting with the user", "not_alternating")
        if expected == "assistant" and not m["content"].strip():
            raise TemplateError(f"{where}answer {i // 2} (turn {i}) is empty", "empty_answer")
    last = "user" if for_generation else "assistant"
    if not messages or messages[-1]["role"] != last:
        raise TemplateError(f"{where}conversation must end with a {last} turn "
                            f"({'prompt for generation' if for_generation else 'training needs an answer'})",
                            "not_alternating")
    return ([{"role": "system", "content": system}] if system else []) + messages


def render_segments(messages: Sequence[dict], template: str | Template, tokenizer: Any,
                    add_generation_prompt: bool = False) -> list[Segment]:
    """Write normalized messages as text segments (supervised = assistant answers + end-of-turn).

    Turn contents are written as given (the official code does not strip them either; the dataset
    has already moved a lone `<image>` to the front of its turn, as MGM's preprocess_multimodal).
    """
    t = get_template(template)
    if t.use_chat_template:
        from .template_auto import chat_template_segments

        return chat_template_segments(list(messages), tokenizer, add_generation_prompt)
    fill = {"eos": getattr(tokenizer, "eos_token", None) or "", "bos": getattr(tokenizer, "bos_token", None) or ""}
    msgs = list(messages)
    system = msgs.pop(0)["content"] if msgs and msgs[0]["role"] == "system" else t.system
    if t.single_turn and len(msgs) > (1 if add_generation_prompt else 2):
        raise TemplateError(f"template {t.name!r} takes one user turn and one answer, got {len(msgs)} turns")
    system_text = t.system_format.format(system=system, **fill) if system else ""
    segs = [Segment(system_text)] if not t.system_in_user else []
    answer = 0
    for i, m in enumerate(msgs):
        if m["role"] == "user":
            segs.append(Segment((t.turn_separator if i else "")
                                + _user_text(t, m["content"], system_text if i == 0 else "", add_generation_prompt)))
            continue
        segs.append(Segment(t.assistant_prefix.format(**fill)))
        segs.append(Segment(t.assistant_format.format(content=m["content"], **fill) + t.end_of_turn.format(**fill),
                            supervised=True, turn=answer))
        segs.append(Segment(t.assistant_suffix.format(**fill)))
        answer += 1
    if add_generation_prompt:
        segs.append(Segment(t.assistant_prefix.format(**fill)))
    return [s for s in segs if s.text]


def _user_text(t: Template, content: str, system_text: str, generating: bool) -> str:
    """One user turn; `system_text` is set for the first turn of a template with the system inside it."""
    if generating and t.generation_user_format is not None:
        return t.generation_user_format.format(content=content)
    if t.images_only_user:
        content = "<image>" * content.count("<image>")
    if t.system_in_user:
        content = system_text + content
    return t.user_format.format(content=content)


# ---- tokenization ------------------------------------------------------------------------------
def _image_info(processor: Any) -> tuple[str, int, int]:
    config = getattr(processor, "config", None)
    token = getattr(processor, "image_token", None) or getattr(config, "image_token", "<image>")
    return token, processor.image_token_id, processor.num_image_tokens


def check_template_tokens(template: str | Template, tokenizer: Any) -> None:
    """Raise `TemplateMismatchError` if a marker the template needs is not one token of `tokenizer`."""
    t = get_template(template)
    if "{eos}" in t.end_of_turn and not getattr(tokenizer, "eos_token", None):
        raise TemplateMismatchError(f"template {t.name!r} ends each answer with the tokenizer's EOS token, but this "
                                    "tokenizer has none: set tokenizer.eos_token or use the model's own template")
    for marker in t.special_tokens:
        ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise TemplateMismatchError(
                f"template {t.name!r} needs {marker!r} as one token, but this tokenizer splits it into {len(ids)} "
                "pieces: the template does not belong to this model; use its own template (or 'auto')")


def _chunk_ids(tokenizer: Any, chunk: str, cuts: list[int]) -> tuple[list[int], list[int]]:
    """Token ids of `chunk` and, per token, the character position that decides its segment."""
    if not chunk:
        return [], []
    try:
        enc = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [e - 1 if e > s else s for s, e in enc["offset_mapping"]]
    except NotImplementedError:  # slow tokenizer: tokenize growing prefixes at the segment boundaries
        ids: list[int] = []
        owners: list[int] = []
        for cut in [c for c in cuts if 0 < c < len(chunk)] + [len(chunk)]:
            cur = tokenizer(chunk[:cut], add_special_tokens=False)["input_ids"]
            if cur[:len(ids)] != ids:
                raise TemplateMismatchError("the tokenizer merges text across a turn boundary")
            owners += [cut - 1] * (len(cur) - len(ids))
            ids = list(cur)
        return ids, owners


def tokenize_conversation(conversation: Sequence[dict], template: str | Template, processor: Any,
                          sample_id: str | None = None, system: str | None = None) -> tuple[list[int], list[int]]:
    """Tokenize a conversation; labels = ids on assistant answers (+ end-of-turn), -100 elsewhere.

    `processor` is a `MiniGeminiProcessor` (or anything with `tokenizer`, `image_token_id`,
    `num_image_tokens`); each `<image>` becomes `num_image_tokens` image ids (never supervised).
    Raises `TemplateError` for a bad conversation, `TemplateMismatchError` if the check fails.
    """
    t = get_template(template)
    tok = processor.tokenizer
    messages = normalize_messages(conversation, sample_id, system)
    check_template_tokens(t, tok)
    segs = render_segments(messages, t, tok)
    ids, labels, owners = _tokenize_segments(segs, t, processor)
    _check_labels(segs, ids, labels, owners, tok, t, sample_id)
    return ids, labels


def _tokenize_segments(segs: list[Segment], t: Template, processor: Any) -> tuple[list[int], list[int], list[int]]:
    """Ids, labels and the segment index of every token (-1 for BOS and image ids)."""
    tok = processor.tokenizer
    image_token, image_id, n_image = _image_info(processor)
    text = "".join(s.text for s in segs)
    starts = [0]
    for s in segs:
        starts.append(starts[-1] + len(s.text))
    supervised = [s.supervised for s in segs]
    for s in segs:
        if s.supervised and image_token in s.text:
            raise TemplateError(f"an answer contains {image_token!r}; images belong in user turns", "image_in_answer")
    ids: list[int] = [tok.bos_token_id] if needs_bos(t, tok) else []
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    owner: list[int] = [-1] * len(ids)
    base = 0
    for i, chunk in enumerate(text.split(image_token)):
        if i:
            ids += [image_id] * n_image
            labels += [IGNORE_INDEX] * n_image
            owner += [-1] * n_image
            base += len(image_token)
        cuts = [c - base for c in starts[1:-1]]
        chunk_ids, owners = _chunk_ids(tok, chunk, cuts)
        for tid, pos in zip(chunk_ids, owners):
            seg = bisect.bisect_right(starts, base + pos) - 1
            ids.append(tid)
            labels.append(tid if supervised[seg] else IGNORE_INDEX)
            owner.append(seg)
        base += len(chunk)
    return ids, labels, owner


def _check_labels(segs: list[Segment], ids: list[int], labels: list[int], owners: list[int], tok: Any,
                  t: Template, sample_id: str | None) -> None:
    """Each supervised segment's tokens must decode to its text (whitespace at the ends aside)."""
    for k, seg in enumerate(segs):
        if not seg.supervised:
            continue
        got = [i for i, o, lab in zip(ids, owners, labels) if o == k and lab != IGNORE_INDEX]
        found = tok.decode(got, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if found.strip() != seg.text.strip():
            raise TemplateMismatchError(
                f"sample {sample_id!r}, template {t.name!r}, answer {seg.turn}: the supervised tokens decode to "
                f"{found.strip()!r} but the answer is {seg.text.strip()!r}. The tokenizer merges text across the "
                "turn boundary or the template does not fit this tokenizer; use the model's own template "
                "(or 'auto' to use the tokenizer's chat_template)")


# ---- inference ---------------------------------------------------------------------------------
def render_prompt(template: str | Template, messages: Sequence[dict], processor: Any, system: str | None = None,
                  return_ids: bool = False) -> str | list[int]:
    """The prompt up to (and including) the opening of the assistant's turn, for generation.

    `messages`: LLaVA turns or chat messages ending with a user turn (put `<image>` where each image
    goes). Returns the text (BOS not included: tokenize it with `processor(text, add_bos=needs_bos(t))`),
    or with `return_ids=True` the ids exactly as training builds them (BOS and image ids included).
    `plain` is the exception: its prompt is conversation.py's (question kept), its training text is not.
    """
    t = get_template(template)
    tok = processor.tokenizer if hasattr(processor, "tokenizer") else processor
    msgs = normalize_messages(messages, system=system, for_generation=True)
    segs = render_segments(msgs, t, tok, add_generation_prompt=True)
    if not return_ids:
        return "".join(s.text for s in segs)
    return _tokenize_segments(segs, t, processor)[0]


def needs_bos(template: str | Template, tokenizer: Any = None) -> bool:
    """Whether the template's prompt starts with the tokenizer's BOS id (not part of the rendered text).

    `add_bos=None` (plain) follows the tokenizer, as the official `tokenizer_image_token` does: BOS
    iff `tokenizer(text)` starts with it (the answer needs `tokenizer`; without one it is True).
    """
    t = get_template(template)
    if tokenizer is not None and getattr(tokenizer, "bos_token_id", None) is None:
        return False
    if t.add_bos is not None:
        return t.add_bos
    if tokenizer is None:
        return True
    return tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id]


def stop_strings(template: str | Template, tokenizer: Any) -> list[str]:
    """Strings that end an assistant turn (pass as `stop_strings` to `generate`, with the tokenizer).

    The named templates stop where their trained answer ends (`Template.stop`, else the end-of-turn
    marker): the official eval scripts stop at the EOS id (+ `<|eot_id|>` for llama_3), which these
    markers precede or equal, so the decoded answer is the same.
    """
    t = get_template(template)
    if t.use_chat_template:
        from .template_auto import chat_template_segments

        segs = chat_template_segments([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}],
                                      tokenizer, False)
        marker = next(s.text for s in segs if s.supervised).strip()[1:]
        return [marker] if marker else [tokenizer.eos_token]
    if t.stop:
        return list(t.stop)
    end = t.end_of_turn.format(eos=tokenizer.eos_token or "", bos=tokenizer.bos_token or "")
    return [end.strip() or end]
def stop_token_ids(template: str | Template, tokenizer: Any) -> list[int]:
    """Token ids that end generation: the end-of-turn marker(s) and the tokenizer's EOS."""
    out = []
    for s in stop_strings(template, tokenizer):
        ids = tokenizer(s, add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            out.append(ids[0])
    if tokenizer.eos_token_id is not None:
        out.append(tokenizer.eos_token_id)
    return list(dict.fromkeys(out))
