"""lmms-eval bridge: run lmms-eval's tasks on a minigemini model (optional extra `minigemini[eval]`).

lmms-eval >= 0.7 finds plugin models through the entry-point group `lmms_eval.models`; this
package declares `minigemini = "minigemini.eval.lmms_eval_bridge:lmms_eval_manifest"` there, so

    python -m lmms_eval --model minigemini --model_args pretrained=DIR,batch_size=8 --tasks pope

works once minigemini is installed. lmms-eval's conventions are followed exactly:

- `loglikelihood` returns (loss, is_greedy) as lmms-eval's own `llava` model does: the first value is
  the mean cross-entropy of the continuation written as the assistant's answer (+ end of turn), the
  loss training computes; multiple-choice scoring takes `argmin` of it. Mutual-information requests
  (`("", choice)`, no images) are scored the same way with an empty user turn.
- `batch_size`: an integer, or `auto` / `auto:N` (start at `max_batch_size`, default 16, and halve
  on an out-of-memory error). `device` (`cpu`, `cuda:0`, default: CUDA if present) and `dtype`
  (`float32`, `bfloat16`, `float16`, default `auto`; `torch_dtype` is accepted as llava spells it).
- lmms-eval's CLI catches every exception raised during a run and still exits 0, so a model that
  cannot load raises `ModelLoadError`, a `SystemExit` with code 2 (message on stderr).

Requests: `generate_until` args are (context, gen_kwargs, doc_to_visual, doc_id, task, split);
`loglikelihood` args are (context, continuation, doc_to_visual, doc_id, task, split) or
(context, continuation). Images come from `doc_to_visual(doc)`; a context without `<image>` gets one
placeholder line per image in front, as LLaVA's bridge does.
"""

from __future__ import annotations

import inspect
import json
import sys
from typing import Any, Callable, NoReturn, Sequence

import torch
from tqdm import tqdm

try:
    from lmms_eval.api.instance import GenerationResult as _GenerationResult
    from lmms_eval.api.model import lmms as _LmmsBase

    HAVE_LMMS_EVAL = True
except ImportError:  # optional extra
    HAVE_LMMS_EVAL = False
    _LmmsBase = _GenerationResult = object

MODEL_ID = "minigemini"
AUTO_MAX_BATCH_SIZE = 16
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")


def lmms_eval_manifest() -> Any:
    """The `lmms_eval.models` entry point: lmms-eval's `ModelManifest` naming the class below."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.MiniGeminiLMMS")


class Scored(tuple, _GenerationResult):  # type: ignore[misc, valid-type]
    """A `(loss, is_greedy)` tuple that lmms-eval 0.7.x's evaluator keeps intact.

    Its `unwrap_generation_output` (lmms_eval/api/instance.py) turns every response that is not a `str`
    or a `GenerationResult` into `str(response)`, which breaks every multiple_choice task with a plain
    tuple; this tuple is also a `GenerationResult` whose `text` is the plain tuple, so it passes as is.
    """

    def __new__(cls, loss: float, greedy: bool) -> "Scored":
        return super().__new__(cls, (float(loss), bool(greedy)))

    def __init__(self, loss: float, greedy: bool) -> None:  # the values live in the tuple
        pass

    @property
    def text(self) -> tuple[float, bool]:  # type: ignore[override]
        return (self[0], self[1])

    @property
    def token_counts(self) -> None:  # type: ignore[override]
        return None


class ModelLoadError(SystemExit):
    """The model could not be built; ends `python -m lmms_eval` with exit code 2 (it swallows Exceptions)."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def parse_batch_size(value: int | str) -> int | None:
    """A positive int, or None for `auto` / `auto:N`; anything else is a ValueError."""
    text = str(value).strip().lower()
    if text.isdigit() and int(text) >= 1:
        return int(text)
    if text == "auto" or (text.startswith("auto:") and text[5:].isdigit()):
        return None
    raise ValueError(f"--model_args batch_size={value!r}: use a positive integer, 'auto' or 'auto:N'")


