"""Lay out LLaVA-1.5's sets: `pretrain` (LLaVA-558K captions) or `finetune` (LLaVA-665K mix).

    data/LLaVA-Pretrain/ blip_laion_cc_sbu_558k.json, images/
    data/LLaVA-Finetune/ llava_v1_5_mix665k.json, coco/train2017, gqa/images, ocr_vqa/images,
                         textvqa/train_images, vg/VG_100K(_2)

Example:
    python data_prep/llava.py pretrain --root data --llava-pretrain-images ~/dl/LLaVA-Pretrain/images \\
        --llava-558k ~/dl/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json
    python data_prep/llava.py finetune --root data --coco-images ~/dl/coco --gqa-images ~/dl/gqa \\
        --ocr-vqa-images ~/dl/ocr_vqa --textvqa-images ~/dl/textvqa --vg-images ~/dl/vg \\
        --llava-665k ~/dl/llava_v1_5_mix665k.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from layout import Recipe, main_for  # noqa: E402

RECIPES = {
    "pretrain": Recipe(
        name="LLaVA-Pretrain", json_name="blip_laion_cc_sbu_558k.json",
        folders={"images": "LLaVA-Pretrain images (images.zip of liuhaotian/LLaVA-Pretrain)"},
        options={"images": "llava-pretrain-images"},
        jsons={"llava-558k": ("images/", "blip_laion_cc_sbu_558k.json")}),
    "finetune": Recipe(
        name="LLaVA-Finetune", json_name="llava_v1_5_mix665k.json",
        folders={"coco": "COCO: holds train2017/", "gqa": "GQA: holds images/", "ocr_vqa": "OCR-VQA: holds images/",
                 "textvqa": "TextVQA: holds train_images/", "vg": "Visual Genome: holds VG_100K/, VG_100K_2/"},
        jsons={"llava-665k": ("", "llava_v1_5_mix665k.json")}),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in RECIPES:
        print(__doc__)
        print("usage: python data_prep/llava.py {pretrain|finetune} [options]  (--help after the name for options)")
        return 2
    return main_for(RECIPES[argv[0]], __doc__, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
