"""lmms-eval bridge: run lmms-eval's tasks on a minigemini model (optional extra `minigemini[eval]`).

Importing this module registers the model class as `minigemini` in lmms-eval's model registry
(when lmms-eval is installed; otherwise the class exists but refuses to start). lmms-eval's own
CLI does not import third-party modules, so launch it from Python:

    python -c "import minigemini.eval.lmms_eval_bridge, sys; from lmms_eval.__main__ import cli_evaluate; \\
               sys.exit(cli_evaluate())" --model minigemini --model_args pretrained=PATH,batch_size=8 \\
               --tasks pope --output_path out/

Requests follow lmms-eval's simple-model API: `generate_until` args are
(context, gen_kwargs, doc_to_visual, doc_id, task, split); `loglikelihood` args are
(context, doc_to_target, doc_to_visual, doc_id, task, split). Images come from `doc_to_visual(doc)`;
a context without `<image>` gets one placeholder line per image in front, as LLaVA's bridge does.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from tqdm import tqdm

try:
    from lmms_eval.api.model import lmms as _LmmsBase
    from lmms_eval.api.registry import register_model as _register_model

    HAVE_LMMS_EVAL = True
except ImportError:  # optional extra
    HAVE_LMMS_EVAL = False
    _LmmsBase = object

    def _register_model(*names: str):  # type: ignore[no-redef]
        return lambda cls: cls


@_register_model("minigemini")
class MiniGeminiLMMS(_LmmsBase):  # type: ignore[misc, valid-type]
    """lmms-eval model: `--model minigemini --model_args pretrained=PATH[,batch_size=B,device=...,dtype=...]`."""

    def __init__(self, pretrained: str | None = None, device: str = "auto", dtype: str = "auto",
                 batch_size: int | str = 1, template: str | None = None, max_new_tokens: int | str = 128,
                 generator: Any = None, **unused: Any) -> None:
        if not HAVE_LMMS_EVAL:
            raise ImportError("lmms-eval is not installed: pip install 'minigemini[eval]' (or lmms-eval)")
        super().__init__()
        from minigemini.infer.generate import Generator

        if generator is None:
            if pretrained is None:
                raise ValueError("--model_args pretrained=PATH (a minigemini model folder) is required")
            generator = Generator.from_pretrained(pretrained, device=device, dtype=dtype, template=template)
        self.generator = generator
        self.pretrained = pretrained or "minigemini"
        self.batch_size_per_gpu = int(batch_size)
        self.default_max_new_tokens = int(max_new_tokens)
        if unused:
            import logging

            logging.getLogger(__name__).warning("minigemini bridge: ignoring model_args %s", sorted(unused))

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    # ---- helpers -----------------------------------------------------------------------------
    def _doc(self, task: str, split: str, doc_id: Any) -> Any:
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual: Any, task: str, split: str, doc_id: Any) -> list[Any]:
        """Images of a document (nested lists flattened); anything that is not an image is refused."""
        from PIL import Image

        if doc_to_visual is None:
            return []
        found = doc_to_visual(self._doc(task, split, doc_id))
        flat: list[Any] = []
        stack = [found]
        while stack:
            item = stack.pop(0)
            if item is None:
                continue
            if isinstance(item, (list, tuple)):
                stack[:0] = list(item)
            elif isinstance(item, Image.Image):
                flat.append(item)
            elif isinstance(item, str) and item.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")):
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

    # ---- lmms-eval API -------------------------------------------------------------------------
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy (unless the task samples) answers; consecutive requests with equal gen_kwargs are batched."""
        args = [r.args for r in requests]
        results: list[str] = [""] * len(args)
        groups: list[list[int]] = []
        previous = None
        for i, a in enumerate(args):
            key = json.dumps(a[1], sort_keys=True, default=str)
            if groups and key == previous and len(groups[-1]) < self.batch_size:
                groups[-1].append(i)
            else:
                groups.append([i])
            previous = key
        with tqdm(total=len(args), desc="minigemini generate_until") as bar:
            for group in groups:
                prompts, images = [], []
                for i in group:
                    context, _, doc_to_visual, doc_id, task, split = args[i]
                    visuals = self._visuals(doc_to_visual, task, split, doc_id)
                    prompts.append(self.generator.question_prompt(self._question(context, len(visuals))))
                    images.append(visuals)
                texts = self.generator.generate(prompts, images, self._options(dict(args[group[0]][1])))
                for i, text in zip(group, texts):
                    results[i] = text
                    self.cache_hook.add_partial("generate_until", (args[i][0], args[i][1]), text)
                bar.update(len(group))
        return results

    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """(log p(continuation | context, images), whether greedy decoding would produce it) per request."""
        import torch

        gen = self.generator
        out: list[tuple[float, bool]] = []
        for req in tqdm(requests, desc="minigemini loglikelihood"):
            context, doc_to_target, doc_to_visual, doc_id, task, split = req.args
            continuation = doc_to_target if isinstance(doc_to_target, str) else \
                doc_to_target(self._doc(task, split, doc_id))
            visuals = self._visuals(doc_to_visual, task, split, doc_id)
            prompt = gen.question_prompt(self._question(context, len(visuals)))
            ctx_ids = gen.processor.tokenize(prompt, add_bos=gen._add_bos)
            full_ids = gen.processor.tokenize(prompt + continuation, add_bos=gen._add_bos)
            if full_ids[: len(ctx_ids)] != ctx_ids:  # tokenizer merged across the boundary: tokenize apart
                full_ids = ctx_ids + gen.processor.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            n_cont = len(full_ids) - len(ctx_ids)
            batch = gen.encode([prompt], [visuals])
            input_ids = torch.tensor([full_ids], device=gen.device)
            with torch.inference_mode():
                logits = gen.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                   images=batch.get("images"), images_aux=batch.get("images_aux")).logits
            pred = logits[0, len(ctx_ids) - 1: len(full_ids) - 1].float().log_softmax(-1)
            target = input_ids[0, len(ctx_ids):]
            logprob = float(pred.gather(-1, target[:, None]).sum()) if n_cont else 0.0
            greedy = bool((pred.argmax(-1) == target).all()) if n_cont else True
            out.append((logprob, greedy))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), (logprob, greedy))
        return out

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("multi-round generation is not supported by the minigemini bridge")
