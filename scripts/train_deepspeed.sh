#!/usr/bin/env bash
# Single node, several GPUs, DeepSpeed launcher.
#   NUM_GPUS=8 scripts/train_deepspeed.sh configs/recipes/vicuna-7b-finetune.yaml training.output_dir=runs/7b-s2
# CPU ranks (no GPU): DS_ACCELERATOR=cpu NUM_GPUS=2 scripts/train_deepspeed.sh configs/tiny/pretrain.yaml deepspeed.config=zero2
# The DeepSpeed JSON comes from the config (deepspeed.config=zero2|zero2_offload|zero3|zero3_offload or a path).
set -euo pipefail
CONFIG=${1:?usage: $0 CONFIG.yaml [section.key=value ...]}
shift
exec deepspeed --num_gpus "${NUM_GPUS:-8}" --master_port "${MASTER_PORT:-29500}" \
    --module minigemini.train.run "$CONFIG" "$@"
