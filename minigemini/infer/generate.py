"""Batched generation with a Mini-Gemini model: chat template, images, left padding, stop strings.

`Generator` wraps a loaded model and its processor. Prompts are rendered with the conversation
template named in the model's config (`config.template`), images are preprocessed exactly as in
training (`MiniGeminiProcessor.preprocess_image`), a batch is left-padded by the processor, and
decoding is greedy unless sampling is asked for. The KV cache is used (images are encoded once,
at prefill). Output text is cut at the first stop string of the template or of the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Generator as Generator_
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    GenerationConfig,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from minigemini.model import MiniGeminiForCausalLM
from minigemini.model.processing import MiniGeminiProcessor

ImageLike = str | Path | Image.Image
Message = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": str}


@dataclass
class GenerationOptions:
    """Decoding settings; the defaults give deterministic greedy decoding."""

    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 0.2
    top_p: float | None = None
    num_beams: int = 1
    stop_strings: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None  # used only when sampling

    def updated(self, **changes: Any) -> "GenerationOptions":
        """A copy with `changes` applied (None values ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class GenerationResult:
    """One answer with its token counts; `finish_reason` is "stop" (ended by itself) or "length"."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def resolve_device(device: str | None = None) -> torch.device:
    """`device` or, when None/"auto", CUDA if available else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`dtype` by name; None/"auto" = bfloat16 on a GPU that supports it, float16 on other GPUs, float32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)} or auto")
    return names[dtype]


def load_model(path: str | Path, device: str | None = None,
               dtype: str | torch.dtype | None = None) -> tuple[MiniGeminiForCausalLM, MiniGeminiProcessor]:
    """Load a saved minigemini model folder (model + processor), in eval mode on `device`."""
    folder = Path(path).expanduser()
    weights = ("model.safetensors", "model.safetensors.index.json")
    if (folder / "adapter_config.json").is_file() and not any((folder / w).is_file() for w in weights):
        raise FileNotFoundError(f"{folder} holds a LoRA adapter, not a whole model: fold it into one with "
                                f"`minigemini merge-lora {folder} OUT_DIR` and pass OUT_DIR")
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a minigemini model folder (no config.json); pass the folder "
                                "written by `save_pretrained`, a training export or `minigemini convert`")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    processor = MiniGeminiProcessor.from_pretrained(folder)
    model = MiniGeminiForCausalLM.from_pretrained(str(folder), dtype=torch_dtype, use_safetensors=True)
    return model.to(dev).eval(), processor


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to the earliest occurrence of any stop string (unchanged when none occurs)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