def _positive_int(name: str, value: int | str) -> int:
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"--model_args {name}={value!r}: use a positive integer")
    return int(text)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is a device out-of-memory error (what `batch_size=auto` recovers from)."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class MiniGeminiLMMS(_LmmsBase):  # type: ignore[misc, valid-type]
    """lmms-eval model: `--model minigemini --model_args pretrained=DIR[,batch_size=B|auto,device=..,dtype=..]`."""

    is_simple = True

    def __init__(self, pretrained: str | None = None, device: str | None = None, dtype: str | None = "auto",
                 batch_size: int | str = 1, max_batch_size: int | str | None = None, template: str | None = None,
                 max_new_tokens: int | str = 128, generator: Any = None, torch_dtype: str | None = None) -> None:
        if not HAVE_LMMS_EVAL:
            raise ImportError("lmms-eval is not installed: pip install 'minigemini[eval]' (or lmms-eval)")
        super().__init__()
        try:
            self._fixed_batch = parse_batch_size(batch_size)
            self._batch = self._fixed_batch or _positive_int("max_batch_size", max_batch_size or AUTO_MAX_BATCH_SIZE)
            self.default_max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        except ValueError as exc:
            _fail(str(exc))
        self.generator = generator if generator is not None else _load(pretrained, device, torch_dtype or dtype,
                                                                        template)
        self.pretrained = pretrained or MODEL_ID

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "MiniGeminiLMMS":
        """lmms-eval passes its CLI's `--batch_size/--device` next to `--model_args`; `--model_args` wins
        (the stock method passes both and fails on `batch_size` given twice)."""
        from lmms_eval.utils import simple_parse_args_string

        args = simple_parse_args_string(arg_string)
        known = set(inspect.signature(cls.__init__).parameters) - {"self", "generator"}
        unknown = sorted(set(args) - known)
        if unknown:
            _fail(f"unknown --model_args {unknown}; known: {sorted(known)}")
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    @property
    def batch_size(self) -> int:
        return self._batch

    @property
    def device(self) -> torch.device:
        return self.generator.device

    # ---- helpers -----------------------------------------------------------------------------
    def _visuals(self, doc_to_visual: Callable | None, task: str, split: str, doc_id: Any) -> list[Any]:
        """Images of a document (nested lists flattened); anything that is not an image is refused."""
        from PIL import Image

        if doc_to_visual is None:
            return []
        flat: list[Any] = []
        stack = [doc_to_visual(self.task_dict[task][split][doc_id])]
        while stack:
            item = stack.pop(0)
            if item is None:
                continue
            if isinstance(item, (list, tuple)):
                stack[:0] = list(item)
            elif isinstance(item, Image.Image) or (isinstance(item, str) and item.lower().endswith(IMAGE_SUFFIXES)):
                flat.append(item)
            else:
                raise NotImplementedError(f"{task}/{doc_id}: visual of type {type(item).__name__} is not supported "
                                          "(images only; videos and audio are not)")
        return flat

    def _question(self, context: str, n_images: int) -> str:
        token = self.generator.processor.config.image_token
        placed = context.count(token)
        if placed == 0:
            return f"{token}\n" * n_images + context
        if placed != n_images:
            raise ValueError(f"context holds {placed} {token} placeholders but the document has {n_images} images")
        return context

    def _options(self, gen_kwargs: dict[str, Any]) -> Any:
        from minigemini.infer.generate import GenerationOptions

        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        sample = bool(gen_kwargs.get("do_sample", False)) and temperature > 0
        return GenerationOptions(max_new_tokens=int(gen_kwargs.get("max_new_tokens") or self.default_max_new_tokens),
                                 do_sample=sample, temperature=temperature if sample else 1.0,
                                 top_p=gen_kwargs.get("top_p") if sample else None,
                                 num_beams=int(gen_kwargs.get("num_beams") or 1), stop_strings=tuple(until))

    def _in_batches(self, order: list[int], run: Callable[[list[int]], None]) -> None:
        """`run` over consecutive chunks of `order`; with batch_size=auto an out-of-memory chunk is retried
        at half the size (kept for the rest of the run)."""
        start = 0
        while start < len(order):
            chunk = order[start:start + self._batch]
            try:
                run(chunk)
            except RuntimeError as exc:
                if self._fixed_batch is not None or self._batch == 1 or not is_out_of_memory(exc):
                    raise
                self._batch //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start += len(chunk)

    # ---- lmms-eval API -------------------------------------------------------------------------
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Answers (greedy unless the task samples); requests with equal gen_kwargs are batched, longest first."""
        args = [r.args for r in requests]
        results: list[str] = [""] * len(args)
        groups: dict[str, list[int]] = {}
        for i, a in enumerate(args):
            groups.setdefault(json.dumps(a[1], sort_keys=True, default=str), []).append(i)
        bar = tqdm(total=len(args), desc="minigemini generate_until", disable=self.rank != 0)

        def run(chunk: list[int]) -> None:
            prompts, images = [], []
            for i in chunk:
                context, _, doc_to_visual, doc_id, task, split = args[i]
                visuals = self._visuals(doc_to_visual, task, split, doc_id)
                prompts.append(self.generator.question_prompt(self._question(context, len(visuals))))
                images.append(visuals)
            texts = self.generator.generate(prompts, images, self._options(dict(args[chunk[0]][1])))
            for i, text in zip(chunk, texts):
                results[i] = text
                self.cache_hook.add_partial("generate_until", (args[i][0], args[i][1]), text)
            bar.update(len(chunk))

        for group in groups.values():
            self._in_batches(sorted(group, key=lambda i: -len(args[i][0])), run)
        bar.close()
        return results

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """(loss, is_greedy) per request, as lmms-eval's llava model: the mean cross-entropy of the continuation
        as the assistant's answer (+ end of turn) after the context; lower is likelier."""
        out: list[tuple[float, bool]] = []
        for req in tqdm(requests, desc="minigemini loglikelihood", disable=self.rank != 0):
            if len(req.args) == 2:  # mutual-information request: text only
                (context, continuation), visuals, where = req.args, [], "unconditional request"
            else:
                context, target, doc_to_visual, doc_id, task, split = req.args
                doc = self.task_dict[task][split][doc_id]
                continuation = target if isinstance(target, str) else target(doc)
                visuals, where = self._visuals(doc_to_visual, task, split, doc_id), f"{task}/{split}/{doc_id}"
            result = self.score(self._question(context, len(visuals)), continuation, visuals, where)
            out.append(result)
            self.cache_hook.add_partial("loglikelihood", (context, continuation), result)
        return out

    @torch.inference_mode()
    def score(self, question: str, answer: str, images: Sequence[Any] = (), where: str = "") -> Scored:
        """(mean cross-entropy of `answer` as the reply to `question`, whether greedy decoding gives it)."""
        from minigemini.data.templates import tokenize_conversation

        if not str(answer).strip():
            raise ValueError(f"{where}: empty continuation; a loglikelihood request needs an answer to score")
        gen = self.generator
        ids, labels = tokenize_conversation([{"role": "user", "content": question},
                                             {"role": "assistant", "content": answer}], gen.template_name,
                                            gen.processor, sample_id=where or None)
        input_ids = torch.tensor([ids], device=gen.device)
        pixels = {k: v.to(gen.device, gen.model.projector_dtype)
                  for k, v in gen.processor.preprocess_images(list(images)).items()}
        logits = gen.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **pixels).logits
        target = torch.tensor(labels[1:], device=gen.device)
        keep = target != -100
        logp = logits[0, :-1][keep].float().log_softmax(-1)
        picked = logp.gather(-1, target[keep][:, None])[:, 0]
        return Scored(float(-picked.mean()), bool((logp.argmax(-1) == target[keep]).all()))

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("multi-round generation is not supported by the minigemini bridge")


def _load(pretrained: str | None, device: str | None, dtype: str | None, template: str | None) -> Any:
    """A Generator for `pretrained`; any failure is a ModelLoadError (stderr + exit code 2 under lmms-eval)."""
    from minigemini.infer.generate import Generator

    try:
        if pretrained is None:
            raise ValueError("--model_args pretrained=DIR (a minigemini model folder) is required")
        return Generator.from_pretrained(str(pretrained), device=device, dtype=dtype, template=template)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        _fail(f"cannot load model {pretrained!r}: {exc}", exc)


def _fail(reason: str, cause: BaseException | None = None) -> NoReturn:
    """Print `reason` to stderr and raise ModelLoadError (lmms-eval would swallow any Exception)."""
    message = f"minigemini: {reason}"
    print(message, file=sys.stderr, flush=True)
    raise ModelLoadError(message) from cause
