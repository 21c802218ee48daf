"""Any-to-any: the LLM writes an image description, a diffusers pipeline draws it.

Mini-Gemini's convention: the user turn ends with a generation trigger (` <GEN>`), and a model
trained on generation-instruction data answers with a text-to-image prompt wrapped in
`<h>...</h>`. The text inside the markers goes to a text-to-image pipeline (SDXL base by
default; any local folder or hub id that `diffusers.DiffusionPipeline` loads). Markers and
trigger are configurable. `diffusers` is an optional extra (`pip install minigemini[gen]`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

DEFAULT_DIFFUSION_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
DEFAULT_MARKERS = ("<h>", "</h>")
DEFAULT_TRIGGER = " <GEN>"
DEFAULT_NEGATIVE_PROMPT = ("lowres, blurry, jpeg artifacts, watermark, signature, text, cropped, worst quality, "
                           "low quality, deformed, bad anatomy, extra limbs, disfigured")


def add_generation_request(text: str, trigger: str = DEFAULT_TRIGGER) -> str:
    """The user's text with the generation trigger appended (once)."""
    return text if not trigger or text.rstrip().endswith(trigger.strip()) else text + trigger


def extract_image_prompts(text: str, markers: Sequence[str] = DEFAULT_MARKERS) -> list[str]:
    """Every non-empty text between an opening and a closing marker, in order (none -> [])."""
    open_m, close_m = markers
    if not open_m or not close_m:
        raise ValueError(f"image-prompt markers must be two non-empty strings, got {tuple(markers)!r}")
    pattern = re.compile(re.escape(open_m) + r"(.*?)" + re.escape(close_m), re.DOTALL)
    return [p.strip() for p in pattern.findall(text) if p.strip()]


def has_unclosed_marker(text: str, markers: Sequence[str] = DEFAULT_MARKERS) -> bool:
    """True when an opening marker is never closed (e.g. the answer hit max_new_tokens)."""
    open_m, close_m = markers
    tail = text.rsplit(close_m, 1)[-1]
    return open_m in tail


def load_diffusion_pipeline(name_or_path: str | Path = DEFAULT_DIFFUSION_MODEL, device: str | None = None,
                            dtype: str | None = None) -> Any:
    """A text-to-image `diffusers` pipeline (safetensors only) from a local folder or a hub id."""
    try:
        import diffusers
    except ImportError as exc:
        raise ImportError("image generation needs diffusers: pip install 'minigemini[gen]'") from exc
    import torch

    from .generate import resolve_device, resolve_dtype

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kwargs: dict[str, Any] = {_dtype_argument(): torch_dtype, "use_safetensors": True}
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        name = str(local)
    elif isinstance(name_or_path, Path) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"diffusion pipeline folder {name} does not exist; pass --diffusion-model with a "
                                f"folder written by `pipeline.save_pretrained` or a hub id (default "
                                f"{DEFAULT_DIFFUSION_MODEL})")
    if torch_dtype == torch.float16 and name == DEFAULT_DIFFUSION_MODEL:
        kwargs["variant"] = "fp16"
    try:
        pipe = diffusers.DiffusionPipeline.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise OSError(f"could not load the diffusion pipeline {name_or_path!r}: {exc}\n"
                      "Pass --diffusion-model with a local pipeline folder, or allow downloads from the hub "
                      "(unset HF_HUB_OFFLINE).") from exc
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe.to(dev)


def _dtype_argument() -> str:
    """`dtype` on recent diffusers (where `torch_dtype` is deprecated), `torch_dtype` before."""
    from diffusers.utils import deprecation_utils

    return "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"


@dataclass
class ImageGenerator:
    """Calls a text-to-image pipeline with fixed size/steps/seed settings."""

    pipeline: Any
    height: int | None = None
    width: int | None = None
    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    negative_prompt: str | None = DEFAULT_NEGATIVE_PROMPT
    seed: int | None = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_DIFFUSION_MODEL, device: str | None = None,
                        dtype: str | None = None, **settings: Any) -> "ImageGenerator":
        """Load the pipeline and keep `settings` (height, width, num_inference_steps, ...)."""
        return cls(load_diffusion_pipeline(name_or_path, device, dtype), **settings)

    def __call__(self, prompts: Sequence[str]) -> list[Any]:
        """One PIL image per prompt."""
        import torch

        images = []
        for i, prompt in enumerate(prompts):
            generator = None
            if self.seed is not None:
                generator = torch.Generator(device="cpu").manual_seed(self.seed + i)
            out = self.pipeline(prompt, negative_prompt=self.negative_prompt, height=self.height, width=self.width,
                                num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale,
                                generator=generator, **self.extra)
            images.append(out.images[0])
        return images


def save_answer_with_images(answer: str, image_prompts: Sequence[str], images: Sequence[Any], out_dir: str | Path,
                            stem: str = "answer") -> dict[str, Any]:
    """Write `<stem>_<k>.png` and `<stem>.json` (answer, prompts, image files) into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for k, image in enumerate(images):
        path = out / f"{stem}_{k}.png"
        image.save(path)
        files.append(str(path))
    record = {"answer": answer, "image_prompts": list(image_prompts), "images": files}
    (out / f"{stem}.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


def images_for_answer(answer: str, image_generator: ImageGenerator, out_dir: str | Path, stem: str = "answer",
                      markers: Sequence[str] = DEFAULT_MARKERS) -> dict[str, Any]:
    """Extract the image prompts of `answer`, draw them, and save everything beside the answer."""
    prompts = extract_image_prompts(answer, markers)
    images = image_generator(prompts) if prompts else []
    record = save_answer_with_images(answer, prompts, images, out_dir, stem)
    record["unclosed_marker"] = has_unclosed_marker(answer, markers)
    return record