class Generator:
    """A model + processor + conversation template, ready to answer batches of prompts."""

    def __init__(self, model: MiniGeminiForCausalLM, processor: MiniGeminiProcessor,
                 template: str | None = None) -> None:
        self.model = model
        self.processor = processor
        self.template_name = template or getattr(model.config, "template", None) or processor.config.template
        self._template_stops, self._template_eos = template_stops(self.template_name, processor)
        self._add_bos = template_needs_bos(self.template_name, processor)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | None = None, dtype: str | torch.dtype | None = None,
                        template: str | None = None) -> "Generator":
        """Load a model folder; the template is the one its config names unless `template` is given."""
        model, processor = load_model(path, device, dtype)
        return cls(model, processor, template)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- prompts -------------------------------------------------------------------------------
    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """The conversation rendered with the model's template, ending where the assistant answers."""
        return render_chat_prompt(self.template_name, messages, self.processor)

    def question_prompt(self, question: str, system: str | None = None) -> str:
        """A single user turn (`question` may hold `<image>` placeholders) as a generation prompt."""
        messages: list[Message] = [{"role": "system", "content": system}] if system else []
        return self.chat_prompt([*messages, {"role": "user", "content": question}])

    # ---- generation ----------------------------------------------------------------------------
    def generation_kwargs(self, options: GenerationOptions) -> dict[str, Any]:
        """Arguments for `model.generate`: a fresh GenerationConfig (greedy unless asked) + stop criteria."""
        tok = self.processor.tokenizer
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        eos += [i for i in self._template_eos if i not in eos]
        sampling = dict(temperature=options.temperature, top_p=options.top_p) if options.do_sample else {}
        config = GenerationConfig(max_new_tokens=options.max_new_tokens, do_sample=options.do_sample,
                                  num_beams=options.num_beams, use_cache=True, pad_token_id=tok.pad_token_id,
                                  bos_token_id=tok.bos_token_id, eos_token_id=eos or None, **sampling)
        kwargs: dict[str, Any] = {"generation_config": config}
        stops = self.stop_strings(options)
        if stops:
            config.stop_strings = stops
            kwargs["tokenizer"] = tok
        return kwargs

    def stop_strings(self, options: GenerationOptions) -> list[str]:
        """Template stop strings + the caller's, without duplicates."""
        return list(dict.fromkeys([*self._template_stops, *options.stop_strings]))

    def encode(self, prompts: Sequence[str], images: Sequence[Sequence[ImageLike]] | None = None) -> dict[str, Any]:
        """Tokenize + preprocess a batch (left padding), on the model's device and dtype."""
        images = images if images is not None else [[] for _ in prompts]
        if len(images) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(images)} image lists; give one list per prompt")
        flat = [im for per_prompt in images for im in per_prompt]
        batch = self.processor(list(prompts), images=flat or None, add_bos=self._add_bos, padding_side="left")
        dtype = self.model.projector_dtype
        return {k: (v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device)) for k, v in batch.items()}

    def generate(self, prompts: Sequence[str], images: Sequence[Sequence[ImageLike]] | None = None,
                 options: GenerationOptions | None = None) -> list[str]:
        """Answers to already-templated `prompts` (one image list per prompt, in placeholder order)."""
        return [r.text for r in self.generate_detailed(prompts, images, options)]

    @torch.inference_mode()
    def generate_detailed(self, prompts: Sequence[str], images: Sequence[Sequence[ImageLike]] | None = None,
                          options: GenerationOptions | None = None) -> list["GenerationResult"]:
        """Like `generate`, with token counts and whether each answer ended by itself or hit the limit."""
        options = options or GenerationOptions()
        if not prompts:
            return []
        batch = self.encode(prompts, images)
        self._seed(options)
        kwargs = self.generation_kwargs(options)
        out = self.model.generate(**batch, **kwargs)
        return self._results(batch, out, kwargs, options)

    def _results(self, batch: Mapping[str, torch.Tensor], out: torch.Tensor, kwargs: Mapping[str, Any],
                 options: GenerationOptions) -> list["GenerationResult"]:
        """Decoded answers (cut at stop strings, stripped) with token counts and finish reasons."""
        new_tokens = out[:, batch["input_ids"].shape[1]:]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        stops = self.stop_strings(options)
        pad = self.processor.tokenizer.pad_token_id
        eos = set(kwargs["generation_config"].eos_token_id or [])
        results = []
        for row, ids, text in zip(batch["attention_mask"], new_tokens.tolist(), texts):
            cut = cut_at_stop(text, stops)
            n = len(ids)
            while n and ids[n - 1] == pad and pad not in eos:
                n -= 1
            ended = len(cut) < len(text) or (n > 0 and ids[n - 1] in eos) or n < options.max_new_tokens
            results.append(GenerationResult(cut.strip(), int(row.sum()), n, "stop" if ended else "length"))
        return results

    def stream(self, prompt: str, images: Sequence[ImageLike] = (),
               options: GenerationOptions | None = None) -> "AnswerStream":
        """Yield the answer to one prompt piece by piece as it is generated (stop strings never shown).

        The pieces join to exactly what `generate` returns (cut at stop strings, stripped); once the
        stream is exhausted, its `.result` holds the `GenerationResult` (token counts, finish reason).
        """
        return AnswerStream(self._stream_pieces(prompt, images, options or GenerationOptions()))

    def _stream_pieces(self, prompt: str, images: Sequence[ImageLike],
                       options: GenerationOptions) -> Generator_[str, None, GenerationResult]:
        batch = self.encode([prompt], [list(images)])
        streamer = TextIteratorStreamer(self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = self.generation_kwargs(options)
        cancel = threading.Event()
        failure: list[BaseException] = []
        output: list[torch.Tensor] = []

        def work() -> None:
            try:
                with torch.inference_mode():
                    self._seed(options)
                    output.append(self.model.generate(**batch, **kwargs, streamer=streamer,
                                                      stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)])))
            except BaseException as exc:  # re-raised in the caller's thread below
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            yield from strip_stream(hold_back_stops(streamer, self.stop_strings(options)))
        finally:  # also when the caller stops early (Ctrl-C, break): end the generation thread
            cancel.set()
            thread.join()
        if failure:
            raise failure[0]
        return self._results(batch, output[0], kwargs, options)[0]

    @staticmethod
    def _seed(options: GenerationOptions) -> None:
        if options.do_sample and options.seed is not None:
            torch.manual_seed(options.seed)


