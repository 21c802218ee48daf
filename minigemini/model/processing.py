"""MiniGeminiProcessor: tokenizer with the image token + the HR and LR image processors + chat template.

A `transformers.ProcessorMixin`: `save_pretrained` writes the tokenizer, `processor_config.json` (both
image processors), `chat_template.jinja` and the model config, and `AutoProcessor.from_pretrained(dir)`
returns this class (registered in `minigemini.model`). One `<image>` in the text becomes N (or 5N in
HD) image-token ids, so the model splices with one `masked_scatter`. Text around `<image>` is tokenized
chunk by chunk, as MGM's `tokenizer_image_token` does, so ids match the official pipeline for the same
tokenizer. Images are decoded once: HR pixels from CLIP-style preprocessing at the HR size, LR views
from them by bilinear downsampling (MGM) or from the image directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import AutoProcessor, AutoTokenizer, BatchFeature, PreTrainedTokenizerBase, ProcessorMixin

from .configuration import MiniGeminiConfig
from .image_processing import (  # noqa: F401  (load_image, expand_to_square: imported from here)
    MiniGeminiImageProcessor,
    MiniGeminiLRImageProcessor,
    expand_to_square,
    image_processors_for,
    load_image,
)

PROCESSOR_FILE = "minigemini_processor.json"  # marker of older folders (tokenizer + config, no processor_config.json)
HF_PROCESSOR_FILE = "processor_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CALL_OPTIONS_IGNORED = ("padding",)  # batches are always padded to the longest row
CALL_INPUTS_UNSUPPORTED = ("videos", "audio")  # `apply_chat_template` passes them (None) to every processor


class MiniGeminiProcessor(ProcessorMixin):
    """Tokenizer + HR/LR image processors (+ chat template) for a `MiniGeminiConfig`.

    `MiniGeminiProcessor(tokenizer, config)` builds the image processors from the config; loaded
    processors receive the saved ones. `chat_template` is the Jinja form of the model's conversation
    template and `add_bos` whether its prompts start with the BOS id (both set by model writers with
    `minigemini.data.model_chat_template.set_chat_template`); `apply_chat_template` and the pipeline use them.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: MiniGeminiConfig | None = None,
                 image_processor: MiniGeminiImageProcessor | None = None,
                 lr_image_processor: MiniGeminiLRImageProcessor | None = None,
                 chat_template: str | None = None, add_bos: bool = True) -> None:
        if config is None:
            raise ValueError("MiniGeminiProcessor needs the model config: MiniGeminiProcessor(tokenizer, config), "
                             "or MiniGeminiProcessor.from_pretrained(model_folder)")
        default_hr, default_lr = image_processors_for(config)
        super().__init__(tokenizer, image_processor or default_hr, lr_image_processor or default_lr,
                         chat_template=chat_template)
        self.config = config
        self.add_bos = bool(add_bos)
        token = config.image_token
        if token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [token]}, replace_extra_special_tokens=False)
        self.image_token_id = tokenizer.convert_tokens_to_ids(token)
        if config.image_token_id is None:
            config.image_token_id = self.image_token_id
        elif config.image_token_id != self.image_token_id:
            raise ValueError(f"tokenizer maps {token!r} to id {self.image_token_id} but the model config says "
                             f"image_token_id={config.image_token_id}; use the tokenizer saved with the model")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token

    @property
    def num_image_tokens(self) -> int:
        """Ids one `<image>` expands into."""
        return self.config.num_image_tokens

    @property
    def hr_transform(self) -> MiniGeminiImageProcessor:
        """The HR image processor (the name earlier code uses)."""
        return self.image_processor

    @property
    def lr_transform(self) -> MiniGeminiLRImageProcessor:
        """The LR image processor (the name earlier code uses)."""
        return self.lr_image_processor

    # ---- images ----------------------------------------------------------------------------
    def preprocess_image(self, image: Any) -> dict[str, torch.Tensor]:
        """One image -> {"images": LR [3,h,w] (HD: [V,3,h,w], crops then global), "images_aux": HR [3,H,W]}."""
        hr_proc = self.image_processor
        squared = hr_proc.square(image)
        hr = hr_proc.pixels(squared, hr_proc.size)
        out = {"images": self.lr_image_processor.views(hr, squared)}
        if self.config.use_hr:
            out["images_aux"] = hr
        return out

    def preprocess_images(self, images: Sequence[Any]) -> dict[str, torch.Tensor]:
        """Stack `preprocess_image` over several images (batch dim first)."""
        parts = [self.preprocess_image(im) for im in images]
        return {k: torch.stack([p[k] for p in parts]) for k in parts[0]} if parts else {}

    # ---- text --------------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text`, each `<image>` expanded into `num_image_tokens` image ids."""
        ids: list[int] = [self.tokenizer.bos_token_id] if add_bos and self.tokenizer.bos_token_id is not None else []
        for i, chunk in enumerate(text.split(self.config.image_token)):
            if i:
                ids += [self.image_token_id] * self.num_image_tokens
            if chunk:
                ids += self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
        return ids

    def __call__(self, text: str | list[str] | None = None, images: Sequence[Any] | None = None,
                 add_bos: bool | None = None, padding_side: str = "left", return_tensors: str | None = "pt",
                 **options: Any) -> BatchFeature:
        """Batch for `generate`/`forward`: left padding by default (generation); images in text order (a flat
        list, or one list per text as `apply_chat_template` gives). `add_special_tokens` is `add_bos`; by
        default BOS is added as the model's template does (`self.add_bos`)."""
        if text is None:
            raise ValueError("MiniGeminiProcessor needs text (with one <image> per image)")
        add_bos = bool(options.pop("add_special_tokens", self.add_bos if add_bos is None else add_bos))
        given = [k for k in CALL_INPUTS_UNSUPPORTED if options.pop(k, None) is not None]
        if given:
            raise ValueError(f"MiniGeminiProcessor takes text and images only, got {given}")
        unknown = sorted(k for k in options if k not in CALL_OPTIONS_IGNORED)
        if unknown:
            raise ValueError(f"MiniGeminiProcessor got unsupported options {unknown}")
        texts = [text] if isinstance(text, str) else list(text)
        flat = [im for item in (images or []) for im in (item if isinstance(item, (list, tuple)) else [item])]
        rows = [self.tokenize(t, add_bos=add_bos) for t in texts]
        n_placeholders = sum(t.count(self.config.image_token) for t in texts)
        if n_placeholders != len(flat):
            raise ValueError(f"the text holds {n_placeholders} {self.config.image_token} placeholders "
                             f"but {len(flat)} images were given")
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            sl = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            ids[b, sl] = torch.tensor(row, dtype=torch.long)
            mask[b, sl] = 1
        data: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if flat:
            data.update(self.preprocess_images(flat))
        return BatchFeature(data, tensor_type=return_tensors)

    def decode(self, ids: Sequence[int] | torch.Tensor, **kwargs: Any) -> str:
        """Decode ids to text (special tokens skipped by default)."""
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.decode(ids, **kwargs)

    def batch_decode(self, ids: Any, **kwargs: Any) -> list[str]:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.batch_decode(ids, **kwargs)

    # ---- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """`processor_config.json`: the image processors (the model config goes to config.json)."""
        out = super().to_dict()
        out.pop("config", None)
        return out

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> list[str]:
        """Tokenizer (with the image token), image processors, chat template and the model config."""
        files = super().save_pretrained(str(save_directory), **kwargs)
        self.config.save_pretrained(str(save_directory))
        return files

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> "MiniGeminiProcessor":
        """Load a model folder written by `save_pretrained`, a training export or `minigemini convert`.
        Older folders (no processor_config.json) still load: image processors from config.json as before, no
        chat template (add one: `minigemini.data.model_chat_template.set_chat_template(p); p.save_pretrained(dir)`)."""
        folder = Path(pretrained_model_name_or_path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} holds no config.json: pass a minigemini model folder")
        kwargs.setdefault("trust_remote_code", False)
        for key in ("_from_auto", "revision", "code_revision"):
            kwargs.pop(key, None)
        config = MiniGeminiConfig.from_pretrained(str(folder))
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        file = folder / HF_PROCESSOR_FILE
        saved = json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None
        hr, lr = _load_image_processors(file, saved)
        template_file = folder / CHAT_TEMPLATE_FILE  # in an older folder it can only be the tokenizer's own
        chat_template = template_file.read_text(encoding="utf-8") if saved and template_file.is_file() else None
        return cls(tokenizer, config, hr, lr, chat_template=chat_template, add_bos=(saved or {}).get("add_bos", True))


def _load_image_processors(file: Path, saved: dict | None
                           ) -> tuple[MiniGeminiImageProcessor | None, MiniGeminiLRImageProcessor | None]:
    """The saved image processors, or (None, None) for an older folder (then built from the config)."""
    if saved is None:
        return None, None
    out = []
    kinds = (("image_processor", MiniGeminiImageProcessor), ("lr_image_processor", MiniGeminiLRImageProcessor))
    for key, klass in kinds:
        entry = dict(saved.get(key) or {})
        if entry.pop("image_processor_type", None) != klass.__name__:
            raise ValueError(f"{file}: {key!r} is not a {klass.__name__}; this folder was not written by "
                             "minigemini: load its model and tokenizer, then save with MiniGeminiProcessor(tokenizer, "
                             "model.config).save_pretrained(folder)")
        out.append(klass.from_dict(entry))
    return out[0], out[1]


AutoProcessor.register(MiniGeminiConfig, MiniGeminiProcessor, exist_ok=True)
