"""Lay out MGM-Finetune / MGM-Instruct (stage 2) as the official MGM README does.

    data/MGM-Finetune/
    ├── mgm_instruction.json  (merged here, image paths relative to this folder)
    ├── llava/                LLaVA-Pretrain images (llava/LLaVA-Pretrain/images)
    ├── coco/ gqa/ ocr_vqa/ textvqa/ vg/          LLaVA-665K image sets (train2017, images, ...)
    ├── gpt4v-dataset/        LAION-GPT4V images
    ├── sam/ share_textvqa/ wikiart/ web-celebrity/ web-landmark/   ShareGPT4V-100K images
    ├── ALLaVA-4V/            ALLaVA instruction images
    └── docvqa/ chartqa/ dvqa/ ai2d/              document / chart / diagram sets

MGM's own mgm_instruction.json (YanweiLi/MGM-Instruction) already contains LLaVA-665K, ShareGPT4V,
LAION-GPT4V, ALLaVA, DocVQA/ChartQA/DVQA/AI2D and the generation data in LLaVA format, with image paths
relative to MGM-Finetune: pass it with --mgm-instruction-json and lay out the image folders. To build your
own mix instead, pass the per-source LLaVA JSONs (and --extra-json FILE:PREFIX for others, e.g. a
`minigemini prep convert` output). Do NOT add mgm_generation_pure_text.json to mgm_instruction.json: it is
already inside (MGM README).

Example:
    python data_prep/mgm_finetune.py --root data --coco-images ~/dl/coco --gqa-images ~/dl/gqa ... \\
        --mgm-instruction-json ~/dl/mgm_instruction.json
Then train stage 2 with the model's template, data data/MGM-Finetune/mgm_instruction.json, image folder
data/MGM-Finetune.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layout import Recipe, main_for  # noqa: E402

RECIPE = Recipe(
    name="MGM-Finetune",
    json_name="mgm_instruction.json",
    folders={
        "llava": "folder holding LLaVA-Pretrain/images (the 558K LLaVA images)",
        "coco": "COCO: holds train2017/",
        "gqa": "GQA: holds images/",
        "ocr_vqa": "OCR-VQA: holds images/ (all files saved as .jpg, as MGM says)",
        "textvqa": "TextVQA: holds train_images/",
        "vg": "Visual Genome: holds VG_100K/ and VG_100K_2/",
        "gpt4v-dataset": "LAION-GPT4V images",
        "sam": "ShareGPT4V: SAM images (sam/images)",
        "share_textvqa": "ShareGPT4V: share_textvqa/images",
        "wikiart": "ShareGPT4V: wikiart/images",
        "web-celebrity": "ShareGPT4V: web-celebrity/images",
        "web-landmark": "ShareGPT4V: web-landmark/images",
        "ALLaVA-4V": "ALLaVA-4V instruction images (allava_laion/, allava_vflan/)",
        "docvqa": "DocVQA images",
        "chartqa": "ChartQA images",
        "dvqa": "DVQA images",
        "ai2d": "AI2D images",
    },
    jsons={
        "mgm-instruction-json": ("", "MGM's merged mgm_instruction.json; paths already relative"),
        "llava-665k": ("", "llava_v1_5_mix665k.json (paths coco/..., gqa/..., ocr_vqa/..., textvqa/..., vg/...)"),
        "sharegpt4v-100k": ("", "sharegpt4v_instruct_gpt4-vision_cap100k.json (add --rewrite for its llava/ paths)"),
        "allava-laion-instruct": ("ALLaVA-4V/", "ALLaVA-Instruct-LAION-4V.json"),
        "allava-vflan-instruct": ("ALLaVA-4V/", "ALLaVA-Instruct-VFLAN-4V.json"),
        "generation-json": ("", "mgm_generation_pure_text.json (text-only; only when NOT using mgm_instruction.json)"),
    },
)

if __name__ == "__main__":
    sys.exit(main_for(RECIPE, __doc__))