class AnswerStream(Iterator[str]):
    """The text pieces of one streamed answer; `result` is set once they are all consumed (None before)."""

    def __init__(self, pieces: Generator_[str, None, GenerationResult]) -> None:
        self._pieces = pieces
        self.result: GenerationResult | None = None

    def __iter__(self) -> "AnswerStream":
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration as end:
            self.result = end.value
            raise

    def close(self) -> None:
        """Stop early: cancels the generation and joins its thread."""
        self._pieces.close()


class _Cancelled(StoppingCriteria):
    """Stops generation once `event` is set (the streaming consumer went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def hold_back_stops(pieces: Iterator[str], stops: Sequence[str]) -> Iterator[str]:
    """Pass text pieces through, holding back just enough to never emit a stop string; stop at the first."""
    keep = max((len(s) for s in stops), default=1) - 1
    text, sent = "", 0
    for piece in pieces:
        text += piece
        cut = cut_at_stop(text, stops)
        if len(cut) < len(text):  # a stop string appeared: flush up to it and finish
            if len(cut) > sent:
                yield cut[sent:]
            for _ in pieces:  # drain so the producer thread can finish
                pass
            return
        safe = len(text) - keep
        if safe > sent:
            yield text[sent:safe]
            sent = safe
    if len(text) > sent:
        yield text[sent:]


def strip_stream(pieces: Iterable[str]) -> Iterator[str]:
    """Pieces whose concatenation is the stripped concatenation of `pieces` (trailing blanks held back)."""
    started, pending = False, ""
    for piece in pieces:
        if not started:
            piece = piece.lstrip()
            if not piece:
                continue
            started = True
        text = pending + piece
        body = text.rstrip()
        pending = text[len(body):]
        if body:
            yield body


# ---- conversation templates (owned by minigemini.data.templates) -------------------------------
def render_chat_prompt(template: str, messages: Sequence[Message], processor: MiniGeminiProcessor) -> str:
    """`messages` rendered with the named template up to the assistant's turn (BOS not included)."""
    from minigemini.data.templates import render_prompt

    return render_prompt(template, list(messages), processor)


def template_needs_bos(template: str, processor: MiniGeminiProcessor | None = None) -> bool:
    """Whether prompts of this template start with the tokenizer's BOS id."""
    from minigemini.data.templates import needs_bos

    return needs_bos(template, processor.tokenizer if processor is not None else None)


def template_stops(template: str, processor: MiniGeminiProcessor) -> tuple[list[str], list[int]]:
    """(stop strings, end-of-turn token ids) of the named template; one-token markers become ids."""
    from minigemini.data.templates import stop_strings, stop_token_ids

    tok = processor.tokenizer
    eos_ids = stop_token_ids(template, tok)
    strings = [s for s in stop_strings(template, tok)
               if s and len(tok(s, add_special_tokens=False)["input_ids"]) != 1]
    return strings, eos_ids
