"""MiniGeminiProcessor: tokenizer with the image token + the LR/HR image transforms.

One `<image>` in the text becomes N (or 5N in HD) image-token ids, so the model splices with one
`masked_scatter`. Text around `<image>` is tokenized chunk by chunk, as MGM's
`tokenizer_image_token` does, so ids match the official pipeline for the same tokenizer.
Images are decoded once: the HR tensor comes from CLIP-style preprocessing at the HR size and the
LR tensor is derived from it by bilinear downsampling (MGM), or from the image directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from transformers import AutoTokenizer, BatchEncoding, CLIPImageProcessor, PreTrainedTokenizerBase

from .configuration import MiniGeminiConfig

PROCESSOR_FILE = "minigemini_processor.json"


def load_image(image: str | Path | Image.Image) -> Image.Image:
    """Open an image as RGB: EXIF orientation applied; RGBA/LA composited on white; L/P/CMYK converted."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            opened.load()
            image = opened.copy()
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, rgba)
    return image.convert("RGB")


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad the short side (centred) with `fill`, as LLaVA/MGM `expand2square`."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


class MiniGeminiProcessor:
    """Tokenizer + image preprocessing for a `MiniGeminiConfig`."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: MiniGeminiConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
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
        side = config.image_size_aux if config.lr_from_hr else config.image_size * config.image_grid
        self.hr_transform = self._clip_processor(config.image_size_aux)
        self.lr_transform = None if config.lr_from_hr else self._clip_processor(side)

    def _clip_processor(self, side: int) -> CLIPImageProcessor:
        return CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side},
                                  image_mean=self.config.image_mean, image_std=self.config.image_std, resample=3)

    @property
    def num_image_tokens(self) -> int:
        """Ids one `<image>` expands into."""
        return self.config.num_image_tokens

    # ---- images ----------------------------------------------------------------------------
    def preprocess_image(self, image: str | Path | Image.Image) -> dict[str, torch.Tensor]:
        """One image -> {"images": LR [3,h,w] (HD: [V,3,h,w], crops then global), "images_aux": HR [3,H,W]}."""
        cfg = self.config
        pil = load_image(image)
        if cfg.image_aspect_ratio == "pad":
            pil = expand_to_square(pil, tuple(int(x * 255) for x in cfg.image_mean))
        elif cfg.image_aspect_ratio == "resize":
            pil = pil.resize((cfg.image_size_aux, cfg.image_size_aux), Image.BICUBIC)
        elif cfg.image_aspect_ratio != "crop":
            raise ValueError(f"image_aspect_ratio must be pad, resize or crop, got {cfg.image_aspect_ratio!r}")
        hr = self.hr_transform(pil, return_tensors="pt")["pixel_values"][0]
        side, grid = cfg.image_size, cfg.image_grid
        if self.lr_transform is None:
            lr = F.interpolate(hr[None], size=(side * grid, side * grid), mode="bilinear", align_corners=False)[0]
        else:
            lr = self.lr_transform(pil, return_tensors="pt")["pixel_values"][0]
        if grid > 1:
            crops = lr.reshape(3, grid, side, grid, side).permute(1, 3, 0, 2, 4).reshape(grid * grid, 3, side, side)
            if cfg.image_global:
                glob = F.interpolate(lr[None], size=(side, side), mode="bilinear", align_corners=False)
                crops = torch.cat([crops, glob], dim=0)
            lr = crops.contiguous()
        out = {"images": lr}
        if cfg.use_hr:
            out["images_aux"] = hr
        return out

    def preprocess_images(self, images: Sequence[str | Path | Image.Image]) -> dict[str, torch.Tensor]:
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

    def __call__(self, text: str | list[str], images: Sequence[Any] | None = None, add_bos: bool = True,
                 padding_side: str = "left", return_tensors: str = "pt") -> BatchEncoding:
        """Batch for `generate`/`forward`: left padding by default (generation); images in text order."""
        texts = [text] if isinstance(text, str) else list(text)
        rows = [self.tokenize(t, add_bos=add_bos) for t in texts]
        n_placeholders = sum(t.count(self.config.image_token) for t in texts)
        if n_placeholders != len(images or []):
            raise ValueError(f"the text holds {n_placeholders} {self.config.image_token} placeholders "
                             f"but {len(images or [])} images were given")
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            sl = slice(width - len(row), width) if padding_side == "left" else slice(0, len(row))
            ids[b, sl] = torch.tensor(row, dtype=torch.long)
            mask[b, sl] = 1
        data: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if images:
            data.update(self.preprocess_images(images))
        return BatchEncoding(data, tensor_type=return_tensors)

    def decode(self, ids: Sequence[int] | torch.Tensor, **kwargs: Any) -> str:
        """Decode ids to text (special tokens skipped by default)."""
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.decode(ids, **kwargs)

    def batch_decode(self, ids: Any, **kwargs: Any) -> list[str]:
        kwargs.setdefault("skip_special_tokens", True)
        return self.tokenizer.batch_decode(ids, **kwargs)

    # ---- persistence -------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        """Save the tokenizer (with the image token) and the config beside the model."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(folder)
        self.config.save_pretrained(folder)
        (folder / PROCESSOR_FILE).write_text(json.dumps({"image_token": self.config.image_token}, indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path, **tokenizer_kwargs: Any) -> "MiniGeminiProcessor":
        """Load the tokenizer and config saved by `save_pretrained` (or by a model export)."""
        tokenizer_kwargs.setdefault("trust_remote_code", False)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **tokenizer_kwargs)
        return cls(tokenizer, MiniGeminiConfig.from_pretrained(str(folder)))
