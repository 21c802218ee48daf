"""`minigemini train CONFIG --print-config`: the run config as the run will use it.

`RunConfig.to_dict()` holds every field, including model fields that the run takes from elsewhere: with
`model.init_from` the LLM, towers, tokenizer and image settings come from that folder, and `model.tiny` points
the model at the base it writes to `model.tiny.dir`. Printing their defaults (vicuna-7b, CLIP-L) would show a
model the run never builds, so here they are replaced by the values the run uses, or left out and named in a
comment; so is a null `data.template` (see minigemini/train/template_choice.py). Reads JSON files only (no
torch): it runs before any model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..config import RunConfig

# model keys whose value a model.init_from folder's config.json holds under the same name
FOLDER_KEYS = ("image_size", "image_size_aux", "image_grid", "image_global", "image_aspect_ratio", "use_hr",
               "projector_type")
# model keys that name where the LLM, tokenizer and towers load from (init_from: the folder; tiny: its base)
SOURCE_KEYS = ("llm", "tokenizer", "vision_lr", "vision_hr", "vision_hr_arch", "select_layer")
TINY_MARKER = "tiny_base.json"  # = minigemini.train.tiny_base.TINY_MARKER (not imported: that loads torch)


def resolved_config_text(cfg: RunConfig, source: str) -> str:
    """YAML of `cfg` (loadable again) with the model section as the run resolves it, plus comments saying why."""
    data = cfg.to_dict()
    model: dict[str, Any] = data["model"]
    notes = [f"resolved config of {source}: includes merged, overrides applied, defaults filled in"]
    if model["init_from"]:
        notes += _from_folder(model, data["data"], Path(model["init_from"]))
    elif model["tiny"] is not None:
        notes += _from_tiny_base(model, Path(model["tiny"]["dir"]))
    else:
        model.pop("tiny")  # null: no tiny base
    if data["data"]["template"] is None and not model["init_from"]:
        notes.append("data.template: null = the LLM family's template, picked when the model is built "
                     "(as `minigemini convert` picks it; an LLM family it cannot tell stops the run: set data.template)")
    header = "".join(f"# {line}\n" for line in notes)
    return header + yaml.safe_dump(data, sort_keys=False)


def _from_folder(model: dict[str, Any], data: dict[str, Any], folder: Path) -> list[str]:
    """init_from: the folder's values for FOLDER_KEYS (and a null data.template); SOURCE_KEYS and tiny are not used."""
    for key in (*SOURCE_KEYS, "tiny"):
        model.pop(key)
    notes = [(f"model: LLM, tokenizer and towers load from model.init_from ({folder}); "
              f"model.{{{', '.join(SOURCE_KEYS)}}} and model.tiny are not used")]
    config_file = folder / "config.json"
    try:
        saved = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        return notes + [(f"model.{{{', '.join(FOLDER_KEYS)}}} and a null data.template: shown as this config has "
                         f"them; the run reads them from {config_file}, which cannot be read now ({exc})")]
    model.update({key: saved[key] for key in FOLDER_KEYS if key in saved})
    if data["template"] is None and "template" in saved:
        data["template"] = saved["template"]
        notes.append(f"data.template: null in the config = the folder's template ({config_file})")
    return notes + [f"model.{{{', '.join(FOLDER_KEYS)}}}: read from {config_file}"]


def _from_tiny_base(model: dict[str, Any], base: Path) -> list[str]:
    """model.tiny: the base's folders; image sizes from its marker file once written, else left out."""
    model.update(llm=str(base / "llm"), tokenizer=str(base / "llm"), vision_lr=str(base / "vision_lr"),
                 vision_hr=str(base / "vision_hr"), vision_hr_arch=None)
    notes = [f"model: model.tiny loads the random-init base in model.tiny.dir ({base}), written on first use"]
    try:
        info = json.loads((base / TINY_MARKER).read_text())
    except (OSError, ValueError):
        for key in ("image_size", "image_size_aux", "image_grid", "image_global"):
            model.pop(key)
        return notes + [("model.{image_size, image_size_aux, image_grid, image_global}: set when the base is "
                         "written (MiniGeminiConfig.tiny)")]
    model.update(image_size=info["image_size"], image_size_aux=info["image_size_aux"],
                 image_grid=2 if info["hd"] else 1, image_global=bool(info["hd"]))
    return notes + [f"model.{{image_size, image_size_aux, image_grid, image_global}}: from {base / TINY_MARKER}"]
