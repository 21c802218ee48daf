"""Lay out MGM-Pretrain (stage 1: LLaVA-558K captions + ALLaVA-4V captions) as the official MGM README does.

    data/MGM-Pretrain/
    ├── mgm_pretrain.json   (merged here, image paths relative to this folder)
    ├── images/             LLaVA-Pretrain images (558K)
    └── ALLaVA-4V/          ALLaVA caption images (allava_laion/, allava_vflan/)

Example (files you downloaded yourself; nothing is fetched):
    python data_prep/mgm_pretrain.py --root data \\
        --llava-pretrain-images ~/dl/LLaVA-Pretrain/images --allava-4v-images ~/dl/ALLaVA-4V \\
        --llava-558k ~/dl/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json \\
        --allava-laion-caption ~/dl/ALLaVA-4V/allava_laion/ALLaVA-Caption-LAION-4V.json \\
        --allava-vflan-caption ~/dl/ALLaVA-4V/allava_vflan/ALLaVA-Caption-VFLAN-4V.json
or, with MGM's own merged file:  --mgm-pretrain-json ~/dl/mgm_pretrain.json
Then train stage 1 with template `plain`, data data/MGM-Pretrain/mgm_pretrain.json, image folder data/MGM-Pretrain.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layout import Recipe, main_for  # noqa: E402

RECIPE = Recipe(
    name="MGM-Pretrain",
    json_name="mgm_pretrain.json",
    folders={
        "images": "LLaVA-Pretrain images, 558K (huggingface.co/datasets/liuhaotian/LLaVA-Pretrain, images.zip)",
        "ALLaVA-4V": "ALLaVA-4V folder holding allava_laion/ and allava_vflan/ images (FreedomIntelligence/ALLaVA)",
    },
    jsons={
        "mgm-pretrain-json": ("", "MGM's merged mgm_pretrain.json (YanweiLi/MGM-Pretrain); paths already relative"),
        "llava-558k": ("images/", "blip_laion_cc_sbu_558k.json (paths like 00453/004539375.jpg)"),
        "allava-laion-caption": ("ALLaVA-4V/", "ALLaVA-Caption-LAION-4V.json (paths allava_laion/images/...)"),
        "allava-vflan-caption": ("ALLaVA-4V/", "ALLaVA-Caption-VFLAN-4V.json (paths allava_vflan/images/...)"),
    },
    options={"images": "llava-pretrain-images"},
    notes="Use either --mgm-pretrain-json alone, or the per-source JSONs (not both: records would repeat).",
)

if __name__ == "__main__":
    sys.exit(main_for(RECIPE, __doc__))
